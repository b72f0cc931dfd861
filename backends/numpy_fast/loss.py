"""Softmax cross-entropy over classes (axis 1), as torch.nn.functional.cross_entropy, and soft Dice.

Per pixel: loss = -log softmax(logits)[label], weighted by weight[label]; the result is the
weighted mean over pixels whose label is not ignore_index: sum(w_y * loss) / sum(w_y).
(No valid pixel: nan, and a zero gradient, like torch.)
d loss / d logits = w_y / sum(w_y) * (softmax - onehot(label)) on valid pixels, 0 elsewhere.
"""

from __future__ import annotations

import numpy as np

from cvtool.errors import DataError, UsageError
from cvtool_backends.numpy_fast.arrays import as_float


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


def soft_dice(logits: np.ndarray, labels: np.ndarray, *, ignore_index: int = 255,
              smooth: float = 1.0) -> tuple[float, np.ndarray]:
    """logits (N, K, H, W), labels (N, H, W) -> (loss, dlogits): one minus the mean over classes of the soft
    Dice coefficient over the whole batch, on pixels whose label is not ignore_index:

        p = softmax(logits), g = onehot(labels), m = valid
        D_k = (2 I_k + s) / (P_k + G_k + s),  I_k = sum m p_k g_k,  P_k = sum m p_k,  G_k = sum m g_k
        loss = 1 - mean_k D_k
        dloss/dp_k = -(2 g_k (P_k + G_k + s) - (2 I_k + s)) m / (K (P_k + G_k + s)^2)
        dloss/dlogits = p * (dloss/dp - sum_k p_k dloss/dp_k)        (the softmax's Jacobian)

    It scores overlap per class whatever the class's size, so it pulls the same way as mean IoU does."""
    logits = as_float(logits)[0]
    labels = np.asarray(labels)
    N, K = logits.shape[:2]
    m = (labels != ignore_index)[:, None].astype(logits.dtype)  # (N, 1, H, W)
    y = np.where(labels != ignore_index, labels, 0)[:, None]
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    g = np.zeros_like(p)
    np.put_along_axis(g, y, 1.0, axis=1)
    g *= m
    pm = p * m
    axes = (0,) + tuple(range(2, logits.ndim))
    inter, P, G = (pm * g).sum(axis=axes), pm.sum(axis=axes), g.sum(axis=axes)  # (K,)
    den = P + G + smooth
    loss = 1 - np.mean((2 * inter + smooth) / den)
    shape = (1, K) + (1,) * (logits.ndim - 2)
    den, num = den.reshape(shape), (2 * inter + smooth).reshape(shape)
    dp = (num * m - 2 * g * den) / (K * den**2)  # g is 0 where m is
    dlogits = p * (dp - (p * dp).sum(axis=1, keepdims=True))
    return float(loss), dlogits.astype(logits.dtype, copy=False)


__all__ = ["softmax_cross_entropy", "soft_dice"]
