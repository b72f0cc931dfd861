"""After every step: a loss that is not finite, or too large to be a healthy run's, stops the run with one line."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from cvtool.errors import DataError, TrainingDiverged
from cvtool.model import checkpoint as ckpt_io

DIVERGED = 1e3  # a step's loss above this (plus the Dice weight, at most 1 x dice) has diverged: the cross-entropy is
# a weighted mean of -log p over pixels, so 1000 means the logits stand ~1000 apart; no healthy run gets near it


def check_loss(loss: float, y: np.ndarray, *, step: int, lr: float, peak_lr: float, dice: float, out_dir: Path,
               resumable: bool = True, ignore: int = 255) -> None:
    """After each step: a loss that is not finite or above DIVERGED + dice stops the run with one line naming the
    step, what was kept (best/last.safetensors from earlier validations, left as they are: the weights in memory are
    already broken) and a lower --lr. A batch with no labelled pixel has no loss at all: that one is the data's."""
    if math.isfinite(loss) and loss <= DIVERGED + dice:
        return
    kept = _kept(Path(out_dir))
    if not (np.asarray(y) != ignore).any():
        raise DataError(f"training stopped at step {step}: every mask pixel of the batch is {ignore} (ignore), so "
                        f"the loss is undefined; {kept}", hint="train on larger crops (--img-size), or check the masks")
    lower = f"{peak_lr / 10:.2g}"
    hint = f"lower --lr (this run's peak was {peak_lr:.3g}), e.g. --lr {lower}"
    if resumable and "last.safetensors (step" in kept:
        hint += f"; 'cvtool train --resume {out_dir} --lr {lower}' continues from the last checkpoint"
    raise TrainingDiverged(f"training diverged at step {step} (loss {loss:.3g} at learning rate {lr:.3g}); {kept}",
                           hint=hint)


def other_rank_failed(step: int, peak_lr: float) -> TrainingDiverged:
    """What the ranks whose own loss was fine say when another rank's failed its check (torchrun)."""
    return TrainingDiverged(f"training stopped at step {step}: the loss of another rank's batch failed its check "
                            f"(that rank's line names it)", hint=f"lower --lr (this run's peak was {peak_lr:.3g})")


def _kept(out_dir: Path) -> str:
    """What a run that stops now leaves: 'kept DIR/best.safetensors (mIoU ..) and DIR/last.safetensors (step ..)'."""
    parts = []
    for name in ("best", "last"):
        path = out_dir / f"{name}.safetensors"
        state = _train_state(path)
        if state is None:
            pass
        elif name == "best":
            miou = (state.get("metrics") or {}).get("mean_iou")
            parts.append(f"{path} (validation mIoU {miou:.3g})" if isinstance(miou, float) else str(path))
        else:
            parts.append(f"{path} (step {(state.get('run') or {}).get('step', '?')}, resumable)")
    return "kept " + " and ".join(parts) if parts else "it stopped before the first validation: no checkpoint was written"


def _train_state(path: Path) -> dict | None:
    try:
        return ckpt_io.read_meta(path).get("train_state", {})
    except Exception:  # noqa: BLE001 - absent or unreadable: not kept
        return None
