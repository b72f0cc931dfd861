"""The training targets: default `cvtool train` (synthetic shapes), the membrane training, torch step throughput.

    python benchmarks/train_targets.py [--only synth,membrane,throughput] [--membrane DIR] [--markdown FILE] [--json]

synth:      `cvtool train` with every default; target: done within 180 s, validation mIoU >= 0.90.
membrane:   `cvtool train --data DIR` plus MEMBRANE_FLAGS; target: done within 600 s, held-out pixel accuracy >= 0.90
            and mIoU >= 0.75 (labelling everything "interior" scores about 0.78 pixel accuracy).
throughput: TorchTrainer.step on the default net, batch 8, 256x256, CPU, as trained (bf16 autocast where the CPU
            has native bf16) and in float32; target >= 9 images/s.

Wall times are of whole fresh `cvtool train` processes (start-up, data, training, validation, checkpoints), so they
depend on what else the machine is doing: the load average at the start of each part is recorded next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.machine import markdown_line  # noqa: E402

MEMBRANE = ROOT.parent / "shared" / "datasets" / "membrane"
MEMBRANE_FLAGS = ["--img-size", "256", "--epochs", "60"]  # 24 training images: 3 steps of 8 crops an epoch
SYNTH_TARGET = {"seconds": 180.0, "mean_iou": 0.90}
MEMBRANE_TARGET = {"seconds": 600.0, "pixel_accuracy": 0.90, "mean_iou": 0.75}
THROUGHPUT_TARGET = 9.0  # images/s


def load() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def cvtool_cmd(args: list[str]) -> list[str]:
    script = Path(sys.executable).with_name("cvtool")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "cvtool", *args]


def run_train(args: list[str], out: Path) -> dict:
    """One `cvtool train --json` process: its summary, wall time and the load average at its start."""
    cmd = cvtool_cmd(["train", *args, "--out", str(out), "--json"])
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    l0, t0 = load(), time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"cvtool train failed ({r.returncode}): {r.stderr.strip()[-800:]}")
    s = json.loads(r.stdout)
    f = s["final"]
    cm = s.get("confusion") or []
    total = sum(map(sum, cm))
    majority = max(map(sum, cm)) / total if total else None  # pixel accuracy of always answering the commonest class
    return {"args": args, "wall_s": round(wall, 1), "train_s": s["seconds"], "load_at_start": l0, "steps": s["steps"],
            "epochs": s["epochs"], "mean_iou": f["mean_iou"], "pixel_accuracy": f["pixel_accuracy"],
            "best_mean_iou": s["best_mean_iou"], "iou": dict(zip(s["classes"], s["iou"])), "majority_accuracy": majority}


def throughput(size: int = 256, batch: int = 8, steps: int = 8, rounds: int = 3) -> dict:
    """Images/s of TorchTrainer.step on the default net (CPU): median and best over rounds of `steps` steps."""
    import numpy as np
    import torch

    from cvtool.model.spec import ModelSpec, init_params
    from cvtool.train.config import TrainConfig
    from cvtool.train.optim import OptimConfig
    from cvtool_backends.torch_backend.model import TorchTrainer, native_bf16, set_threads

    c = TrainConfig()
    spec = ModelSpec(in_channels=3, num_classes=4, width=c.width, depth=c.depth, activation=c.activation, norm=c.norm)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
    y = rng.integers(0, 4, (batch, size, size))
    out = {"size": size, "batch": batch, "threads": set_threads(), "params": spec.num_params(),
           "native_bf16": native_bf16(torch.device("cpu")), "load_at_start": load()}
    modes = {"as trained": None, "float32": False}
    trainers = {m: TorchTrainer(spec, init_params(spec, 0), device="cpu", optim=OptimConfig(name=c.optimizer),
                                class_weights=np.ones(4, np.float32), amp=amp) for m, amp in modes.items()}
    for tr in trainers.values():  # warm-up: oneDNN picks its kernels on the first steps
        for _ in range(2):
            tr.step(x, y, 1e-3)
    rates: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(rounds):  # alternate, so that a busy moment hurts both alike
        for m, tr in trainers.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                tr.step(x, y, 1e-3)
            rates[m].append(batch * steps / (time.perf_counter() - t0))
    out["images_per_s"] = {m: {"median": statistics.median(v), "best": max(v)} for m, v in rates.items()}
    return out


def ok(flag: bool) -> str:
    return "met" if flag else "NOT met"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="synth,membrane,throughput", help="comma-separated parts to run")
    ap.add_argument("--membrane", type=Path, default=MEMBRANE, help=f"membrane dataset folder [default {MEMBRANE}]")
    ap.add_argument("--markdown", metavar="FILE", help="write a markdown section with the results")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    a = ap.parse_args()
    parts = set(a.only.split(","))
    machine = markdown_line()
    res: dict = {}
    with tempfile.TemporaryDirectory(prefix="cvtool-train-targets-") as tmp:
        if "synth" in parts:
            r = res["synth"] = run_train([], Path(tmp) / "synth")
            r["ok"] = r["wall_s"] <= SYNTH_TARGET["seconds"] and r["mean_iou"] >= SYNTH_TARGET["mean_iou"]
        if "membrane" in parts:
            if not a.membrane.is_dir():
                raise SystemExit(f"{a.membrane}: no such folder (pass --membrane DIR)")
            r = res["membrane"] = run_train(["--data", str(a.membrane), *MEMBRANE_FLAGS], Path(tmp) / "membrane")
            r["ok"] = (r["wall_s"] <= MEMBRANE_TARGET["seconds"] and r["mean_iou"] >= MEMBRANE_TARGET["mean_iou"]
                       and r["pixel_accuracy"] >= MEMBRANE_TARGET["pixel_accuracy"])
    if "throughput" in parts:
        r = res["throughput"] = throughput()
        r["ok"] = r["images_per_s"]["as trained"]["median"] >= THROUGHPUT_TARGET

    if a.json:
        print(json.dumps(res, indent=2))
    else:
        for k in ("synth", "membrane"):
            if k in res:
                r = res[k]
                print(f"{k:9s} wall {r['wall_s']:6.1f} s (training {r['train_s']:.0f} s, {r['steps']} steps, load "
                      f"{r['load_at_start']:.1f} at start)  mIoU {r['mean_iou']:.4f}  pixel acc {r['pixel_accuracy']:.4f}"
                      f"  -> {ok(r['ok'])}")
        if "throughput" in res:
            t = res["throughput"]
            for m, v in t["images_per_s"].items():
                print(f"torch step {t['size']}x{t['size']} batch {t['batch']} {m:10s}: median {v['median']:.1f} img/s, "
                      f"best {v['best']:.1f}")
            print(f"throughput target >= {THROUGHPUT_TARGET} img/s: {ok(t['ok'])}")
    if a.markdown:
        Path(a.markdown).write_text(markdown(res, machine))


def markdown(res: dict, machine: str) -> str:
    lines = ["## Training targets", "",
             "Fresh `cvtool train --json` processes, timed from start to exit (start-up, data, training, validation "
             "after every epoch, checkpoints); quality is the last epoch's validation on held-out images at full size.",
             ""]
    rows = []
    if "synth" in res:
        r = res["synth"]
        rows.append(["`cvtool train` (synthetic, defaults)", r, f"<= {SYNTH_TARGET['seconds']:.0f} s, mIoU >= "
                     f"{SYNTH_TARGET['mean_iou']}"])
    if "membrane" in res:
        r = res["membrane"]
        rows.append([f"`cvtool train --data membrane {' '.join(MEMBRANE_FLAGS)}`", r,
                     f"<= {MEMBRANE_TARGET['seconds']:.0f} s, pixel acc >= {MEMBRANE_TARGET['pixel_accuracy']}, "
                     f"mIoU >= {MEMBRANE_TARGET['mean_iou']}"])
    if rows:
        lines += ["| run | wall (s) | load at start | steps | mIoU | pixel acc | target | |", "|---|---:|---:|---:|---:|---:|---|---|"]
        for name, r, target in rows:
            lines.append(f"| {name} | {r['wall_s']:.0f} | {r['load_at_start']:.2f} | {r['steps']} | {r['mean_iou']:.4f} | "
                         f"{r['pixel_accuracy']:.4f} | {target} | {ok(r['ok'])} |")
        if "membrane" in res and res["membrane"]["majority_accuracy"] is not None:
            lines += ["", f"Membrane: answering the commonest class everywhere would score pixel accuracy "
                          f"{res['membrane']['majority_accuracy']:.4f} on the same held-out images."]
        lines.append("")
    if "throughput" in res:
        t = res["throughput"]
        lines += [f"`TorchTrainer.step`, default net ({t['params']:,} parameters), batch {t['batch']}, "
                  f"{t['size']}x{t['size']}, CPU, {t['threads']} threads, load {t['load_at_start']:.2f} at start; "
                  f"native bf16 on this CPU: {'yes' if t['native_bf16'] else 'no'} (\"as trained\" then uses bf16 "
                  "autocast).", "", "| mode | median img/s | best img/s |", "|---|---:|---:|"]
        lines += [f"| {m} | {v['median']:.1f} | {v['best']:.1f} |" for m, v in t["images_per_s"].items()]
        lines += ["", f"Target >= {THROUGHPUT_TARGET} img/s (as trained, median): {ok(t['ok'])}.", ""]
    lines += [machine, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
