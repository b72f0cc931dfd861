"""Depthwise convolution (one filter per channel: groups = C, w (C, 1, KH, KW)), forward and backward.

A depthwise layer has no sum over channels, so it is not a matrix product worth running as one: as C products of
one row each (conv.py's grouped GEMM) it spends its time in per-group overhead. Here it is KH*KW multiply-adds of
whole shifted views instead, per block of channels on all cores (each channel is independent):

    forward   out[n, c, oh, ow]  = sum_{i,j} w[c, i, j] * xpad[n, c, oh*sh + i*dh, ow*sw + j*dw]
    backward  dxpad[window(i, j)] += w[c, i, j] * dout          (the same views, written back)
              dw[c, i, j]          = sum_{n,oh,ow} dout * xpad[window(i, j)]

xpad is x inside a zero buffer reaching as far as the last window (ConvGeom's Hb x Wb: the explicit pads,
asymmetric ones included, and no more rows than the windows read).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cvtool_backends.numpy_fast.arrays import offsets, window
from cvtool_backends.numpy_fast.geom import ConvGeom
from cvtool_backends.numpy_fast.parallel import map_channels


class DepthwiseCache(NamedTuple):
    xpad: np.ndarray  # (N, C, Hb, Wb): the zero-padded input
    w: np.ndarray  # (C, 1, KH, KW)
    has_bias: bool
    geom: ConvGeom


def is_depthwise(g: ConvGeom, wshape) -> bool:
    """One input channel per filter and one filter per channel (a depth multiplier of 1)."""
    return g.G == g.C == g.F > 1 and wshape[1] == 1


def _padded(x: np.ndarray, g: ConvGeom) -> np.ndarray:
    xpad = np.empty((g.N, g.C, g.Hb, g.Wb), x.dtype)
    bottom, right = g.top + g.H, g.left + g.W

    def fill(c0: int, c1: int) -> None:  # the padding zeroed, the interior copied, per block while in cache
        v = xpad[:, c0:c1]
        v[:, :, :g.top] = 0
        v[:, :, bottom:] = 0
        v[:, :, g.top:bottom, :g.left] = 0
        v[:, :, g.top:bottom, right:] = 0
        v[:, :, g.top:bottom, g.left:right] = x[:, c0:c1]

    map_channels(fill, g.C, xpad[:, 0].nbytes)
    return xpad


def depthwise_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, g: ConvGeom, relu: bool = False):
    """x (N, C, H, W), w (C, 1, KH, KW), b (C,) or None -> out (N, C, OH, OW), cache; max(0, .) after if relu."""
    xpad = _padded(x, g)
    out = np.empty((g.N, g.C, g.OH, g.OW), x.dtype)
    taps = list(offsets(g.KH, g.KW))

    def block(c0: int, c1: int) -> None:
        o, xp, wc = out[:, c0:c1], xpad[:, c0:c1], w[c0:c1, 0]
        tmp = np.empty_like(o)
        for k, (i, j) in enumerate(taps):
            v = window(xp, i, j, g.OH, g.OW, g.stride, g.dilation)
            np.multiply(v, wc[:, i, j][None, :, None, None], out=o if k == 0 else tmp)
            if k:
                o += tmp
        if b is not None:
            o += b[c0:c1][None, :, None, None]
        if relu:
            np.maximum(o, 0, out=o)

    map_channels(block, g.C, xpad[:, 0].nbytes)
    return out, DepthwiseCache(xpad, w, b is not None, g)


def depthwise_backward(dout: np.ndarray, cache: DepthwiseCache):
    """dout (N, C, OH, OW) -> dx (N, C, H, W), dw (C, 1, KH, KW), db (C,) or None."""
    xpad, w, has_bias, g = cache
    dout = np.ascontiguousarray(dout, xpad.dtype)
    dx = np.empty((g.N, g.C, g.H, g.W), xpad.dtype)
    dw = np.empty_like(w)
    taps = list(offsets(g.KH, g.KW))

    def block(c0: int, c1: int) -> None:
        d, xp, wc = dout[:, c0:c1], xpad[:, c0:c1], w[c0:c1, 0]
        dxp = np.zeros_like(xp)
        tmp = np.empty_like(d)
        for i, j in taps:
            dw[c0:c1, 0, i, j] = np.einsum("nchw,nchw->c", d, window(xp, i, j, g.OH, g.OW, g.stride, g.dilation))
            np.multiply(d, wc[:, i, j][None, :, None, None], out=tmp)
            window(dxp, i, j, g.OH, g.OW, g.stride, g.dilation)[...] += tmp
        dx[:, c0:c1] = dxp[:, :, g.top:g.top + g.H, g.left:g.left + g.W]

    map_channels(block, g.C, xpad[:, 0].nbytes)
    return dx, dw, (dout.sum(axis=(0, 2, 3)) if has_bias else None)


__all__ = ["DepthwiseCache", "is_depthwise", "depthwise_forward", "depthwise_backward"]
