"""Training steps per second, cvtool's torch trainer against the plain baseline's own loop, at the same net and batch.

    python benchmarks/step_rate.py [--steps 30] [--markdown FILE]

The net and batch are the baseline's (../shared/baselines/plain_unet.py: U-Net width 16, depth 3, batch 8, 128x128
crops, Adam, class-weighted cross-entropy): its UNet and step are imported from the file, never changed. cvtool's
step is TorchTrainer's as `cvtool train` runs it (bf16 autocast where the CPU has native bf16, channels_last, the
soft Dice term on top of the weighted cross-entropy), and in float32 without Dice for the like-for-like figure. The
three take turns, 3 rounds, median of each round's steps/s.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import markdown_line  # noqa: E402

BASELINE = ROOT.parent / "shared" / "baselines" / "plain_unet.py"


def baseline_module():
    spec = importlib.util.spec_from_file_location("plain_unet", BASELINE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--markdown", metavar="FILE")
    a = ap.parse_args()
    import torch
    import torch.nn.functional as F

    from cvtool.model.spec import ModelSpec, init_params
    from cvtool.train.optim import OptimConfig
    from cvtool_backends.torch_backend.model import TorchTrainer

    pu = baseline_module()
    C, K, B, S = 1, 2, 8, 128
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, C, S, S)).astype(np.float32)
    y = rng.integers(0, K, (B, S, S))
    cw = np.array([1.2, 0.9], np.float32)

    net = pu.UNet(C, K).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xb = torch.from_numpy(x).contiguous(memory_format=torch.channels_last)
    yb, wt = torch.from_numpy(y), torch.from_numpy(cw)

    def baseline_step():  # the loop body of plain_unet.main(), batch already made
        loss = F.cross_entropy(net(xb), yb, weight=wt, ignore_index=pu.IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    spec = ModelSpec(in_channels=C, num_classes=K, width=16, depth=3)
    ours = TorchTrainer(spec, init_params(spec, 0), device="cpu", optim=OptimConfig(name="adam"), class_weights=cw,
                        dice=1.0)
    f32 = TorchTrainer(spec, init_params(spec, 0), device="cpu", optim=OptimConfig(name="adam"), class_weights=cw,
                       dice=0.0, amp=False)
    runs = {"plain_unet.py (float32)": baseline_step, "cvtool as trained": lambda: ours.step(x, y, 3e-3),
            "cvtool float32, no Dice": lambda: f32.step(x, y, 3e-3)}
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():  # warm-up
        for _ in range(3):
            fn()
    for _ in range(a.rounds):
        for name, fn in runs.items():
            t = time.perf_counter()
            for _ in range(a.steps):
                fn()
            rates[name].append(a.steps / (time.perf_counter() - t))
    base = statistics.median(rates["plain_unet.py (float32)"])
    params = {"baseline": sum(p.numel() for p in net.parameters()), "cvtool": spec.num_params()}
    lines = ["## Step rate at the same net and batch: cvtool's trainer vs the plain baseline's loop", "",
             f"U-Net width 16, depth 3 ({params['cvtool']:,} parameters in cvtool's spec, {params['baseline']:,} in the "
             f"baseline's), batch {B} of {S}x{S}, Adam; {a.steps} steps a round, {a.rounds} rounds taking turns, "
             f"torch {torch.__version__}, {torch.get_num_threads()} threads; native bf16: "
             f"{'yes' if getattr(ours, 'amp', False) else 'no'}.", "",
             "| loop | steps/s (median) | / baseline |", "|---|---:|---:|"]
    for name, r in rates.items():
        m = statistics.median(r)
        lines.append(f"| {name} | {m:.2f} | {m / base:.2f}x |")
    lines += ["", markdown_line(), ""]
    text = "\n".join(lines)
    print(text)
    if a.markdown:
        Path(a.markdown).write_text(text)


if __name__ == "__main__":
    main()
