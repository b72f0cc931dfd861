"""Blocks of work on as many threads as BLAS would use, with BLAS on one thread meanwhile.

NumPy's OpenBLAS splits every matrix product over its own threads. For many small products (one
per block of columns, see conv.py) that costs a thread handshake per call, and on a busy machine
it collapses (docs/benchmarks.md, "Measurements behind the code"). Instead,
map_blocks runs the blocks on a pool of as many Python threads as BLAS would have used (NumPy
releases the GIL in its loops and in BLAS) and sets BLAS to one thread meanwhile.

OpenBLAS's own threads spin for a while (about 2^28 cycles) after each threaded product before
they sleep, so switching BLAS back to its threads between layers leaves them burning the cores
our pool needs (docs/benchmarks.md, "Measurements behind the code"). A whole network pass therefore runs in
`held()`: BLAS stays on one thread throughout and every parallel part goes through this pool.
Where NumPy's BLAS cannot be told (not the OpenBLAS of NumPy's wheels), blocks run in turn.
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

T = TypeVar("T")
_PREFIXES = ("scipy_openblas", "openblas")  # symbol prefixes of NumPy's bundled OpenBLAS, old and new
_lock = threading.RLock()  # one caller at a time changes the BLAS thread count
_held = 0  # depth of held() regions (under _lock)
_held_workers = 1  # BLAS's thread count when the outermost held() began


@lru_cache(maxsize=1)
def _openblas():
    """(get_num_threads, set_num_threads) of the OpenBLAS NumPy loaded, or None."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("*openblas*")):
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        for prefix in _PREFIXES:
            for suffix in ("64_", ""):
                get = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    set_.argtypes = [ctypes.c_int]
                    return get, set_
    return None


def blas_threads() -> int | None:
    """Threads NumPy's BLAS uses outside held() (and so map_blocks' workers); None when it cannot be told."""
    blas = _openblas()
    if blas is None:
        return None
    with _lock:
        return _held_workers if _held else int(blas[0]())


@lru_cache(maxsize=None)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="numpy_fast")


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: start a fresh pool and lock there."""
    global _lock, _held
    _lock = threading.RLock()
    _held = 0
    _pool.cache_clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def held() -> Iterator[None]:
    """BLAS on one thread until the outermost held() ends; map_blocks uses BLAS's former count.
    Re-entrant; other threads' map_blocks wait meanwhile (one caller changes the count at a time)."""
    global _held, _held_workers
    blas = _openblas()
    if blas is None:
        yield
        return
    with _lock:
        if _held == 0:
            _held_workers = int(blas[0]())
            blas[1](1)
        _held += 1
        try:
            yield
        finally:
            _held -= 1
            if _held == 0:
                blas[1](_held_workers)


def workers() -> int:
    """How many blocks map_blocks runs at once (1 when BLAS cannot be told)."""
    return blas_threads() or 1


def map_blocks(fn: Callable[[int, int], T], blocks: Sequence[tuple[int, int]]) -> list[T]:
    """[fn(m0, m1) for each block], in order; blocks may run at the same time, so fn must only
    write where no other block of the same call writes."""
    if len(blocks) < 2 or _openblas() is None:
        return [fn(m0, m1) for m0, m1 in blocks]
    with held():
        if _held_workers < 2:
            return [fn(m0, m1) for m0, m1 in blocks]
        return list(_pool(_held_workers).map(lambda b: fn(*b), blocks))


def map_runs(fn: Callable[[int, int], T], blocks: Sequence[tuple[int, int]], *, defer_last: bool = False) -> list[T]:
    """[fn(m0, m1) for each block], in order, with the blocks cut into one contiguous run per
    worker, each run done in turn by its worker: every worker gets an equal share in one handoff,
    and goes through its blocks while each is in its own cache (map_blocks' many small tasks cost
    more: docs/benchmarks.md).

    defer_last: fn(m0, m1) also writes a little past m1 (into the next block): the last block of
    each run but the final one is left out of the parallel phase and done afterwards, in turn."""
    n = workers()
    if len(blocks) < 2 or n < 2:
        return [fn(m0, m1) for m0, m1 in blocks]
    runs = split(len(blocks), n)
    later = {i1 - 1 for _, i1 in runs[:-1]} if defer_last else set()
    results: list = [None] * len(blocks)

    def run(i0: int, i1: int) -> None:
        for i in range(i0, i1):
            if i not in later:
                results[i] = fn(*blocks[i])

    map_blocks(run, runs)
    for i in sorted(later):
        results[i] = fn(*blocks[i])
    return results


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """0..n in `parts` contiguous runs (at most n, at least one), sizes differing by at most one."""
    parts = max(1, min(parts, n))
    cuts = [n * k // parts for k in range(parts + 1)]
    return list(zip(cuts[:-1], cuts[1:]))


def map_channels(fn: Callable[[int, int], T], C: int, channel_bytes: int, block_bytes: int = 1 << 20) -> list[T]:
    """fn(c0, c1) over runs of channels of about block_bytes (at least one channel), in parallel:
    for per-channel work (layout copies, batch norm) where fn writes channels c0:c1 only."""
    step = max(1, block_bytes // max(1, channel_bytes))
    return map_blocks(fn, [(c0, min(c0 + step, C)) for c0 in range(0, C, step)])
