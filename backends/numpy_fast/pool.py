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

from cvtool.arithmetic import effective_kernel, pair, pool_output
from cvtool.errors import UsageError
from cvtool_backends.numpy_fast.arrays import as_float, offsets, window
from cvtool_backends.numpy_fast.parallel import map_blocks


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
    """x inside a buffer reaching the end of the last window; x itself when it already does."""
    (ph, pw) = g.pad
    if (ph, pw) == (0, 0) and (g.Hb, g.Wb) == (g.H, g.W):
        return x
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


PLANE_BYTES = 1 << 20  # per block of (n, c) planes: small enough to stay in cache


def _plane_blocks(planes: int, plane_bytes: int) -> list[tuple[int, int]]:
    """Runs of (n, c) planes of about PLANE_BYTES each (pooling is per plane, so blocks run in parallel)."""
    step = max(1, PLANE_BYTES // max(1, plane_bytes))
    return [(p0, min(p0 + step, planes)) for p0 in range(0, planes, step)]


def max_pool2d_forward(x: np.ndarray, *, kernel, stride=None, padding=0, dilation=1, ceil_mode: bool = False,
                       cache: bool = True) -> tuple[np.ndarray, MaxPoolCache | None]:
    """x (N, C, H, W) -> out (N, C, OH, OW), cache (None when cache is False: evaluation only).

    The max is a running np.maximum over the kernel offsets (NaN propagates, as in torch). The
    argmax that backward needs follows torch's test `val > max || isnan(val)`: the first maximum
    in window order, or the last NaN. Done per block of (n, c) planes, on all cores."""
    (x,) = as_float(x)
    g = pool_geom(x.shape, kernel, stride, padding, dilation, ceil_mode)
    xb = np.ascontiguousarray(_pad(x, g, -np.inf)).reshape(g.N * g.C, g.Hb, g.Wb)
    out = np.empty((g.N * g.C, g.OH, g.OW), x.dtype)
    argmax = np.zeros(out.shape, np.min_scalar_type(g.KH * g.KW - 1)) if cache else None

    def block(p0: int, p1: int) -> None:
        views = [v for _, v in _windows(xb[p0:p1], g)]
        o = out[p0:p1]
        np.copyto(o, views[0])
        for v in views[1:]:
            np.maximum(o, v, out=o)
        if argmax is None:
            return
        a = argmax[p0:p1]
        for k in range(len(views) - 1, 0, -1):  # last written wins: the first k that holds the max
            np.putmask(a, views[k] == o, k)
        np.putmask(a, views[0] == o, 0)
        nan = np.isnan(o)
        if nan.any():
            a[nan] = 0
            for k, v in enumerate(views):
                np.putmask(a, np.isnan(v), k)

    map_blocks(block, _plane_blocks(g.N * g.C, g.Hb * g.Wb * x.itemsize))
    out = out.reshape(g.N, g.C, g.OH, g.OW)
    if argmax is None:
        return out, None
    return out, MaxPoolCache(argmax.reshape(out.shape), g, x.dtype)


def max_pool2d_backward(dout: np.ndarray, cache: MaxPoolCache) -> np.ndarray:
    """dout (N, C, OH, OW) -> dx (N, C, H, W): each gradient goes to its window's argmax."""
    argmax, g, dtype = cache
    P = g.N * g.C
    dout = np.ascontiguousarray(dout, dtype).reshape(P, g.OH, g.OW)
    argmax = argmax.reshape(P, g.OH, g.OW)
    tiled = g.stride == (g.KH, g.KW) and g.dilation == (1, 1)  # windows do not overlap: write, not add
    dxb = (np.empty if tiled and (g.Hb, g.Wb) == (g.OH * g.KH, g.OW * g.KW) else np.zeros)((P, g.Hb, g.Wb), dtype)

    def block(p0: int, p1: int) -> None:
        d, a = dout[p0:p1], argmax[p0:p1]
        for k, v in _windows(dxb[p0:p1], g):
            if tiled:
                np.multiply(d, a == k, out=v)
            else:
                v += np.where(a == k, d, 0)

    map_blocks(block, _plane_blocks(P, g.Hb * g.Wb * np.dtype(dtype).itemsize))
    return _unpad(dxb.reshape(g.N, g.C, g.Hb, g.Wb), g)


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
