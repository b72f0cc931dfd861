"""Reduced-precision inference against float32, on the shared datasets' validation images, side by side in one run.

    python benchmarks/precision.py --models membrane=RUN/best.safetensors,oxford_pets3=...,busi_ultrasound=...
        [--rounds 3] [--calibration-images 32] [--no-torch] [--out benchmarks/results/precision.json]

Per checkpoint (each trained by `cvtool train --data D`, so it remembers its data):
- the variants: ORT float32 (the checkpoint's export, what `cvtool segment --backend ort` runs), ORT fp16 and ORT int8
  (built as `cvtool export --precision fp16|int8` builds them, int8 calibrated on the training images the checkpoint
  remembers), torch float32 and torch bf16 (`cvtool segment --precision bf16`);
- masks: every validation image segmented along segment's path (cvtool.model.inference.segment_logits: the model's
  scale, tiles, test-time augmentation) by each variant; the share of pixels whose class equals the float32 run's
  (ORT variants against ORT float32, torch bf16 against torch float32), and each variant's mIoU;
- speed: the same pass over all validation images, --rounds times, the variants taking turns within each round;
  images/s from the median round, and the net's own time (inside the forward calls) apart from the whole path.
Targets (issue 20): int8 ORT >= 2x float32 ORT images/s on segment, masks >= 99% equal, mIoU within 0.005.
The load average at start and end is recorded: this machine is shared with other engineers' work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET_SPEED, TARGET_AGREE, TARGET_MIOU = 2.0, 0.99, 0.005


def log(msg: str) -> None:
    print(f"[precision {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Timed:
    """A runner that adds up the seconds spent inside it (the net alone, without segment's pre/postprocessing)."""

    def __init__(self, run):
        self.run, self.seconds = run, 0.0

    def __call__(self, x):
        t0 = time.perf_counter()
        y = self.run(x)
        self.seconds += time.perf_counter() - t0
        return y


def variants(model, calib_inputs, with_torch: bool = True, subpixel: bool = False) -> dict:
    import cvtool_backends as registry

    ort, torch = registry.get("ort", "cpu"), registry.get("torch", "cpu")
    out = {"ort fp32": ort.runner(model.spec, model.params)}
    for p in ("fp16", "int8"):
        out[f"ort {p}"] = ort.precision_runner(model.spec, model.params, p, calib_inputs if p == "int8" else None)
    if subpixel:  # the int8 alternative measured against: transposed convolutions as int8 sub-pixel convolutions
        from cvtool_backends.onnx_format.export import build_model
        from cvtool_backends.onnx_format.opset import newest_opset
        from cvtool_backends.ort_backend.quantize import quantize_int8
        from cvtool_backends.ort_backend.runner import OrtRunner

        q = quantize_int8(build_model(model.spec, model.params, {}, opset=newest_opset()), list(calib_inputs),
                          sub_pixel=True)
        out["ort int8 subpixel"] = OrtRunner(q.SerializeToString(), "cpu")
    if not with_torch:
        return out
    out["torch fp32"] = torch.runner(model.spec, model.params)
    try:
        out["torch bf16"] = torch.precision_runner(model.spec, model.params, "bf16")
    except Exception as e:  # no native bf16 here: the row says so
        log(f"torch bf16 skipped: {e}")
    return out


def segment_pass(run, images, model) -> tuple[list[np.ndarray], float, float]:
    """Every image along segment's path: (class maps, seconds of the whole pass, seconds inside the net)."""
    from cvtool.model.inference import segment_logits

    timed = Timed(run)
    t0 = time.perf_counter()
    masks = [segment_logits(timed, img, model.spec, model.meta.mean, model.meta.std, scale=model.meta.scale,
                            tta=model.meta.tta).argmax(0).astype(np.uint8) for img in images]
    return masks, time.perf_counter() - t0, timed.seconds


def miou(preds, truths, K: int) -> float:
    from cvtool.metrics import SegMetrics

    m = SegMetrics(K, 255)
    for p, t in zip(preds, truths):
        m.update(p, t)
    return m.summary()["mean_iou"]


def one_model(name: str, path: Path, rounds: int, n_calib: int, with_torch: bool = True,
              subpixel: bool = False) -> dict:
    from cvtool.cli.models import open_model
    from cvtool.model import calibrate as cal

    model = open_model(path)
    if model.data is None:
        raise SystemExit(f"{path} does not remember its training data")
    val = cal.remembered(model.data, "val", None)
    calib = cal.remembered(model.data, "train", n_calib)
    log(f"{name}: {len(val.images)} val images, calibrating int8 on {len(calib.images)} ...")
    runs = variants(model, cal.net_inputs(calib, model.spec, model.meta), with_torch, subpixel)
    times = {k: [] for k in runs}
    net = {k: [] for k in runs}
    masks = {}
    for r in range(rounds):
        for k, run in runs.items():  # taking turns: a busy spell on the machine hits every variant alike
            m, whole, inside = segment_pass(run, val.images, model)
            times[k].append(whole)
            net[k].append(inside)
            masks.setdefault(k, m)
        log(f"{name}: round {r + 1}/{rounds}: " + ", ".join(f"{k} {np.median(v):.2f} s" for k, v in times.items()))
    K = model.spec.num_classes
    rows = {}
    for k in runs:
        base = "ort fp32" if k.startswith("ort") else "torch fp32"
        same = sum(int((a == b).sum()) for a, b in zip(masks[k], masks[base]))
        total = sum(a.size for a in masks[k])
        ratio = [b / t for b, t in zip(times[base], times[k])]  # per round: the pair measured closest in time
        rows[k] = {"images_per_s": len(val.images) / float(np.median(times[k])),
                   "net_ms_per_image": 1e3 * float(np.median(net[k])) / len(val.images),
                   "speed_vs_fp32": float(np.median(ratio)),
                   "net_speed_vs_fp32": float(np.median([b / t for b, t in zip(net[base], net[k])])),
                   "agreement": same / total, "miou": miou(masks[k], val.masks, K), "rounds_s": times[k]}
    for k, r in rows.items():
        base = rows["ort fp32" if k.startswith("ort") else "torch fp32"]
        r["miou_change"] = r["miou"] - base["miou"]
    return {"dataset": name, "model": str(path), "val_images": len(val.images), "calibration_images": len(calib.images),
            "scale": model.meta.scale, "tta": model.meta.tta, "spec": model.spec.to_dict(), "variants": rows}


def markdown(results: list[dict]) -> str:
    lines = ["| dataset | variant | images/s (segment) | x fp32 (segment) | net ms/img | x fp32 (net) | masks = fp32 | "
             "mIoU | mIoU change |", "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for k, r in res["variants"].items():
            lines.append(f"| {res['dataset']} ({res['val_images']} val) | {k} | {r['images_per_s']:.2f} | "
                         f"{r['speed_vs_fp32']:.2f}x | {r['net_ms_per_image']:.1f} | {r['net_speed_vs_fp32']:.2f}x | "
                         f"{r['agreement']:.4%} | {r['miou']:.4f} | {r['miou_change']:+.4f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", required=True, help="name=checkpoint,... (each trained with cvtool train --data)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calibration-images", type=int, default=32)
    ap.add_argument("--no-torch", action="store_true", help="ORT variants only (torch's rows take the longest)")
    ap.add_argument("--subpixel", action="store_true", help="also int8 with the transposed "
                    "convolutions as int8 sub-pixel convolutions (quantize.subpixel), side by side")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "precision.json")
    a = ap.parse_args()
    load0 = os.getloadavg()[0]
    results = []
    for item in a.models.split(","):
        name, path = item.split("=", 1)
        results.append(one_model(name, Path(path), a.rounds, a.calibration_images, not a.no_torch, a.subpixel))
    doc = {"machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                       "load_1min": {"start": load0, "end": os.getloadavg()[0]},
                       "note": "a 2-core machine shared with other engineers' work while this ran"},
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rounds": a.rounds, "results": results,
           "targets": {"int8_speed": TARGET_SPEED, "agreement": TARGET_AGREE, "miou_change": TARGET_MIOU}}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(markdown(results))
    print(f"\nload average {load0:.2f} at start, {os.getloadavg()[0]:.2f} at end (the machine was shared); wrote {a.out}")


if __name__ == "__main__":
    main()
