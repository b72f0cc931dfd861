"""What a run leaves behind besides its checkpoints: its state, the loss trace, metrics.csv, train_loss.csv,
curves.png, and (a test hook under torchrun) a digest of each rank's weights."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cvtool.fsutil import write_csv
from cvtool.model.spec import trainable


@dataclass
class RunState:
    """Everything a resumed run continues from (saved in the checkpoint's train_state["run"])."""

    epoch: int = 0  # epochs completed (an epoch budget's unit)
    batch: int = 0  # steps since the last validation (their loss is in loss_sum)
    step: int = 0  # optimiser steps in total
    elapsed: float = 0.0  # seconds since the process started, everything counted (over resumes)
    best_miou: float = -1.0  # -1: no best checkpoint yet (a NaN mIoU still makes the first one)
    history: list = field(default_factory=list)  # a row per validation (metrics.csv)
    loss_sum: float = 0.0  # training loss summed over the steps since the last validation
    trace: list = field(default_factory=list)  # [step, seconds, mean loss] every few steps (the loss curve)

    @classmethod
    def from_dict(cls, d: dict | None) -> "RunState":
        d = dict(d or {})
        d["history"] = [dict(h) for h in d.get("history") or []]  # a resume's own copies, not its checkpoint's
        d["trace"] = [list(t) for t in d.get("trace") or []]
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


TRACE_POINTS = 200  # a loss trace keeps between this many and twice as many points, however long the run


def trace_add(trace: list, step: int, seconds: float, loss: float) -> None:
    """Append [step, seconds, loss]; past 2 x TRACE_POINTS, neighbours merge in pairs (the later step and time,
    the mean loss), so a long run's trace stays bounded and evenly spread."""
    trace.append([int(step), round(float(seconds), 2), float(loss)])
    if len(trace) > 2 * TRACE_POINTS:
        trace[:] = [[b[0], b[1], (a[2] + b[2]) / 2] for a, b in zip(trace[0::2], trace[1::2])] + \
            ([trace[-1]] if len(trace) % 2 else [])


def write_metrics(out_dir: Path, history: list[dict]) -> None:
    """metrics.csv: a row per validation."""
    keys = list(history[0])
    write_csv(out_dir / "metrics.csv", keys, ([h.get(k, "") for k in keys] for h in history))


def write_trace(out_dir: Path, trace: list) -> None:
    """train_loss.csv: step, seconds, loss (the mean over the steps since the row before)."""
    write_csv(out_dir / "train_loss.csv", ["step", "seconds", "loss"], trace)


def write_curves(out_dir: Path, history: list[dict], trace: list) -> None:
    """curves.png against the step: the training loss every few steps and the validation loss where it ran; the
    validation mIoU and accuracy; the IoU per class."""
    from cvtool.plot import line_chart

    at = [h["step"] for h in history]
    per_class = {k[4:]: [h.get(k) for h in history] for k in history[-1] if k.startswith("iou_")}
    val = {"val mIoU": [h["mean_iou"] for h in history], "pixel acc": [h["pixel_accuracy"] for h in history]}
    losses = {"train loss": ([t[0] for t in trace], [t[2] for t in trace]), "val loss": (at, [h.get("val_loss") for h in history])}
    titles = ["loss (log scale when it spans > 20x)", "validation", "validation IoU per class"]
    line_chart(out_dir / "curves.png", at, losses, val, per_class or None, title="cvtool train", xlabel="step",
               titles=titles, panel_xs=[[t[0] for t in trace] + at, at, at])


def write_digest(folder: Path, rank: int, world: int, params: dict[str, np.ndarray], batches: list[int]) -> Path:
    """rank<r>.json: sha256 of the final weights (trainable, and with BN running stats) and the global batch numbers
    the rank trained on. Lets a test check that DDP ranks agree and saw different data."""
    import hashlib
    import json

    def sha(names) -> str:
        h = hashlib.sha256()
        for k in sorted(names):
            h.update(k.encode())
            h.update(np.ascontiguousarray(params[k], np.float32).tobytes())
        return h.hexdigest()

    doc = {"rank": rank, "world": world, "weights": sha([k for k in params if trainable(k)]), "all": sha(params),
           "batches": batches}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"rank{rank}.json"
    path.write_text(json.dumps(doc))
    return path
