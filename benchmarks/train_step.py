"""One training step of the default U-Net (batch 8, 256x256, Adam): NumPy reference vs PyTorch CPU, side by side.

    python benchmarks/train_step.py [--repeats 3] [--markdown FILE]
    python benchmarks/train_step.py --net lite0     # the plan's lite0 step: batch 4, 192x192, encoder 0.1x, BN frozen

Target (issue 3): the NumPy step at most 4x the PyTorch CPU step. torch is timed as it trains (bf16 autocast
where the CPU has native bf16) and in float32.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import markdown_line  # noqa: E402
from cvtool.model.spec import ModelSpec, init_params  # noqa: E402
from cvtool.train.config import TrainConfig  # noqa: E402
from cvtool.train.optim import OptimConfig  # noqa: E402
from cvtool_backends.numpy_fast.model import NumpyTrainer  # noqa: E402
from cvtool_backends.torch_backend.model import TorchTrainer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--markdown", metavar="FILE")
    ap.add_argument("--net", choices=["unet", "lite0"], default="unet")
    a = ap.parse_args()
    machine = markdown_line()
    lite0 = a.net == "lite0"
    spec = ModelSpec(depth=5, encoder="lite0") if lite0 else ModelSpec()
    params = init_params(spec)  # random weights: a step costs the same
    N, S = (4, 192) if lite0 else (8, 256)  # the plan's lite0 step on the shared photo sets; the default U-Net's
    opt = OptimConfig(encoder_lr=0.1, frozen_bn=True) if lite0 else OptimConfig()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, 3, S, S)).astype(np.float32)
    y = rng.integers(0, 4, (N, S, S))
    w, dice = np.ones(4, np.float32), TrainConfig().dice  # the loss `cvtool train` minimises: weighted CE + Dice
    makers = {"torch (as trained)": lambda: TorchTrainer(spec, params, device="cpu", optim=opt, class_weights=w,
                                                         dice=dice),
              "torch float32": lambda: TorchTrainer(spec, params, device="cpu", optim=opt, amp=False,
                                                    class_weights=w, dice=dice),
              "numpy": lambda: NumpyTrainer(spec, params, optim=opt, class_weights=w, dice=dice)}
    trainers = {k: m() for k, m in makers.items()}
    times: dict[str, list[float]] = {k: [] for k in trainers}
    for k, t in trainers.items():
        t.step(x, y, 1e-3)  # warm-up
    for _ in range(a.repeats):  # take turns, so background load hits all alike
        for k, t in trainers.items():
            t0 = time.perf_counter()
            t.step(x, y, 1e-3)
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = [(k, med[k], med["numpy"] / med[k]) for k in med if k != "numpy"]
    for k, m, r in rows:
        print(f"{k:20s} {m:6.2f} s/step   numpy / this = {r:.2f}x")
    print(f"numpy                {med['numpy']:6.2f} s/step")
    if a.markdown:
        what = ("lite0 U-Net (EfficientNet-Lite0 encoder at 0.1x the learning rate, its BatchNorm frozen), batch 4, "
                "192x192" if lite0 else "Default U-Net, batch 8, 256x256")
        lines = ["## NumPy training step vs PyTorch CPU" + (" (lite0)" if lite0 else ""), "",
                 f"{what}, Adam, class-weighted cross-entropy + soft Dice as `cvtool train` "
                 "minimises it, one `step` (forward, backward, update); median of "
                 f"{a.repeats} after a warm-up, taking turns. Target: NumPy at most 4x the PyTorch CPU step.", "",
                 "| trainer | s/step | NumPy / this |", "|---|---:|---:|"]
        lines += [f"| {k} | {m:.2f} | {r:.2f}x |" for k, m, r in rows]
        lines += [f"| numpy | {med['numpy']:.2f} | 1.00x |", "", machine, ""]
        Path(a.markdown).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
