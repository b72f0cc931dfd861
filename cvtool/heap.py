"""Two glibc heap policies (mallopt; nothing happens where the C library is not glibc), one per kind of work.

keep_freed_memory: for training steps (the NumPy backend).

A training step allocates and frees arrays of 30-70 MB again and again (batch 8 at 256x256). glibc
serves every allocation over 32 MB (and smaller ones, by its sliding threshold) with a fresh mmap and
unmaps it on free, so each new activation pays page faults and the kernel's zeroing of every page:
measured 6 s of system time in a 19 s step benchmark, and 2.19 s -> 2.00 s per NumPy step with the
settings below. They make malloc take large blocks from the heap and keep what is freed there (the
process holds on to its peak memory, as PyTorch's caching allocator does). Called by the NumPy
trainer and runner.

return_large_blocks: for torch inference over images of many sizes (`segment` of a folder). glibc's mmap
threshold slides up to the largest block freed (up to 32 MB), after which activations of 1-32 MB come from the
heap; shapes that change with every image fragment it, and the process only grows: 300 images of random sizes
(100-700 px) took torch's resident memory from 0.9 GB after 30 to 1.3 GB after 120, still growing
(benchmarks/segment_scale.py). A fixed 1 MB threshold maps every activation on its own and unmaps it when freed:
0.38 -> 0.44 GB over the same 120. The price is page faults on each new activation (a few % of a pass).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4  # glibc's mallopt parameters (malloc.h)


@lru_cache(maxsize=1)
def _mallopt():
    """glibc's mallopt(param, value) -> 1 on success, or None where the C library is another."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        ctypes.CDLL(None).gnu_get_libc_version  # glibc only: musl's mallopt does nothing useful
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return mallopt


@lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Once per process: no mmap for large blocks, no trimming of the heap. True when it took."""
    mallopt = _mallopt()
    if mallopt is None or return_large_blocks.cache_info().currsize:
        return False  # the other policy came first: keep it
    ok = mallopt(M_MMAP_MAX, 0) == 1
    ok &= mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1
    ok &= mallopt(M_TOP_PAD, 64 << 20) == 1
    return bool(ok)


@lru_cache(maxsize=1)
def return_large_blocks(threshold: int = 1 << 20) -> bool:
    """Once per process: blocks of `threshold` bytes and more are mapped on their own and unmapped when freed
    (a fixed threshold, which also stops glibc's sliding one). Not when keep_freed_memory came first."""
    mallopt = _mallopt()
    if mallopt is None or keep_freed_memory.cache_info().currsize:
        return False
    return mallopt(M_MMAP_THRESHOLD, threshold) == 1
