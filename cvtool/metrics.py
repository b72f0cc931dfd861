"""Segmentation metrics from one confusion matrix (rows: truth, columns: prediction).

Shared by train (validation), segment and bench. Pixels labelled `ignore_index` count nowhere.
"""

from __future__ import annotations

import numpy as np

IGNORE = 255


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int = IGNORE) -> np.ndarray:
    """(K, K) int64 counts; cm[t, p] = pixels of true class t predicted as p."""
    pred = np.asarray(pred).reshape(-1).astype(np.int64)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    if pred.shape != target.shape:
        raise ValueError(f"prediction has {pred.size} pixels, target {target.size}")
    keep = target != ignore_index
    t, p = target[keep], pred[keep]
    for what, v in (("target", t), ("prediction", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            bad = int(v.min()) if v.min() < 0 else int(v.max())
            raise ValueError(f"{what} holds class {bad}, outside 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def pixel_accuracy(cm: np.ndarray) -> float:
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU_k = TP / (TP + FP + FN); NaN for a class absent from both truth and prediction."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def dice_per_class(cm: np.ndarray) -> np.ndarray:
    """Dice_k = 2 TP / (2 TP + FP + FN) (= 2 IoU / (1 + IoU)); NaN for a class absent from truth and prediction."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), np.nan)


def nan_mean(per_class: np.ndarray) -> float:
    """The mean over the classes that occur (NaN entries left out); NaN when none does."""
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


def mean_iou(cm: np.ndarray) -> float:
    return nan_mean(iou_per_class(cm))


class SegMetrics:
    """Accumulates a confusion matrix over batches."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.cm = np.zeros((num_classes, num_classes), np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        self.cm += confusion_matrix(pred, target, self.num_classes, self.ignore_index)

    def summary(self) -> dict:
        iou = iou_per_class(self.cm)
        return {
            "pixel_accuracy": pixel_accuracy(self.cm),
            "mean_iou": mean_iou(self.cm),
            "iou": [None if np.isnan(v) else float(v) for v in iou],
        }
