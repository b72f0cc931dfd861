"""Max and average pooling, one window at a time (PyTorch's rules for padding, dilation and ceil_mode).

    max:  y[n, c, i, j] = max over the window of x_pad (padding is -inf: it never wins)
    avg:  y[n, c, i, j] = sum over the window of x_pad / count, count = the window's cells inside the padded
          input (count_include_pad) or inside the input itself
Backward: max sends each output's gradient to the cell that won (the first, in a tie); avg spreads it evenly.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cvtool.arithmetic import effective_kernel, pair, pool_output


class PoolCache(NamedTuple):
    x: np.ndarray
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    out_hw: tuple[int, int]
    count_include_pad: bool = True


def _geometry(x, kernel, stride, padding, dilation, ceil_mode):
    if x.ndim != 4:
        from cvtool.errors import UsageError

        raise UsageError(f"pooling needs x (N, C, H, W), got shape {x.shape}")
    k = pair(kernel, "kernel")
    s = pair(stride if stride is not None else k, "stride")
    p, d = pair(padding, "padding"), pair(dilation, "dilation")
    H, W = x.shape[2:]
    out = (pool_output(H, k[0], s[0], p[0], d[0], ceil_mode), pool_output(W, k[1], s[1], p[1], d[1], ceil_mode))
    return k, s, p, d, out


def _padded(x, k, s, p, d, out, value) -> np.ndarray:
    """x padded by p before, and after by as much as the last window reaches (ceil_mode may hang over)."""
    H, W = x.shape[2:]
    after = [max(p[a], (out[a] - 1) * s[a] + effective_kernel(k[a], d[a]) - p[a] - (H, W)[a]) for a in (0, 1)]
    return np.pad(x, ((0, 0), (0, 0), (p[0], after[0]), (p[1], after[1])), constant_values=value)


def _window(i, j, k, s, d):
    return (slice(i * s[0], i * s[0] + (k[0] - 1) * d[0] + 1, d[0]),
            slice(j * s[1], j * s[1] + (k[1] - 1) * d[1] + 1, d[1]))


def max_pool2d_forward(x, *, kernel, stride=None, padding=0, dilation=1, ceil_mode: bool = False):
    k, s, p, d, (OH, OW) = _geometry(x, kernel, stride, padding, dilation, ceil_mode)
    xp = _padded(x, k, s, p, d, (OH, OW), -np.inf)
    y = np.empty(x.shape[:2] + (OH, OW), x.dtype)
    for i in range(OH):
        for j in range(OW):
            y[:, :, i, j] = xp[(slice(None), slice(None)) + _window(i, j, k, s, d)].max(axis=(2, 3))
    return y, PoolCache(x, k, s, p, d, (OH, OW))


def max_pool2d_backward(dy, cache: PoolCache):
    x, k, s, p, d, (OH, OW) = cache[:6]
    xp = _padded(x, k, s, p, d, (OH, OW), -np.inf)
    dxp = np.zeros_like(xp)
    N, C = x.shape[:2]
    for i in range(OH):
        for j in range(OW):
            at = _window(i, j, k, s, d)
            win = xp[(slice(None), slice(None)) + at].reshape(N, C, -1)
            u, v = np.unravel_index(win.argmax(axis=2), k)  # the winner of each (n, c): first in a tie
            rows, cols = at[0].start + u * d[0], at[1].start + v * d[1]
            np.add.at(dxp, (np.arange(N)[:, None], np.arange(C)[None, :], rows, cols), dy[:, :, i, j])
    return dxp[:, :, p[0]:p[0] + x.shape[2], p[1]:p[1] + x.shape[3]]


def _count(i, j, k, s, p, d, hw, include_pad) -> int:
    """Cells of window (i, j) inside the padded input (include_pad) or the input (else)."""
    n = 1
    for a, idx in ((0, i), (1, j)):
        taps = idx * s[a] + np.arange(k[a]) * d[a]  # positions in padded coordinates
        lo, hi = (0, hw[a] + 2 * p[a]) if include_pad else (p[a], p[a] + hw[a])
        n *= int(((taps >= lo) & (taps < hi)).sum())
    return n


def avg_pool2d_forward(x, *, kernel, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True):
    k, s, p, d, (OH, OW) = _geometry(x, kernel, stride, padding, 1, ceil_mode)
    xp = _padded(x, k, s, p, d, (OH, OW), 0.0)
    y = np.empty(x.shape[:2] + (OH, OW), x.dtype)
    for i in range(OH):
        for j in range(OW):
            n = _count(i, j, k, s, p, d, x.shape[2:], count_include_pad)
            y[:, :, i, j] = xp[(slice(None), slice(None)) + _window(i, j, k, s, d)].sum(axis=(2, 3)) / n
    return y, PoolCache(x, k, s, p, d, (OH, OW), count_include_pad)


def avg_pool2d_backward(dy, cache: PoolCache):
    x, k, s, p, d, (OH, OW), include = cache
    xp = _padded(x, k, s, p, d, (OH, OW), 0.0)
    dxp = np.zeros_like(xp)
    for i in range(OH):
        for j in range(OW):
            n = _count(i, j, k, s, p, d, x.shape[2:], include)
            dxp[(slice(None), slice(None)) + _window(i, j, k, s, d)] += dy[:, :, i, j][:, :, None, None] / n
    return dxp[:, :, p[0]:p[0] + x.shape[2], p[1]:p[1] + x.shape[3]]
