"""Depthwise convolution on the NumPy reference: depthwise.py's shifted multiply-adds against the grouped GEMM path
(C one-row products) it replaced, and torch's grouped F.conv2d, side by side in one run, on lite0's depthwise shapes.

    python benchmarks/depthwise.py [--batch 8] [--crop 128] [--repeats 5] [--markdown FILE]

Each layer of EfficientNet-Lite0 (distinct shapes at a --crop x --crop input): forward and backward (dx, dw), the
median of --repeats runs after one warm-up, the three taking turns run by run (so background load on a shared
machine hits all alike). Prints a markdown table of milliseconds and ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from machine import markdown_line  # noqa: E402

from cvtool.glibc_malloc import keep_freed_memory  # noqa: E402
from cvtool.model import lite0  # noqa: E402
from cvtool_backends.numpy_fast import conv  # noqa: E402
from cvtool_backends.numpy_fast.parallel import held  # noqa: E402


def layers(crop: int) -> list[tuple[int, int, int, int]]:
    """(C, H, k, s) of every distinct depthwise layer at a crop x crop input."""
    seen, H = [], crop // 2  # after the stem
    for b in lite0.blocks():
        C = b.cin * b.expand
        if (C, H, b.kernel, b.stride) not in seen:
            seen.append((C, H, b.kernel, b.stride))
        H //= b.stride
    return seen


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--crop", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--markdown", type=Path)
    a = ap.parse_args()
    keep_freed_memory()
    rng = np.random.default_rng(0)
    grouped = lambda g, wshape: False  # noqa: E731  (the GEMM path: conv.py without its depthwise branch)
    depthwise = conv.is_depthwise
    rows = ["| layer (C, H, k, s) | depthwise fwd ms | GEMM fwd ms | torch fwd ms | depthwise bwd ms | GEMM bwd ms "
            "| torch bwd ms | GEMM / depthwise fwd+bwd |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    total = {"dw": 0.0, "gemm": 0.0, "torch": 0.0}
    for C, H, k, s in layers(a.crop):
        x = rng.standard_normal((a.batch, C, H, H)).astype(np.float32)
        w = rng.standard_normal((C, 1, k, k)).astype(np.float32)
        pads = lite0.same_pads(k, s)
        times: dict[str, list[tuple[float, float]]] = {"dw": [], "gemm": [], "torch": []}
        for rep in range(a.repeats + 1):
            for name in times:
                if name == "torch":
                    xt, wt = torch.from_numpy(x).requires_grad_(), torch.from_numpy(w).requires_grad_()
                    t0 = time.perf_counter()
                    y = F.conv2d(F.pad(xt, (pads[2], pads[3], pads[0], pads[1])), wt, None, s, 0, 1, C)
                    t1 = time.perf_counter()
                    y.backward(torch.ones_like(y))
                    t2 = time.perf_counter()
                else:
                    conv.is_depthwise = depthwise if name == "dw" else grouped
                    with held():
                        t0 = time.perf_counter()
                        y, cache = conv.conv2d_forward(x, w, None, stride=s, padding=pads, groups=C)
                        t1 = time.perf_counter()
                        conv.conv2d_backward(np.ones_like(y), cache)
                        t2 = time.perf_counter()
                if rep:  # the first round warms up
                    times[name].append((t1 - t0, t2 - t1))
        conv.is_depthwise = depthwise
        med = {n: (statistics.median(f for f, _ in v) * 1e3, statistics.median(b for _, b in v) * 1e3)
               for n, v in times.items()}
        for n in total:
            total[n] += sum(med[n])
        rows.append(f"| {C}, {H}, {k}, {s} | {med['dw'][0]:.1f} | {med['gemm'][0]:.1f} | {med['torch'][0]:.1f} | "
                    f"{med['dw'][1]:.1f} | {med['gemm'][1]:.1f} | {med['torch'][1]:.1f} | "
                    f"{sum(med['gemm']) / sum(med['dw']):.2f}x |")
    rows.append(f"| all of them, fwd+bwd | {total['dw']:.0f} | {total['gemm']:.0f} | {total['torch']:.0f} | | | | "
                f"{total['gemm'] / total['dw']:.2f}x (torch / depthwise {total['torch'] / total['dw']:.2f}x) |")
    text = "\n".join([f"Batch {a.batch}, {a.crop} x {a.crop} input, float32; median of {a.repeats} runs after one "
                      "warm-up, the three taking turns. " + markdown_line(), "", *rows])
    print(text)
    if a.markdown:
        a.markdown.write_text(text + "\n")


if __name__ == "__main__":
    main()
