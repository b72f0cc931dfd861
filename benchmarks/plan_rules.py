"""The plan's rules measured at equal time, without the wall clock deciding the result: fixed step counts.

    python benchmarks/plan_rules.py --data DIR --variants "b2:batch_size=2;b4:batch_size=4" --steps 300 [--json F]

Each variant is the plan `cvtool train --data DIR` would make (cvtool.train.plan.propose) with the given values
set, as the flags would set them. First the step time of every variant is measured side by side (rounds taking
turns, median of each), then the first variant trains --steps steps and every other one the steps that take the
same time at its measured step time (a batch twice as costly gets half the steps), each on the same seed, the
learning rate following the plan's schedule over its own steps. Validation: the plan's whole-image validation
(cvtool.train.validate.evaluate_images, test-time augmentation included) once at the end. The step counts, not a
clock, end each run, so a busy shared machine changes how long this takes, not the mIoU it reports; only the
step-time ratios depend on the moment, and they are measured taking turns.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent.parent))  # appended: a PYTHONPATH's cvtool wins


def parse_variants(text: str) -> list[tuple[str, dict]]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, kv = part.partition(":")
        vals = {}
        for item in filter(None, kv.split(",")):
            k, _, v = item.partition("=")
            vals[k.strip()] = float(v) if k.strip() in ("scale", "lr") else int(v)
        out.append((name.strip(), vals))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--variants", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    import cvtool_backends as registry
    from cvtool.data import check_dataset, open_datasets
    from cvtool.data.augment import PRESETS, Augment, sample_batch
    from cvtool.data.fingerprint import dataset_fingerprint
    from cvtool.data.memory import load_arrays, rescale
    from cvtool.model.spec import ModelSpec, init_params
    from cvtool.train.batches import batch_indices, class_weights
    from cvtool.train.optim import OptimConfig
    from cvtool.train.plan import propose
    from cvtool.train.schedule import lr_at
    from cvtool.train.validate import evaluate_images

    train_ds, val_ds, _ = open_datasets(a.data, seed=a.seed)
    check_dataset(train_ds)
    tr_a, va_a = load_arrays(train_ds), load_arrays(val_ds)
    fp = dataset_fingerprint(train_ds, val_ds, [], None, tr_a, va_a)
    K = len(train_ds.classes)
    be = registry.get("torch", "cpu")
    weights = class_weights(np.asarray(fp.class_share) * 1e6, 0.25)
    runs = []
    for name, over in parse_variants(a.variants):
        p = propose(fp, device="cpu", budget=300, overrides=over)
        spec = ModelSpec(in_channels=train_ds.in_channels, num_classes=K, width=p.width, depth=p.depth)
        tr_s = rescale(tr_a, p.scale)
        mean, std = np.asarray(p.mean, np.float32), np.asarray(p.std, np.float32)
        aug = PRESETS[p.augment]
        if p.rot90:
            aug = Augment(**{**aug.to_dict(), "rot90": True, "vflip": True})

        def sample(k: int, p=p, tr_s=tr_s, aug=aug, mean=mean, std=std):
            rng = np.random.default_rng([a.seed, k, 1])
            idx = batch_indices(k, p.batch_size, len(tr_s), a.seed)
            x, y = sample_batch(tr_s.images, tr_s.masks, idx, p.crop, aug, rng, fill=mean,
                                focus=np.asarray(p.focus, np.int64), p_focus=p.p_focus)
            return ((x - mean[:, None, None]) / std[:, None, None]).astype(np.float32), y
        runs.append({"name": name, "over": over, "plan": p, "spec": spec, "sample": sample, "times": []})
    probe = {}
    for r in runs:  # throw-away trainers, warmed up, for the step-time turns
        tr = be.trainer(r["spec"], init_params(r["spec"], a.seed), optim=OptimConfig(), class_weights=weights,
                        seed=a.seed, dice=r["plan"].dice)
        x, y = r["sample"](0)
        tr.step(x, y, 1e-6)
        probe[r["name"]] = (tr, x, y)
    for _ in range(a.rounds):
        for r in runs:
            tr, x, y = probe[r["name"]]
            t = time.perf_counter()
            for _ in range(3):
                tr.step(x, y, 1e-6)
            r["times"].append((time.perf_counter() - t) / 3)
    probe.clear()
    ref = statistics.median(runs[0]["times"])
    for r in runs:
        p, spec = r["plan"], r["spec"]
        r["step_s"] = statistics.median(r["times"])
        n = max(1, round(a.steps * ref / r["step_s"]))
        tr = be.trainer(spec, init_params(spec, a.seed), optim=OptimConfig(), class_weights=weights, seed=a.seed,
                        dice=p.dice)
        t0 = time.perf_counter()
        for k in range(n):
            x, y = r["sample"](k)
            tr.step(x, y, lr_at((k + 1) / n, p.lr, schedule=p.schedule, warmup=p.warmup))
        train_s = time.perf_counter() - t0
        m = evaluate_images(tr.predict, va_a.images, va_a.masks, spec, p.mean, p.std, p.scale, K,
                            train_ds.ignore_index, p.tta)
        r.update(steps=n, train_s=round(train_s, 1), miou=m["mean_iou"], iou=m["iou"])
        print(f"{r['name']}: scale {p.scale:g} crop {p.crop} batch {p.batch_size} depth {p.depth}: step "
              f"{r['step_s'] * 1000:.0f} ms ({r['step_s'] / ref:.2f}x), {n} steps, mIoU {m['mean_iou']:.4f}, IoU "
              + ", ".join(f"{v:.3f}" if v is not None else "-" for v in m["iou"]), flush=True)
    doc = {"data": a.data, "steps_ref": a.steps, "seed": a.seed,
           "runs": [{k: (v.to_dict() if k == "plan" else v) for k, v in r.items() if k not in ("sample", "spec")}
                    for r in runs]}
    if a.json:
        a.json.write_text(json.dumps(doc, indent=1, default=str))


if __name__ == "__main__":
    main()
