"""Blocks of work on as many threads as BLAS would use, with BLAS on one thread per block.

NumPy's OpenBLAS splits every matrix product over its own threads. For many small products (one
per block of columns, see conv.py) that costs a thread handshake per call, and on a busy machine
it collapses: measured on 2 shared cores, conv2d forward took 0.6 s instead of 0.05 s. Instead,
map_blocks runs the blocks on a pool of as many Python threads as BLAS would have used (NumPy
releases the GIL in its loops and in BLAS) and sets BLAS to one thread meanwhile, restoring it
after. Where NumPy's BLAS cannot be told (not the OpenBLAS of NumPy's wheels), blocks run in turn.
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")
_PREFIXES = ("scipy_openblas", "openblas")  # symbol prefixes of NumPy's bundled OpenBLAS, old and new
_lock = threading.RLock()  # one caller at a time changes the BLAS thread count


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
    """Threads NumPy's BLAS uses (and so map_blocks' workers); None when it cannot be told."""
    blas = _openblas()
    return int(blas[0]()) if blas else None


@lru_cache(maxsize=None)
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="numpy_ref")


def _after_fork_in_child() -> None:
    """A forked child has none of the parent's threads: start a fresh pool and lock there."""
    global _lock
    _lock = threading.RLock()
    _pool.cache_clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def map_blocks(fn: Callable[[int, int], T], blocks: Sequence[tuple[int, int]]) -> list[T]:
    """[fn(m0, m1) for each block], in order; blocks may run at the same time, so fn must only
    write where no other block of the same call writes."""
    blas = _openblas()
    if len(blocks) < 2 or blas is None:
        return [fn(m0, m1) for m0, m1 in blocks]
    get_threads, set_threads = blas
    with _lock:
        workers = int(get_threads())
        if workers < 2:
            return [fn(m0, m1) for m0, m1 in blocks]
        set_threads(1)
        try:
            return list(_pool(workers).map(lambda b: fn(*b), blocks))
        finally:
            set_threads(workers)
