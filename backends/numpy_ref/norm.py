"""Batch normalisation over (N, H, W) per channel, forward and backward, as torch.nn.BatchNorm2d.

Training: normalise with the batch mean and biased variance; update the running estimates in
place with momentum m: running = (1 - m) * running + m * batch, using the UNBIASED variance
(M / (M - 1) times the biased one, M = N*H*W). Evaluation: normalise with the running estimates.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from backends.numpy_ref.arrays import as_float
from cvtool.errors import UsageError


class BatchNormCache(NamedTuple):
    xhat: np.ndarray  # (N, C, H, W) normalised input
    inv_std: np.ndarray  # (C,)
    gamma: np.ndarray  # (C,)
    training: bool  # batch statistics (they depend on x) or running ones (constants)


def _channel(v: np.ndarray) -> np.ndarray:
    return v.reshape(1, -1, 1, 1)


def batchnorm2d_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray | None,
                        running_var: np.ndarray | None, *, training: bool, momentum: float = 0.1,
                        eps: float = 1e-5) -> tuple[np.ndarray, BatchNormCache]:
    """x (N, C, H, W), gamma/beta/running_* (C,) -> out, cache. Running stats change in place."""
    x, gamma, beta = as_float(x, gamma, beta)
    if x.ndim != 4:
        raise UsageError(f"batchnorm2d needs x (N, C, H, W), got shape {x.shape}")
    if training:
        M = x.shape[0] * x.shape[2] * x.shape[3]
        if M < 2:
            raise UsageError("batchnorm2d in training needs more than one value per channel")
        mean = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
        if running_var is not None:
            running_var *= 1 - momentum
            running_var += momentum * var * (M / (M - 1))
    else:
        if running_mean is None or running_var is None:
            raise UsageError("batchnorm2d in evaluation needs running_mean and running_var")
        mean, var = (np.asarray(v, x.dtype) for v in (running_mean, running_var))
    inv_std = 1 / np.sqrt(var + eps)
    xhat = (x - _channel(mean)) * _channel(inv_std)
    return _channel(gamma) * xhat + _channel(beta), BatchNormCache(xhat, inv_std, gamma, training)


def batchnorm2d_backward(dout: np.ndarray, cache: BatchNormCache):
    """dout (N, C, H, W) -> dx, dgamma (C,), dbeta (C,).

    Training: mean and variance depend on x, which gives the well-known
    dx = gamma * inv_std * (dout - mean(dout) - xhat * mean(dout * xhat)), means over (N, H, W).
    """
    xhat, inv_std, gamma, training = cache
    dbeta = dout.sum(axis=(0, 2, 3))
    dgamma = (dout * xhat).sum(axis=(0, 2, 3))
    scale = _channel(gamma * inv_std)
    if not training:
        return dout * scale, dgamma, dbeta
    M = xhat.shape[0] * xhat.shape[2] * xhat.shape[3]
    dx = scale * (dout - _channel(dbeta / M) - xhat * _channel(dgamma / M))
    return dx, dgamma, dbeta


__all__ = ["BatchNormCache", "batchnorm2d_forward", "batchnorm2d_backward"]
