"""Element-wise activations, forward and backward. Each cache keeps what the derivative needs."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cvtool_backends.numpy_fast.arrays import as_float


class ReluCache(NamedTuple):
    x: np.ndarray


class OutCache(NamedTuple):
    """sigmoid and tanh: the derivative is a function of the output."""

    out: np.ndarray


def relu_forward(x: np.ndarray) -> tuple[np.ndarray, ReluCache]:
    (x,) = as_float(x)
    return np.maximum(x, 0), ReluCache(x)


def relu_backward(dout: np.ndarray, cache: ReluCache) -> np.ndarray:
    return np.where(cache.x > 0, dout, 0).astype(cache.x.dtype, copy=False)  # torch: gradient 0 at x == 0


def relu6_forward(x: np.ndarray) -> tuple[np.ndarray, ReluCache]:
    """min(max(x, 0), 6): ReLU clipped at 6 (EfficientNet-Lite, MobileNet)."""
    (x,) = as_float(x)
    return np.clip(x, 0, 6), ReluCache(x)


def relu6_backward(dout: np.ndarray, cache: ReluCache) -> np.ndarray:
    """1 on the open interval (0, 6), 0 elsewhere (torch's hardtanh gradient: 0 at both kinks)."""
    x = cache.x
    return np.where((x > 0) & (x < 6), dout, 0).astype(x.dtype, copy=False)


def sigmoid_forward(x: np.ndarray) -> tuple[np.ndarray, OutCache]:
    (x,) = as_float(x)
    out = 0.5 * (np.tanh(0.5 * x) + 1)  # = 1 / (1 + exp(-x)), without overflow for large |x|
    return out, OutCache(out)


def sigmoid_backward(dout: np.ndarray, cache: OutCache) -> np.ndarray:
    s = cache.out
    return dout * s * (1 - s)


def tanh_forward(x: np.ndarray) -> tuple[np.ndarray, OutCache]:
    (x,) = as_float(x)
    out = np.tanh(x)
    return out, OutCache(out)


def tanh_backward(dout: np.ndarray, cache: OutCache) -> np.ndarray:
    t = cache.out
    return dout * (1 - t * t)


__all__ = ["ReluCache", "OutCache", "relu_forward", "relu_backward", "relu6_forward", "relu6_backward",
           "sigmoid_forward", "sigmoid_backward",
           "tanh_forward", "tanh_backward"]
