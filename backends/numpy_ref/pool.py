"""Max and average pooling on NCHW arrays, forward and backward, with PyTorch's exact semantics.

Like conv, a loop over the KH*KW kernel offsets, each a strided view of the padded input
(arrays.window): the running max / sum over offsets is the pooled output.
The buffer reaches as far as the last window (with ceil_mode a window may hang over the end of
input + padding); max pooling pads with -inf, average pooling with 0 and divides by torch's count:
    count_include_pad: the window clipped to input + padding
    otherwise:         the window clipped to the input
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from backends.numpy_ref.arrays import as_float, offsets, window
from cvtool.arithmetic import effective_kernel, pair, pool_output
from cvtool.errors import UsageError


class PoolGeom(NamedTuple):
    N: int
    C: int
    H: int
    W: int
    KH: int
    KW: int
    OH: int
    OW: int
    stride: tuple[int, int]
    dilation: tuple[int, int]
    pad: tuple[int, int]  # (ph, pw) before row 0 / column 0, and at least that after
    Hb: int  # padded buffer, reaching the end of the last window
    Wb: int


def pool_geom(shape, kernel, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> PoolGeom:
    if len(shape) != 4:
        raise UsageError(f"pooling needs x (N, C, H, W), got shape {tuple(shape)}")
    N, C, H, W = shape
    (KH, KW), (ph, pw), (dh, dw) = pair(kernel, "kernel"), pair(padding, "padding"), pair(dilation, "dilation")
    sh, sw = pair(stride if stride is not None else (KH, KW), "stride")
    OH = pool_output(H, KH, sh, ph, dh, ceil_mode)
    OW = pool_output(W, KW, sw, pw, dw, ceil_mode)
    Hb = max(H + 2 * ph, (OH - 1) * sh + effective_kernel(KH, dh))
    Wb = max(W + 2 * pw, (OW - 1) * sw + effective_kernel(KW, dw))
    return PoolGeom(N, C, H, W, KH, KW, OH, OW, (sh, sw), (dh, dw), (ph, pw), Hb, Wb)


def _pad(x: np.ndarray, g: PoolGeom, value: float) -> np.ndarray:
    (ph, pw) = g.pad
    return np.pad(x, ((0, 0), (0, 0), (ph, g.Hb - g.H - ph), (pw, g.Wb - g.W - pw)), constant_values=value)


def _unpad(xb: np.ndarray, g: PoolGeom) -> np.ndarray:
    (ph, pw) = g.pad
    return np.ascontiguousarray(xb[:, :, ph:ph + g.H, pw:pw + g.W])


def _windows(xb: np.ndarray, g: PoolGeom):
    """(k, view) for each kernel offset k in window order; view (N, C, OH, OW)."""
    for k, (i, j) in enumerate(offsets(g.KH, g.KW)):
        yield k, window(xb, i, j, g.OH, g.OW, g.stride, g.dilation)


# --- max pooling -----------------------------------------------------------------------------

class MaxPoolCache(NamedTuple):
    argmax: np.ndarray  # (N, C, OH, OW): which kernel offset won, in window order
    geom: PoolGeom
    dtype: np.dtype


def max_pool2d_forward(x: np.ndarray, *, kernel, stride=None, padding=0, dilation=1,
                       ceil_mode: bool = False) -> tuple[np.ndarray, MaxPoolCache]:
    """x (N, C, H, W) -> out (N, C, OH, OW), cache. Ties go to the first max in window order and
    NaN wins, as in torch (its test is `val > max || isnan(val)`)."""
    (x,) = as_float(x)
    g = pool_geom(x.shape, kernel, stride, padding, dilation, ceil_mode)
    xb = _pad(x, g, -np.inf)
    out = None
    argmax = np.zeros((g.N, g.C, g.OH, g.OW), np.min_scalar_type(g.KH * g.KW - 1))
    for k, v in _windows(xb, g):
        if out is None:
            out = v.copy()
            continue
        better = (v > out) | np.isnan(v)
        np.copyto(out, v, where=better)
        argmax[better] = k
    return out, MaxPoolCache(argmax, g, x.dtype)


def max_pool2d_backward(dout: np.ndarray, cache: MaxPoolCache) -> np.ndarray:
    """dout (N, C, OH, OW) -> dx (N, C, H, W): each gradient goes to its window's argmax."""
    argmax, g, dtype = cache
    dout = np.asarray(dout, dtype)
    dxb = np.zeros((g.N, g.C, g.Hb, g.Wb), dtype)
    for k, v in _windows(dxb, g):
        v += np.where(argmax == k, dout, 0)
    return _unpad(dxb, g)


# --- average pooling -------------------------------------------------------------------------

class AvgPoolCache(NamedTuple):
    divisor: np.ndarray  # (OH, OW)
    geom: PoolGeom
    dtype: np.dtype


def _count(i: int, k: int, s: int, p: int, o: int, include_pad: bool) -> np.ndarray:
    """Per output position along one dimension: how many window elements torch divides by."""
    start = np.arange(o) * s - p
    end = np.minimum(start + k, i + p)  # windows are clipped to input + padding ...
    if include_pad:
        return end - start
    return np.minimum(end, i) - np.maximum(start, 0)  # ... and without pad, to the input


def avg_pool2d_forward(x: np.ndarray, *, kernel, stride=None, padding=0, ceil_mode: bool = False,
                       count_include_pad: bool = True) -> tuple[np.ndarray, AvgPoolCache]:
    """x (N, C, H, W) -> out (N, C, OH, OW), cache; torch.nn.functional.avg_pool2d's divisors."""
    (x,) = as_float(x)
    g = pool_geom(x.shape, kernel, stride, padding, 1, ceil_mode)
    rows = _count(g.H, g.KH, g.stride[0], g.pad[0], g.OH, count_include_pad)
    cols = _count(g.W, g.KW, g.stride[1], g.pad[1], g.OW, count_include_pad)
    divisor = np.outer(rows, cols).astype(x.dtype)
    out = np.zeros((g.N, g.C, g.OH, g.OW), x.dtype)
    for _, v in _windows(_pad(x, g, 0), g):
        out += v
    return out / divisor, AvgPoolCache(divisor, g, x.dtype)


def avg_pool2d_backward(dout: np.ndarray, cache: AvgPoolCache) -> np.ndarray:
    """dout (N, C, OH, OW) -> dx (N, C, H, W): each window shares its gradient equally."""
    divisor, g, dtype = cache
    share = np.asarray(dout, dtype) / divisor
    dxb = np.zeros((g.N, g.C, g.Hb, g.Wb), dtype)
    for _, v in _windows(dxb, g):
        v += share
    return _unpad(dxb, g)


__all__ = ["PoolGeom", "pool_geom", "MaxPoolCache", "AvgPoolCache", "max_pool2d_forward", "max_pool2d_backward",
           "avg_pool2d_forward", "avg_pool2d_backward"]
