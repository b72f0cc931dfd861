"""Timing done right, for `cvtool bench`: warm-up, repeat until a minimum time, robust statistics.

    t = measure(lambda: run(x), min_time=1.0, warmup=2)
    t.median, t.p90, t.spread        # seconds per call; spread = IQR / median

Calls are timed one by one with perf_counter (a callable that launches GPU work must return only when
it is done: the backends' runners hand back host arrays, so their calls are synchronised). Memory is
measured outside the timed calls: `traced_peak` (tracemalloc, which NumPy's array buffers report to)
and `RssSampler` (the process's resident set read from /proc every few ms by a thread). Also the float32
GEMM that every speed is compared with. Std lib + numpy only.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cvtool.errors import UsageError


def percentile(values, q: float) -> float:
    """q in [0, 100], linear interpolation between order statistics (numpy's default)."""
    if len(values) == 0:
        raise ValueError("percentile of no values")
    return float(np.percentile(np.asarray(values, np.float64), q))


@dataclass(frozen=True)
class Timing:
    """Seconds per timed call, in call order; `warmup` untimed calls came first."""

    times: tuple[float, ...]
    warmup: int

    @property
    def n(self) -> int:
        return len(self.times)

    @property
    def total(self) -> float:
        return float(sum(self.times))

    @property
    def median(self) -> float:
        return percentile(self.times, 50)

    @property
    def p90(self) -> float:
        return percentile(self.times, 90)

    @property
    def min(self) -> float:
        return float(min(self.times))

    @property
    def spread(self) -> float:
        """Interquartile range over the median: 0.04 means the middle half of the calls lie within 4%."""
        med = self.median
        return (percentile(self.times, 75) - percentile(self.times, 25)) / med if med > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "warmup": self.warmup, "total_s": self.total, "median_s": self.median,
                "p90_s": self.p90, "min_s": self.min, "spread": self.spread}


def measure(fn: Callable[[], Any], *, min_time: float = 1.0, warmup: int = 1, min_repeats: int = 3,
            max_repeats: int = 10_000, clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Call fn `warmup` times untimed, then time calls until they add up to min_time seconds and there
    are at least min_repeats of them (never more than max_repeats)."""
    if min_time < 0 or warmup < 0 or not 1 <= min_repeats <= max_repeats:
        raise UsageError(f"bad timing settings: min_time {min_time}, warmup {warmup}, "
                         f"repeats {min_repeats}..{max_repeats}")
    for _ in range(warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    while len(times) < max_repeats and (len(times) < min_repeats or spent < min_time):
        t0 = clock()
        fn()
        dt = clock() - t0
        times.append(dt)
        spent += dt
    return Timing(tuple(times), warmup)


# --- memory, measured around one untimed call ---------------------------------------------------

def traced_peak(fn: Callable[[], Any]) -> tuple[Any, int]:
    """(fn(), the peak bytes tracemalloc saw allocated during the call above what was allocated before).

    NumPy reports its array buffers to tracemalloc, so for NumPy code this is the arrays' peak.
    Memory that C libraries allocate on their own (BLAS workspaces, torch, ORT) is not seen."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return result, max(peak - base, 0)


def rss_bytes() -> int | None:
    """The resident set of this process now (Linux /proc), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def max_rss_bytes() -> int | None:
    """getrusage's high-water mark of this process (kilobytes on Linux, bytes on macOS); None on Windows."""
    try:
        import resource
    except ImportError:
        return None
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024


def release_free_memory() -> bool:
    """Hand the C heap's free pages back to the OS (glibc's malloc_trim), so that a resident-set baseline taken
    next is not padded with memory an earlier measurement freed. False where there is no glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return bool(ctypes.CDLL(name).malloc_trim(0)) if name else False
    except (OSError, AttributeError):
        return False


class RssSampler:
    """The highest resident set seen while running: a thread reads /proc every `interval` seconds.

        with RssSampler() as s: run(x)
        s.peak  # bytes, the highest sample (also taken at enter and exit); misses spikes shorter than interval

    Without /proc it falls back to getrusage's high-water mark, which only moves when the process reaches
    a new all-time high."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak = 0
        self.method = "rss" if rss_bytes() is not None else "maxrss"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        v = rss_bytes() if self.method == "rss" else max_rss_bytes()
        if v is not None and v > self.peak:
            self.peak = v

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "RssSampler":
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


# --- the machine's float32 GEMM rate --------------------------------------------------------------

def gemm_flops(n: int) -> int:
    """(n x n) @ (n x n): n**3 multiply-adds, each counted as 2 FLOPs (as cvtool.model.spec counts convolutions)."""
    return 2 * n**3


def numpy_gemm(n: int, seed: int = 0) -> Callable[[], object]:
    """One float32 (n x n) @ (n x n) through NumPy's BLAS, into a preallocated output."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    return lambda: np.matmul(a, b, out=out)


def cpu_peak_gflops(cores: int) -> dict:
    """An ESTIMATE of the float32 peak: cores x vector lanes x FMA units x 2 FLOP x clock, from /proc/cpuinfo
    (lanes: 16 with AVX-512, 8 with AVX2; 2 FMA units, as on current x86 server cores; the clock is the one the
    kernel reports now, not a boost clock). {"gflops": None, "how": why} where the CPU says too little."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return {"gflops": None, "how": "no /proc/cpuinfo"}
    flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
    mhz = next((float(ln.split(":", 1)[1]) for ln in info.splitlines() if ln.startswith("cpu MHz")), None)
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else None
    if lanes is None or "fma" not in flags or not mhz:
        return {"gflops": None, "how": "the CPU reports no AVX2/AVX-512 FMA or no clock"}
    g = cores * lanes * 2 * 2 * mhz / 1e3
    return {"gflops": g, "how": f"estimate: {cores} cores x {lanes} float32 lanes x 2 FMA units x 2 FLOP x "
                                f"{mhz / 1e3:.2f} GHz (the clock the kernel reports now)"}


__all__ = ["Timing", "measure", "cpu_peak_gflops", "percentile", "traced_peak", "rss_bytes", "max_rss_bytes", "release_free_memory",
           "RssSampler",
           "gemm_flops", "numpy_gemm"]
