"""Convolution and transposed convolution as the lecture writes them: one output (or one input pixel) at a time.

    conv2d:            y[n, f, i, j] = b[f] + sum_{c, u, v} x_pad[n, c, i*s + u*d, j*s + v*d] * w[f, c, u, v]
    conv_transpose2d:  every input pixel x[n, c, i, j] stamps x[n, c, i, j] * w[c, f, :, :] into the output at
                       (i*s, j*s) (kernel taps d apart); overlapping stamps add up; then `padding` is cropped away

Each backward is the same loop run the other way. Slow on purpose: the fast `numpy` backend is tested against it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cvtool.arithmetic import conv_output, conv_transpose_output, effective_kernel, pair, resolve_padding
from cvtool.errors import UsageError


class ConvCache(NamedTuple):
    x: np.ndarray
    w: np.ndarray
    has_bias: bool
    stride: tuple[int, int]
    pads: tuple[tuple[int, int], tuple[int, int]]  # ((top, bottom), (left, right))
    dilation: tuple[int, int]
    groups: int
    output_padding: tuple[int, int] = (0, 0)


def _window(i: int, j: int, s, d, k) -> tuple[slice, slice]:
    """Rows and columns of the padded input that output (i, j) reads: k taps, d apart, from (i*s, j*s)."""
    return (slice(i * s[0], i * s[0] + (k[0] - 1) * d[0] + 1, d[0]),
            slice(j * s[1], j * s[1] + (k[1] - 1) * d[1] + 1, d[1]))


def check(x, w, groups: int, channels_in_w: int, what: str) -> None:
    """NCHW input, a 4-D kernel, and channel counts that the groups split evenly."""
    if x.ndim != 4 or w.ndim != 4:
        raise UsageError(f"{what} needs x (N, C, H, W) and a 4-D kernel, got shapes {x.shape} and {w.shape}")
    if groups < 1 or x.shape[1] % groups or x.shape[1] // groups != channels_in_w:
        raise UsageError(f"{what}: input has {x.shape[1]} channels, the kernel expects {channels_in_w} per group "
                         f"x {groups} group(s)")


def conv2d_forward(x, w, b=None, *, stride=1, padding=0, dilation=1, groups: int = 1):
    """x (N, C, H, W), w (F, C/groups, KH, KW) -> y (N, F, OH, OW), OH = floor((H + pt + pb - d(KH-1) - 1)/s) + 1."""
    check(x, w, groups, w.shape[1] if w.ndim == 4 else -1, "conv2d")
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    s, d = pair(stride, "stride"), pair(dilation, "dilation")
    pads = resolve_padding(padding, kernel=(KH, KW), stride=s, dilation=d, input_size=(H, W))
    OH, OW = conv_output(H, KH, s[0], pads[0], d[0]), conv_output(W, KW, s[1], pads[1], d[1])
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    y = np.zeros((N, F, OH, OW), np.result_type(x, w))
    Fg = F // groups
    for g in range(groups):  # group g: input channels g*Cg.., outputs g*Fg..
        xg, wg = xp[:, g * Cg:(g + 1) * Cg], w[g * Fg:(g + 1) * Fg]
        for i in range(OH):
            for j in range(OW):
                win = xg[(slice(None), slice(None)) + _window(i, j, s, d, (KH, KW))]  # (N, Cg, KH, KW)
                y[:, g * Fg:(g + 1) * Fg, i, j] = np.tensordot(win, wg, axes=([1, 2, 3], [1, 2, 3]))
    if b is not None:
        y += b[None, :, None, None]
    return y, ConvCache(x, w, b is not None, s, pads, d, groups)


def conv2d_backward(dy, cache: ConvCache):
    """dL/dx: each output's gradient spreads back over its window, weighted by the kernel;
    dL/dw[f] = sum over outputs of dy[n, f, i, j] * window; dL/db[f] = sum of dy[:, f]."""
    x, w, s, pads, d, G = cache.x, cache.w, cache.stride, cache.pads, cache.dilation, cache.groups
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    Fg = F // G
    for g in range(G):
        cs, fs = slice(g * Cg, (g + 1) * Cg), slice(g * Fg, (g + 1) * Fg)
        for i in range(dy.shape[2]):
            for j in range(dy.shape[3]):
                at = (slice(None), cs) + _window(i, j, s, d, (KH, KW))
                dxp[at] += np.tensordot(dy[:, fs, i, j], w[fs], axes=([1], [0]))  # (N, Cg, KH, KW)
                dw[fs] += np.tensordot(dy[:, fs, i, j], xp[at], axes=([0], [0]))  # (Fg, Cg, KH, KW)
    dx = dxp[:, :, pads[0][0]:pads[0][0] + H, pads[1][0]:pads[1][0] + W]
    return dx, dw, (dy.sum(axis=(0, 2, 3)) if cache.has_bias else None)


def conv_transpose2d_forward(x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1, groups: int = 1):
    """x (N, C, H, W), w (C, F/groups, KH, KW) -> y (N, F, OH, OW), OH = (H-1)s - pt - pb + d(KH-1) + 1 + output_padding."""
    if x.ndim == 4 and w.ndim == 4 and w.shape[0] != x.shape[1]:
        raise UsageError(f"conv_transpose2d: input has {x.shape[1]} channels, the kernel {w.shape[0]}")
    check(x, w, groups, x.shape[1] // groups if x.ndim == 4 else -1, "conv_transpose2d")
    N, C, H, W = x.shape
    Cw, Fg, KH, KW = w.shape
    s, d, op = pair(stride, "stride"), pair(dilation, "dilation"), pair(output_padding, "output_padding")
    pads = resolve_padding(padding, kernel=(KH, KW), stride=s, dilation=d, input_size=(H, W))
    OH = conv_transpose_output(H, KH, s[0], pads[0], op[0], d[0])
    OW = conv_transpose_output(W, KW, s[1], pads[1], op[1], d[1])
    full = np.zeros((N, Fg * groups, (H - 1) * s[0] + effective_kernel(KH, d[0]) + op[0],
                     (W - 1) * s[1] + effective_kernel(KW, d[1]) + op[1]), np.result_type(x, w))
    Cg = C // groups
    for g in range(groups):
        cs, fs = slice(g * Cg, (g + 1) * Cg), slice(g * Fg, (g + 1) * Fg)
        for i in range(H):
            for j in range(W):  # the stamp of input pixel (i, j): sum_c x[n, c, i, j] * w[c, f]
                stamp = np.tensordot(x[:, cs, i, j], w[cs], axes=([1], [0]))  # (N, Fg, KH, KW)
                full[(slice(None), fs) + _window(i, j, s, d, (KH, KW))] += stamp
    y = full[:, :, pads[0][0]:pads[0][0] + OH, pads[1][0]:pads[1][0] + OW].copy()  # crop the padding
    if b is not None:
        y += b[None, :, None, None]
    return y, ConvCache(x, w, b is not None, s, pads, d, groups, op)


def conv_transpose2d_backward(dy, cache: ConvCache):
    """The stamps run backwards: dL/dx[n, c, i, j] = sum_f <dy_full[n, f, window(i, j)], w[c, f]>,
    dL/dw[c, f] = sum_{n, i, j} x[n, c, i, j] * dy_full[n, f, window(i, j)] (dy_full: dy with the crop undone)."""
    x, w, s, pads, d, G, op = cache.x, cache.w, cache.stride, cache.pads, cache.dilation, cache.groups, cache.output_padding
    N, C, H, W = x.shape
    Cw, Fg, KH, KW = w.shape
    full = np.zeros((N, dy.shape[1], (H - 1) * s[0] + effective_kernel(KH, d[0]) + op[0],
                     (W - 1) * s[1] + effective_kernel(KW, d[1]) + op[1]), dy.dtype)
    full[:, :, pads[0][0]:pads[0][0] + dy.shape[2], pads[1][0]:pads[1][0] + dy.shape[3]] = dy
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    Cg = C // G
    for g in range(G):
        cs, fs = slice(g * Cg, (g + 1) * Cg), slice(g * Fg, (g + 1) * Fg)
        for i in range(H):
            for j in range(W):
                win = full[(slice(None), fs) + _window(i, j, s, d, (KH, KW))]  # (N, Fg, KH, KW)
                dx[:, cs, i, j] = np.tensordot(win, w[cs], axes=([1, 2, 3], [1, 2, 3]))
                dw[cs] += np.tensordot(x[:, cs, i, j], win, axes=([0], [0]))  # (Cg, Fg, KH, KW)
    return dx, dw, (dy.sum(axis=(0, 2, 3)) if cache.has_bias else None)
