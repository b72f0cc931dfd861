"""Where the NumPy reference's inference time goes, and how far its GEMMs alone could take it.

    python benchmarks/numpy_profile.py [--size 256] [--repeats 20] [--markdown FILE]

The issue's target for NumPy is >= 55% of NumPy's own 2048x2048 float32 GEMM rate (at the same thread count) for
the default U-Net at 256x256, batch 1. This script explains the gap with three measurements, in one run:

1. the whole forward on all cores (as `cvtool bench` times it) and on one core (a subprocess with
   OPENBLAS_NUM_THREADS=1: BLAS and the block pool both serial);
2. the one-core forward split by what the time is spent in: the convolutions' GEMMs with their shifted adds
   (conv._product), the gathers that feed them (conv._rows_unpadded), the crops out of the GEMM buffers with bias
   and ReLU (conv._store), and the rest (pooling, transposed convs, concat, the 1x1 head, Python);
3. NumPy's own GEMM rate on one core and on all, the 2048^2 product `bench` uses as NumPy's 100%.

From these: the share of the one-core time that is GEMM work, and the rate the network would reach if everything
but the GEMMs took no time and two cores scaled perfectly: an upper bound for this im2col-style design.
Not a test (timings): results go to docs/benchmarks.md with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PARTS = ("_product", "_rows_unpadded", "_store")  # conv.py's functions timed in the one-core split
LABELS = {"_product": "GEMMs + their shifted adds", "_rows_unpadded": "gathers (the KW shifted copies)",
          "_store": "crops out of the GEMM buffers (+ bias, ReLU)", "rest": "the rest (pool, up-convs, concat, head, Python)"}


def _gemm_rate(n: int = 2048, repeats: int = 5) -> float:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    best = min(_timed(lambda: a @ a) for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def measure(size: int, repeats: int, split: bool) -> dict:
    """This process's numbers: forward median/min (ms), GEMM rate, and with split the time per part."""
    from cvtool.model.spec import ModelSpec, init_params, total_flops
    from cvtool_backends.numpy_fast import conv
    from cvtool_backends.numpy_fast.model import NumpyRunner

    spec = ModelSpec()
    run = NumpyRunner(spec, init_params(spec))
    x = np.random.default_rng(0).standard_normal((1, spec.in_channels, size, size), dtype=np.float32)
    for _ in range(3):
        run(x)
    times = [_timed(lambda: run(x)) for _ in range(repeats)]
    out = {"median_ms": 1e3 * float(np.median(times)), "min_ms": 1e3 * min(times),
           "gflop": total_flops(spec, (size, size)) / 1e9, "gemm_gflops": _gemm_rate()}
    if split:  # wrap the parts (module globals, looked up at call time by the block closures)
        spent = dict.fromkeys(PARTS, 0.0)
        orig = {p: getattr(conv, p) for p in PARTS}

        def wrap(name):
            f = orig[name]

            def timed(*a, **k):
                t = time.perf_counter()
                r = f(*a, **k)
                spent[name] += time.perf_counter() - t
                return r
            return timed

        for p in PARTS:
            setattr(conv, p, wrap(p))
        t0 = time.perf_counter()
        for _ in range(repeats):
            run(x)
        total = (time.perf_counter() - t0) / repeats
        for p in PARTS:
            setattr(conv, p, orig[p])
        # _rows_unpadded runs inside _product: take it out, so that the parts add up
        parts = {p: spent[p] / repeats for p in PARTS}
        parts["_product"] -= parts["_rows_unpadded"]
        parts["rest"] = total - sum(parts.values())
        out.update(split_total_ms=1e3 * total, parts_ms={k: 1e3 * v for k, v in parts.items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--markdown", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:  # the one-core measurement, in its own process
        print(json.dumps(measure(a.size, a.repeats, split=True)))
        return
    from benchmarks import machine

    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    one = json.loads(subprocess.run([sys.executable, __file__, "--child", "--size", str(a.size), "--repeats",
                                     str(a.repeats)], env=env, capture_output=True, text=True, check=True).stdout)
    allc = measure(a.size, a.repeats, split=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gf = allc["gflop"]
    net_rate = gf / (allc["median_ms"] / 1e3)
    gemm_share = one["parts_ms"]["_product"] / one["split_total_ms"]
    # the bound: only the GEMM part's one-core time, spread perfectly over the cores
    bound_ms = one["parts_ms"]["_product"] / cores
    lines = [f"{machine.markdown_line()} OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}.", "",
             f"Default U-Net, 1x3x{a.size}x{a.size}, {gf:.2f} GFLOP a forward; medians of {a.repeats} calls.", "",
             "| measurement | value |", "|---|---|",
             f"| NumPy 2048^2 float32 GEMM, 1 core / {cores} cores | {one['gemm_gflops']:.0f} / {allc['gemm_gflops']:.0f} GFLOP/s |",
             f"| forward, 1 core: median (min) | {one['median_ms']:.1f} ({one['min_ms']:.1f}) ms |",
             f"| forward, {cores} cores: median (min) | {allc['median_ms']:.1f} ({allc['min_ms']:.1f}) ms |",
             f"| scaling 1 -> {cores} cores | {one['median_ms'] / allc['median_ms']:.2f}x |",
             f"| network rate, {cores} cores | {net_rate:.0f} GFLOP/s = {net_rate / allc['gemm_gflops']:.0%} of own GEMM |"]
    for k in (*PARTS, "rest"):
        ms = one["parts_ms"][k]
        lines.append(f"| 1 core: {LABELS[k]} | {ms:.1f} ms ({ms / one['split_total_ms']:.0%}) |")
    bound_rate = gf / (bound_ms / 1e3)
    lines += [f"| bound: GEMM part only, perfect {cores}-core scaling | {bound_ms:.1f} ms = {bound_rate:.0f} GFLOP/s = "
              f"{bound_rate / allc['gemm_gflops']:.0%} of own GEMM |", "",
              f"The GEMMs (with their adds) are {gemm_share:.0%} of the one-core time; the 55% target needs "
              f"{gf / (0.55 * allc['gemm_gflops']) * 1e3:.1f} ms on {cores} cores."]
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        a.markdown.write_text("## Where the NumPy reference's inference time goes\n\n" + text + "\n")


if __name__ == "__main__":
    main()
