"""Two glibc heap policies, one per kind of work (nothing happens where the C library is not glibc).

keep_freed_memory: for training steps (the NumPy backend).

A training step allocates and frees arrays of 30-70 MB again and again (batch 8 at 256x256). glibc
serves every allocation over 32 MB (and smaller ones, by its sliding threshold) with a fresh mmap and
unmaps it on free, so each new activation pays page faults and the kernel's zeroing of every page
(docs/benchmarks.md, "Measurements behind the code"). The settings below make malloc take large blocks
from the heap and keep what is freed there (the process holds on to its peak memory, as PyTorch's caching
allocator does). Called by the NumPy
trainer and runner.

trim: between the images of a folder (`segment`, validation). A new image size means new activation sizes; torch
allocates them from glibc's heap (its mmap threshold slides up to 32 MB after the first large block is freed), the
changing sizes fragment it, and the process only grows (benchmarks/segment_scale.py). Trimming once more than
256 MB lie free keeps it flat; cheaper than mapping every large block on its own (a fixed mmap threshold: flat too,
but page faults on every activation of every pass); the price is the first pass after a trim faulting its pages in
again. The figures: docs/benchmarks.md, "Measurements behind the code".
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX = -1, -2, -4  # glibc's mallopt parameters (malloc.h)


@lru_cache(maxsize=1)
def _libc():
    """The C library when it is glibc, else None (musl's mallopt does nothing useful, and it has no mallinfo2)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018  (glibc only)
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Once per process: no mmap for large blocks, no trimming of the heap. True when it took."""
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1
    ok &= libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    ok &= libc.mallopt(M_TOP_PAD, 64 << 20) == 1
    return bool(ok)


class _Mallinfo2(ctypes.Structure):  # glibc >= 2.33, malloc.h
    _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]


def free_heap_bytes() -> int | None:
    """Bytes the heap holds free (fordblks over every arena), or None where glibc cannot say."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        return None
    libc.mallinfo2.restype = _Mallinfo2
    return int(libc.mallinfo2().fordblks)


def trim(over: int = 256 << 20) -> bool:
    """Hand the heap's free pages back to the kernel (malloc_trim, which frees the middle of the heap too) once
    more than `over` bytes lie free: between images of a folder, so that shapes which change with every image
    cannot grow the process, while the next image of a like size still finds its pages. True when it trimmed."""
    libc = _libc()
    if libc is None:
        return False
    free = free_heap_bytes()
    if free is not None and free <= over:
        return False
    return bool(libc.malloc_trim(0))
