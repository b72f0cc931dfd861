"""Activations, BatchNorm and the softmax cross-entropy, forward and backward, written as their formulas."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def relu_forward(x):
    """f(x) = max(0, x)"""
    return np.maximum(x, 0), x


def relu_backward(dy, x):
    """f'(x) = 1 where x > 0, else 0"""
    return dy * (x > 0)


def relu6_forward(x):
    """f(x) = min(max(0, x), 6)"""
    y = x.copy()
    for i in np.ndindex(x.shape):
        y[i] = 0 if x[i] < 0 else 6 if x[i] > 6 else x[i]
    return y, x


def relu6_backward(dy, x):
    """f'(x) = 1 where 0 < x < 6, else 0 (at the kinks too, as PyTorch)"""
    dx = np.zeros_like(dy)
    for i in np.ndindex(x.shape):
        if 0 < x[i] < 6:
            dx[i] = dy[i]
    return dx


def add_forward(a, b):
    """y = a + b, element by element (a residual connection)"""
    y = np.empty_like(a)
    for i in np.ndindex(a.shape):
        y[i] = a[i] + b[i]
    return y, None


def add_backward(dy, cache):
    """dL/da = dL/db = dL/dy: a sum passes its gradient to both terms unchanged"""
    return dy.copy(), dy.copy()


def sigmoid_forward(x):
    """f(x) = 1 / (1 + e^-x)"""
    y = 1 / (1 + np.exp(-x))
    return y, y


def sigmoid_backward(dy, y):
    """f'(x) = f(x) (1 - f(x))"""
    return dy * y * (1 - y)


def tanh_forward(x):
    """f(x) = (e^x - e^-x) / (e^x + e^-x)"""
    y = np.tanh(x)
    return y, y


def tanh_backward(dy, y):
    """f'(x) = 1 - f(x)^2"""
    return dy * (1 - y * y)


class BNCache(NamedTuple):
    xhat: np.ndarray
    gamma: np.ndarray
    inv_std: np.ndarray


def batchnorm2d_forward(x, gamma, beta, running_mean, running_var, *, training: bool, momentum=0.1, eps=1e-5):
    """Per channel c, over the M = N*H*W values: xhat = (x - mean) / sqrt(var + eps), y = gamma * xhat + beta.
    Training uses the batch's mean and biased variance and moves the running ones by `momentum` (the running
    variance takes the unbiased estimate, as PyTorch); evaluation uses the running statistics."""
    C = x.shape[1]
    y, xhat = np.empty_like(x), np.empty_like(x)
    inv = np.empty(C, x.dtype)
    rm, rv = running_mean.copy(), running_var.copy()
    for c in range(C):
        v = x[:, c]
        if training:
            mean, var = v.mean(), v.var()
            M = v.size
            rm[c] = (1 - momentum) * rm[c] + momentum * mean
            rv[c] = (1 - momentum) * rv[c] + momentum * var * M / max(M - 1, 1)
        else:
            mean, var = running_mean[c], running_var[c]
        inv[c] = 1 / np.sqrt(var + eps)
        xhat[:, c] = (v - mean) * inv[c]
        y[:, c] = gamma[c] * xhat[:, c] + beta[c]
    return y, BNCache(xhat, gamma, inv), (rm, rv)


def batchnorm2d_backward(dy, cache: BNCache):
    """Training-mode gradients, per channel (M values):
    dL/dx = gamma * inv_std / M * (M * dy - sum(dy) - xhat * sum(dy * xhat)); dL/dgamma = sum(dy * xhat); dL/dbeta = sum(dy)."""
    xhat, gamma, inv = cache
    dx = np.empty_like(dy)
    C = dy.shape[1]
    dgamma, dbeta = np.empty(C, dy.dtype), np.empty(C, dy.dtype)
    for c in range(C):
        g, h = dy[:, c], xhat[:, c]
        M = g.size
        dbeta[c], dgamma[c] = g.sum(), (g * h).sum()
        dx[:, c] = gamma[c] * inv[c] / M * (M * g - dbeta[c] - h * dgamma[c])
    return dx, dgamma, dbeta


def softmax_cross_entropy(logits, labels, *, weight=None, ignore_index: int = 255):
    """p = softmax over classes; L = sum_i w[y_i] * -log p[y_i] / sum_i w[y_i] over pixels i not ignored
    (PyTorch's weighted mean). Returns (L, dL/dlogits) with dL/dz = w[y_i] (p - onehot(y_i)) / sum_i w[y_i]."""
    N, K = logits.shape[:2]
    z = logits - logits.max(axis=1, keepdims=True)  # the same softmax, without overflow
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    w = np.ones(K, logits.dtype) if weight is None else np.asarray(weight, logits.dtype)
    keep = labels != ignore_index
    y = np.where(keep, labels, 0)
    wy = np.where(keep, w[y], 0)  # each pixel's weight, 0 where ignored
    total = wy.sum()
    p_true = np.take_along_axis(p, y[:, None], axis=1)[:, 0]  # each pixel's probability of its label
    loss = -(wy * np.log(p_true)).sum() / max(total, 1e-12)
    grad = p.copy()
    for k in range(K):
        grad[:, k] -= y == k  # p - onehot(y)
    grad *= wy[:, None] / max(total, 1e-12)
    return float(loss), grad
