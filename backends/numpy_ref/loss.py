"""Softmax cross-entropy over classes (axis 1), as torch.nn.functional.cross_entropy.

Per pixel: loss = -log softmax(logits)[label], weighted by weight[label]; the result is the
weighted mean over pixels whose label is not ignore_index: sum(w_y * loss) / sum(w_y).
(No valid pixel: nan, and a zero gradient, like torch.)
d loss / d logits = w_y / sum(w_y) * (softmax - onehot(label)) on valid pixels, 0 elsewhere.
"""

from __future__ import annotations

import numpy as np

from backends.numpy_ref.arrays import as_float
from cvtool.errors import DataError, UsageError


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, *, weight: np.ndarray | None = None,
                          ignore_index: int = 255) -> tuple[float, np.ndarray]:
    """logits (N, K, H, W) (or (N, K)), labels (N, H, W) ints -> (loss, dlogits)."""
    logits, weight = as_float(logits, weight)
    labels = np.asarray(labels)
    K = logits.shape[1] if logits.ndim >= 2 else 0
    if logits.ndim < 2 or labels.shape != logits.shape[:1] + logits.shape[2:]:
        raise UsageError(f"cross-entropy needs logits (N, K, ...) and labels (N, ...), "
                         f"got {logits.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"labels must be integers, got {labels.dtype}")
    valid = labels != ignore_index
    y = np.where(valid, labels, 0)[:, None]  # (N, 1, ...): a safe class index everywhere
    if (y < 0).any() or (y >= K).any():
        bad = labels[valid & ((labels < 0) | (labels >= K))]
        raise DataError(f"label {bad.flat[0]} out of range for {K} classes",
                        hint=f"labels are 0..{K - 1}, or {ignore_index} (ignored)")
    shifted = logits - logits.max(axis=1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    wy = (weight[y] if weight is not None else np.ones(y.shape, logits.dtype)) * valid[:, None]  # (N, 1, ...)
    total = wy.sum()
    loss = -(wy * np.take_along_axis(logp, y, axis=1)).sum() / total if total > 0 else np.nan
    dlogits = np.exp(logp)
    np.put_along_axis(dlogits, y, np.take_along_axis(dlogits, y, axis=1) - 1, axis=1)
    dlogits *= wy / total if total > 0 else 0
    return float(loss), dlogits.astype(logits.dtype, copy=False)


__all__ = ["softmax_cross_entropy"]
