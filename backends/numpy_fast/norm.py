"""Batch normalisation over (N, H, W) per channel, forward and backward, as torch.nn.BatchNorm2d.

Training: normalise with the batch mean and biased variance; update the running estimates in
place with momentum m: running = (1 - m) * running + m * batch, using the UNBIASED variance
(M / (M - 1) times the biased one, M = N*H*W). Evaluation: normalise with the running estimates.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cvtool.errors import UsageError
from cvtool_backends.numpy_fast.arrays import as_float
from cvtool_backends.numpy_fast.parallel import map_channels


class BatchNormCache(NamedTuple):
    xhat: np.ndarray  # (N, C, H, W) normalised input
    inv_std: np.ndarray  # (C,)
    gamma: np.ndarray  # (C,)
    training: bool  # batch statistics (they depend on x) or running ones (constants)


def _channel(v: np.ndarray) -> np.ndarray:
    return v.reshape(1, -1, 1, 1)


def _sum_c(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Per-channel sum over (N, H, W) of a (or of a * b, without the temporary)."""
    return a.sum(axis=(0, 2, 3)) if b is None else np.einsum("nchw,nchw->c", a, b)


# Per block of channels on all cores (parallel.map_channels): the statistics are per channel, so
# each block reads its slice of x once while it is in cache and writes xhat and out in place.

def batchnorm2d_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray | None,
                        running_var: np.ndarray | None, *, training: bool, momentum: float = 0.1,
                        eps: float = 1e-5) -> tuple[np.ndarray, BatchNormCache]:
    """x (N, C, H, W), gamma/beta/running_* (C,) -> out, cache. Running stats change in place."""
    x, gamma, beta = as_float(x, gamma, beta)
    if x.ndim != 4:
        raise UsageError(f"batchnorm2d needs x (N, C, H, W), got shape {x.shape}")
    N, C, H, W = x.shape
    M = N * H * W
    if training:
        if M < 2:
            raise UsageError("batchnorm2d in training needs more than one value per channel")
        mean, var = np.empty(C, x.dtype), np.empty(C, x.dtype)
    else:
        if running_mean is None or running_var is None:
            raise UsageError("batchnorm2d in evaluation needs running_mean and running_var")
        mean, var = (np.asarray(v, x.dtype) for v in (running_mean, running_var))
    xhat, out = np.empty_like(x), np.empty_like(x)
    inv_std = np.empty(C, x.dtype)

    def block(c0: int, c1: int) -> None:
        xc, xh, o = x[:, c0:c1], xhat[:, c0:c1], out[:, c0:c1]
        if training:
            mean[c0:c1] = _sum_c(xc) / M
        np.subtract(xc, _channel(mean[c0:c1]), out=xh)
        if training:
            var[c0:c1] = _sum_c(xh, xh) / M  # biased, as torch normalises with
        inv_std[c0:c1] = 1 / np.sqrt(var[c0:c1] + eps)
        xh *= _channel(inv_std[c0:c1])
        np.multiply(xh, _channel(gamma[c0:c1]), out=o)
        o += _channel(beta[c0:c1])

    map_channels(block, C, x[:, 0].nbytes)
    if training:
        if running_mean is not None:
            running_mean *= 1 - momentum
            running_mean += momentum * mean
        if running_var is not None:
            running_var *= 1 - momentum
            running_var += momentum * var * (M / (M - 1))
    return out, BatchNormCache(xhat, inv_std, gamma, training)


def batchnorm2d_backward(dout: np.ndarray, cache: BatchNormCache):
    """dout (N, C, H, W) -> dx, dgamma (C,), dbeta (C,).

    Training: mean and variance depend on x, which gives the well-known
    dx = gamma * inv_std * (dout - mean(dout) - xhat * mean(dout * xhat)), means over (N, H, W).
    """
    xhat, inv_std, gamma, training = cache
    dout = np.asarray(dout, xhat.dtype)
    N, C, H, W = xhat.shape
    M = N * H * W
    dx = np.empty_like(xhat)
    dgamma, dbeta = np.empty(C, xhat.dtype), np.empty(C, xhat.dtype)
    scale = gamma * inv_std

    def block(c0: int, c1: int) -> None:
        d, xh, o = dout[:, c0:c1], xhat[:, c0:c1], dx[:, c0:c1]
        dbeta[c0:c1] = _sum_c(d)
        dgamma[c0:c1] = _sum_c(d, xh)
        if not training:
            np.multiply(d, _channel(scale[c0:c1]), out=o)
            return
        np.multiply(xh, _channel(dgamma[c0:c1] / M), out=o)
        np.subtract(d, o, out=o)
        o -= _channel(dbeta[c0:c1] / M)
        o *= _channel(scale[c0:c1])

    map_channels(block, C, xhat[:, 0].nbytes)
    return dx, dgamma, dbeta


__all__ = ["BatchNormCache", "batchnorm2d_forward", "batchnorm2d_backward"]
