"""Learning-rate schedules: linear warm-up, then poly or cosine decay. Pure functions of progress."""

from __future__ import annotations

import math

SCHEDULES = ("poly", "cosine", "constant")


def lr_at(progress: float, base_lr: float, *, schedule: str = "poly", warmup: float = 0.05,
          power: float = 0.9, final: float = 0.01) -> float:
    """Learning rate at `progress` in [0, 1] of the run (the training loop passes steps_done / total_steps
    counting the step about to be taken, so the last step gets progress 1).

    warm-up: base_lr * progress / warmup for progress < warmup, at least base_lr * 1e-3 (so the first
    step gets base_lr / warmup_steps, never 0);
    poly:    base_lr * max((1 - t)**power, final);  cosine: final + (1 - final)/2 * (1 + cos(pi t)) times base_lr,
    with t the progress after warm-up, rescaled to [0, 1].
    """
    p = min(max(progress, 0.0), 1.0)
    if warmup > 0 and p < warmup:
        return base_lr * max(p / warmup, 1e-3)
    if schedule == "constant":
        return base_lr
    t = (p - warmup) / (1 - warmup) if warmup < 1 else 1.0
    if schedule == "poly":
        return base_lr * max((1 - t) ** power, final)
    if schedule == "cosine":
        return base_lr * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t)))
    raise ValueError(f"unknown schedule {schedule!r}")
