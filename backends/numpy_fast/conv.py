"""2-D convolution and transposed convolution on NCHW arrays, forward and backward.

Over 400 lines on purpose: the four rules (forward, dL/dx, dL/dw, and the transposed convolution, which is the
forward's adjoint) share one geometry (ConvGeom) and one flat layout; split, each half would reach into the other's.

One piece of maths, three uses. A convolution (a cross-correlation, as in every framework) is

    out[n, f, oh, ow] = sum_{c,i,j} w[f, c, i, j] * xpad[n, c, oh*sh + i*dh, ow*sw + j*dw]

i.e. one matrix product W (F, KH*KW*C) @ X (KH*KW*C, M), where column m of X (im2col) holds the
window of output pixel m (M: every output pixel of the batch):

    forward            out   = W @ im2col(xpad)                    (_forward_nchw)
    backward to x      dxpad = col2im(W^T @ dout)                  (_adjoint)
    backward to w      dW    = dout @ im2col(xpad)^T               (_wgrad)

col2im is im2col's adjoint (add each entry back where it was read from). A transposed
convolution IS a convolution's backward-to-input, and its backward-to-input is that convolution's
forward, so conv_transpose2d_* call the same three functions with the roles of x and out swapped.

X is never built whole (KH*KW times the input): the products run over blocks of columns whose
gathered input fits in cache (_blocks), on all cores (parallel.map_blocks).
- stride 1 ("flat"): the padded batch is stored channel-major as one long row (C, N*Hb*Wb + tail).
  Output pixel (n, oh, ow) is column m = (n*Hb + oh)*Wb + ow and offset (i, j) reads column
  m + i*dh*Wb + j*dw. A block copies only the KW column shifts (_rows); each kernel row i is then a
  contiguous slice of that copy, so the product is KH matmuls over KW*C rows (see _rows).
  Columns with oh >= OH or ow >= OW are garbage (their window wraps into the next row or image):
  the forward crops them, backward feeds zeros there.
- stride > 1: the padded batch is (C, N, Hb, Wb), offset (i, j) a strided window of it, a block is
  a run of whole images, and it stacks all KH*KW windows (_im2col).
Groups: channels split as (G, C/G), and every product is a matmul batched over G; depthwise layers (one
channel per group) take depthwise.py's shifted multiply-adds instead.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cvtool.arithmetic import conv_output, conv_transpose2d_output, effective_kernel, pair, resolve_padding
from cvtool.errors import UsageError
from cvtool_backends.numpy_fast.arrays import as_float, offsets, window
from cvtool_backends.numpy_fast.depthwise import DepthwiseCache, depthwise_backward, depthwise_forward, is_depthwise
from cvtool_backends.numpy_fast.geom import ConvGeom
from cvtool_backends.numpy_fast.parallel import map_blocks, map_channels, map_runs, workers


def _geom(N, C, H, W, F, KH, KW, G, OH, OW, stride, dilation, pads) -> ConvGeom:
    (top, bottom), (left, right) = pads
    Hb = max(top + H + bottom, (OH - 1) * stride[0] + effective_kernel(KH, dilation[0]))
    Wb = max(left + W + right, (OW - 1) * stride[1] + effective_kernel(KW, dilation[1]))
    return ConvGeom(N, C, H, W, F, KH, KW, G, OH, OW, stride, dilation, top, left, Hb, Wb)


def _check(x: np.ndarray, w: np.ndarray, groups: int, what: str) -> None:
    if x.ndim != 4 or w.ndim != 4:
        raise UsageError(f"{what} needs x (N, C, H, W) and w 4-D, got x {x.shape} and w {w.shape}")
    if groups < 1 or x.shape[1] % groups:
        raise UsageError(f"{what}: {x.shape[1]} input channels cannot be split into {groups} groups")


def conv_geom(xshape, wshape, *, stride=1, padding=0, dilation=1, groups: int = 1) -> ConvGeom:
    """Geometry of conv2d: x (N, C, H, W), w (F, C/groups, KH, KW)."""
    N, C, H, W = xshape
    F, Cg, KH, KW = wshape
    if Cg * groups != C or F % groups:
        raise UsageError(f"conv2d: w {tuple(wshape)} does not fit {C} input channels in {groups} groups",
                         hint="w is (out_channels, in_channels/groups, KH, KW); out_channels must divide by groups")
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    pads = resolve_padding(padding, kernel=(KH, KW), stride=stride, dilation=dilation, input_size=(H, W))
    OH = conv_output(H, KH, stride[0], pads[0], dilation[0])
    OW = conv_output(W, KW, stride[1], pads[1], dilation[1])
    return _geom(N, C, H, W, F, KH, KW, groups, OH, OW, stride, dilation, pads)


def conv_transpose_geom(xshape, wshape, *, stride=1, padding=0, output_padding=0, dilation=1,
                        groups: int = 1) -> ConvGeom:
    """Geometry of the convolution whose backward-to-input conv_transpose2d is.

    x (N, C_in, H, W) is that convolution's output, w (C_in, C_out/groups, KH, KW) its weight
    (C_in plays F), and the transposed output (N, C_out, OH', OW') its input.
    """
    N, Cin, H, W = xshape
    Cw, Cog, KH, KW = wshape
    if Cw != Cin:
        raise UsageError(f"conv_transpose2d: w {tuple(wshape)} expects {Cw} input channels, x has {Cin}",
                         hint="w is (in_channels, out_channels/groups, KH, KW)")
    THW = conv_transpose2d_output((H, W), (KH, KW), stride, padding, output_padding, dilation)
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    pads = resolve_padding(padding, kernel=(KH, KW))
    return _geom(N, Cog * groups, THW[0], THW[1], Cin, KH, KW, groups, H, W, stride, dilation, pads)


# --- layouts: NCHW <-> the GEMM buffers ------------------------------------------------------

def _grid(buf: np.ndarray, g: ConvGeom) -> np.ndarray:
    """The padded buffer as (C, N, Hb, Wb)."""
    return buf[:, :g.N * g.Hb * g.Wb].reshape(g.C, g.N, g.Hb, g.Wb) if g.flat else buf


def _interior(buf: np.ndarray, g: ConvGeom) -> np.ndarray:
    """The input's own pixels inside the padded buffer, (C, N, H, W)."""
    return _grid(buf, g)[:, :, g.top:g.top + g.H, g.left:g.left + g.W]


def _tail(g: ConvGeom) -> int:
    """Flat layout: how far past column m the window of output column m reaches."""
    return (g.KH - 1) * g.dilation[0] * g.Wb + (g.KW - 1) * g.dilation[1]


# Layout changes are copies of tens of MB in training (batch 8 at 256x256): they run per block of
# channels on all cores, each block zeroed (where it must be) and filled while in cache.

def _buffer(g: ConvGeom, dtype) -> np.ndarray:
    """The padded buffer, uninitialised: (C, M + tail) flat, (C, N, Hb, Wb) strided."""
    if g.flat:  # the tail lets the last offset's slice run M columns past its start
        return np.empty((g.C, g.M + _tail(g)), dtype)
    return np.empty((g.C, g.N, g.Hb, g.Wb), dtype)


def _zeros_buffer(g: ConvGeom, dtype) -> np.ndarray:
    buf = _buffer(g, dtype)
    map_channels(lambda c0, c1: buf[c0:c1].fill(0), g.C, buf[0].nbytes)
    return buf


def _source(x: np.ndarray, g: ConvGeom):
    """What the gathers read: x itself in the flat layout (_rows pads as it copies), else the padded buffer."""
    return Unpadded(np.ascontiguousarray(x)) if g.flat else _pad(x, g)


def _pad(x: np.ndarray, g: ConvGeom) -> np.ndarray:
    """(N, C, H, W) -> the zero-padded buffer the strided gathers read (the flat gathers pad as they copy,
    _rows_unpadded; the flat buffer stays their oracle in the tests)."""
    buf = _buffer(g, x.dtype)
    inner, src = _interior(buf, g), x.transpose(1, 0, 2, 3)

    grid = _grid(buf, g)
    bottom, right = g.top + g.H, g.left + g.W

    def fill(c0: int, c1: int) -> None:  # the padding only: the interior is overwritten anyway
        v = grid[c0:c1]
        v[:, :, :g.top] = 0
        v[:, :, bottom:] = 0
        v[:, :, g.top:bottom, :g.left] = 0
        v[:, :, g.top:bottom, right:] = 0
        if g.flat:
            buf[c0:c1, g.M:] = 0
        inner[c0:c1] = src[c0:c1]

    map_channels(fill, g.C, buf[0].nbytes)
    return buf


def _unpad(buf: np.ndarray, g: ConvGeom) -> np.ndarray:
    """Padded buffer -> (N, C, H, W): what lands in the padding is dropped."""
    out = np.empty((g.N, g.C, g.H, g.W), buf.dtype)
    inner, dst = _interior(buf, g), out.transpose(1, 0, 2, 3)
    map_channels(lambda c0, c1: np.copyto(dst[c0:c1], inner[c0:c1]), g.C, buf[0].nbytes)
    return out


def _to_cols(y: np.ndarray, g: ConvGeom) -> np.ndarray:
    """Output-shaped (N, F, OH, OW) -> (G, F/G, M) GEMM operand, zeros in the garbage columns."""
    src = y.transpose(1, 0, 2, 3)
    if g.flat:
        cols = np.empty((g.F, g.N, g.Hb, g.Wb), y.dtype)

        def fill(c0: int, c1: int) -> None:
            cols[c0:c1] = 0
            cols[c0:c1, :, :g.OH, :g.OW] = src[c0:c1]
    else:
        cols = np.empty((g.F, g.N, g.OH, g.OW), y.dtype)

        def fill(c0: int, c1: int) -> None:
            cols[c0:c1] = src[c0:c1]

    map_channels(fill, g.F, cols[0].nbytes)
    return cols.reshape(g.G, g.F // g.G, g.M)


def _from_cols(cols: np.ndarray, g: ConvGeom, b: np.ndarray | None = None, relu: bool = False) -> np.ndarray:
    """(G, F/G, M) -> (N, F, OH, OW), garbage columns cropped, plus the bias b (F,) if given, then
    max(0, .) if relu (inference fuses the activation into this copy)."""
    grid = cols.reshape(g.F, g.N, g.Hb, g.Wb)[:, :, :g.OH, :g.OW] if g.flat else cols.reshape(g.F, g.N, g.OH, g.OW)
    out = np.empty((g.N, g.F, g.OH, g.OW), cols.dtype)
    dst = out.transpose(1, 0, 2, 3)

    def fill(c0: int, c1: int) -> None:
        _store(dst[c0:c1], grid[c0:c1], None if b is None else b[c0:c1, None, None, None], relu)

    map_channels(fill, g.F, grid[0].nbytes)
    return out


def _store(dst: np.ndarray, src: np.ndarray, b: np.ndarray | None, relu: bool) -> None:
    """dst = src (+ b, broadcast), then max(0, .) if relu: the epilogue of every crop out of a GEMM buffer."""
    if b is None:
        np.copyto(dst, src)
    else:
        np.add(src, b, out=dst)
    if relu:
        np.maximum(dst, 0, out=dst)


def _conv1x1(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """A 1x1 stride-1 unpadded convolution (the segmentation head) is one product per image,
    (F, C) @ (C, H*W), with no buffer or gather: blocks of columns on all cores."""
    N, C, H, W = x.shape
    F = w.shape[0]
    w2, xs = w.reshape(F, C), np.ascontiguousarray(x).reshape(N, C, H * W)
    out = np.empty((N, F, H * W), x.dtype)
    step = max(256, (1 << 20) // (max(C, F) * x.itemsize))

    def block(m0: int, m1: int) -> None:  # columns of image n = m0 // (H*W); blocks never span images
        n, a, c = m0 // (H * W), m0 % (H * W), m0 % (H * W) + (m1 - m0)
        o = out[n, :, a:c]
        np.matmul(w2, xs[n, :, a:c], out=o)
        if b is not None:
            o += b[:, None]

    map_blocks(block, [(n * H * W + a, n * H * W + min(a + step, H * W)) for n in range(N) for a in range(0, H * W, step)])
    return out.reshape(N, F, H, W)


BLOCK_BYTES = 2 << 20  # bytes of gathered input per block: small enough to stay in cache while it is used


def _blocks(g: ConvGeom, dtype) -> list[tuple[int, int]]:
    """Ranges of output columns whose gathered input takes about BLOCK_BYTES, so that it is built
    and used while still in cache: KW*C rows (_rows) when flat, KH*KW*C rows (_im2col) when
    strided. Flat layout: at least the tail long (see _adjoint), and at least as many blocks as
    workers where that leaves 256 columns a block. Strided layout: whole images."""
    taps = g.KW if g.flat else g.KH * g.KW
    B = BLOCK_BYTES // (taps * max(g.C, g.F) * np.dtype(dtype).itemsize)
    if g.flat:  # and at least one block per worker when that leaves blocks of 256 columns or more; whole rows
        B = max(256, min(B, -(-g.M // workers())), _tail(g))
        B = -(-B // g.Wb) * g.Wb
    else:
        B = max(1, B // (g.OH * g.OW)) * g.OH * g.OW
    return [(m0, min(m0 + B, g.M)) for m0 in range(0, g.M, B)]


# --- strided layout: im2col, KH*KW views of the padded input per block -------------------------

def _tap(buf: np.ndarray, g: ConvGeom, i: int, j: int, m0: int, m1: int) -> np.ndarray:
    """View of buf (C, N, Hb, Wb): what offset (i, j) reads for output columns m0:m1 (the strided
    window of images m0/(OH*OW)...), shaped (G, C/G, n, OH, OW)."""
    n0, n1 = m0 // (g.OH * g.OW), m1 // (g.OH * g.OW)
    v = window(buf[:, n0:n1], i, j, g.OH, g.OW, g.stride, g.dilation)
    return v.reshape(g.G, g.C // g.G, *v.shape[1:])


def _im2col(buf: np.ndarray, g: ConvGeom, m0: int, m1: int) -> np.ndarray:
    """Columns m0:m1 of the im2col matrix, (G, KH*KW*C/G, m1-m0), rows ordered (offset, channel)."""
    cols = np.empty((g.G, g.KH * g.KW, g.C // g.G, m1 - m0), buf.dtype)
    for k, (i, j) in enumerate(offsets(g.KH, g.KW)):
        tap = _tap(buf, g, i, j, m0, m1)
        cols[:, k].reshape(tap.shape)[...] = tap
    return cols.reshape(g.G, -1, m1 - m0)


def _col2im_add(buf: np.ndarray, g: ConvGeom, m0: int, m1: int, cols: np.ndarray) -> None:
    """Adjoint of _im2col: each row of cols is added back where it was read from."""
    cols = cols.reshape(g.G, g.KH * g.KW, g.C // g.G, m1 - m0)
    for k, (i, j) in enumerate(offsets(g.KH, g.KW)):
        tap = _tap(buf, g, i, j, m0, m1)
        tap += cols[:, k].reshape(tap.shape)


def _wmat(w: np.ndarray, g: ConvGeom) -> np.ndarray:
    """(F, C/G, KH, KW) -> (G, F/G, KH*KW*C/G), columns in im2col's row order (i, j, channel)."""
    return np.ascontiguousarray(w.reshape(g.G, g.F // g.G, g.C // g.G, g.KH, g.KW).transpose(0, 1, 3, 4, 2)
                                ).reshape(g.G, g.F // g.G, -1)


def _from_wmat(wm: np.ndarray, g: ConvGeom) -> np.ndarray:
    """(G, F/G, KH*KW*C/G) -> (F, C/G, KH, KW)."""
    return np.ascontiguousarray(wm.reshape(g.F, g.KH, g.KW, g.C // g.G).transpose(0, 3, 1, 2))


# --- flat layout: KW shifted copies per block, one product per kernel row ------------------------
#
# In the flat layout offset (i, j) reads column m + i*dh*Wb + j*dw. Gather only the KW column
# shifts, R[(j, c), t] = buf[c, m0 + j*dw + t] (KW copies of the input, not KH*KW): kernel row i
# then reads the contiguous columns i*dh*Wb ... of R, so
#     out[:, m0:m1] = sum_i W_i @ R[:, i*dh*Wb : i*dh*Wb + B]      W_i: (F, KW*C), the row-i weights
# KH products with an inner dimension of KW*C, on 1/KH of im2col's copying: faster than im2col on the
# default net's layers (docs/benchmarks.md, "Measurements behind the code").

def _reach(g: ConvGeom) -> int:
    """Columns between kernel rows in the flat layout."""
    return g.dilation[0] * g.Wb


class Unpadded(NamedTuple):
    """The input (N, C, H, W) itself, standing for its padded flat buffer: _rows reads it directly."""

    x: np.ndarray

    @property
    def dtype(self) -> np.dtype:
        return self.x.dtype


def _rows(buf, g: ConvGeom, m0: int, n: int, full: bool = False) -> np.ndarray:
    """R for columns m0 .. m0+n: (G, KW*C/G, n), rows ordered (column shift j, channel); with
    full, every offset's shift: (G, KH*KW*C/G, n), rows in im2col's order (i, j, channel).
    buf: the padded flat buffer, or Unpadded(x) (then m0 and n must be whole rows of the grid)."""
    if isinstance(buf, Unpadded):
        return _rows_unpadded(buf.x, g, m0, n, full)
    shifts = [i * _reach(g) + j * g.dilation[1] for i, j in offsets(g.KH if full else 1, g.KW)]
    R = np.empty((g.G, len(shifts), g.C // g.G, n), buf.dtype)
    for k, shift in enumerate(shifts):
        a = m0 + shift
        R[:, k] = buf[:, a:a + n].reshape(g.G, g.C // g.G, n)
    return R.reshape(g.G, -1, n)


def _rows_unpadded(x: np.ndarray, g: ConvGeom, m0: int, n: int, full: bool) -> np.ndarray:
    """_rows straight from x, with no padded buffer (a pass over the input less per conv): each shift's copy
    is, grid row by grid row, x's row where the row is inside the image, zeros in the padding, and zeros
    where the shift wraps into the next row (only garbage columns read there)."""
    Wb, Hb, dh, dw = g.Wb, g.Hb, g.dilation[0], g.dilation[1]
    r0, nrows = m0 // Wb, n // Wb
    taps = list(offsets(g.KH if full else 1, g.KW))
    R = np.empty((g.G, len(taps), g.C // g.G, nrows, Wb), x.dtype)
    xg = x.reshape(g.N, g.G, g.C // g.G, g.H, g.W)
    for k, (i, j) in enumerate(taps):
        Rk, dc = R[:, k], j * dw  # (G, C/G, nrows, Wb); this tap reads grid column u + dc for its column u
        u0, u1 = max(0, g.left - dc), max(0, min(Wb - dc, g.left + g.W - dc))  # its columns inside the image
        u1 = max(u0, u1)
        Rk[..., :u0] = 0
        Rk[..., u1:] = 0  # right padding, and the wrap into the next row
        q = 0
        while q < nrows:
            img, hb = divmod(r0 + i * dh + q, Hb)
            take = min(nrows - q, Hb - hb)  # grid rows of this image
            if img >= g.N:  # the buffer's tail, past the last image
                Rk[:, :, q:, u0:u1] = 0
                break
            h0 = min(max(g.top, hb), hb + take)  # the image's own rows among them: h0 .. h1 (grid rows)
            h1 = min(max(g.top + g.H, h0), hb + take)
            Rk[:, :, q:q + h0 - hb, u0:u1] = 0  # padding rows above the image
            Rk[:, :, q + h1 - hb:q + take, u0:u1] = 0  # and below it
            if h1 > h0 and u1 > u0:
                Rk[:, :, q + h0 - hb:q + h1 - hb, u0:u1] = xg[img, :, :, h0 - g.top:h1 - g.top,
                                                               u0 + dc - g.left:u1 + dc - g.left]
            q += take
    return R.reshape(g.G, -1, n)


def _full(g: ConvGeom) -> bool:
    """Few input channels (the RGB input layer): KW*C/G rows make a product too thin to run
    well, so gather every offset (im2col, KH*KW*C/G rows) and run one product instead of KH."""
    return g.KW * (g.C // g.G) < 32


def _wrow(wm: np.ndarray, g: ConvGeom, i: int) -> np.ndarray:
    """Kernel row i of a weight matrix (G, F/G, KH*KW*C/G): a view (G, F/G, KW*C/G)."""
    return wm.reshape(g.G, g.F // g.G, g.KH, -1)[:, :, i]


# --- the three products ----------------------------------------------------------------------

def _forward(buf: np.ndarray, wm: np.ndarray, g: ConvGeom) -> np.ndarray:
    """W @ im2col(buf): (G, F/G, M), for the strided layout (the flat one crops each block as it goes:
    _forward_nchw)."""
    out = np.empty((g.G, g.F // g.G, g.M), buf.dtype)

    def block(m0: int, m1: int) -> None:
        _product(buf, wm, g, m0, m1, out[..., m0:m1])

    map_blocks(block, _blocks(g, buf.dtype))
    return out


def _product(buf: np.ndarray, wm: np.ndarray, g: ConvGeom, m0: int, m1: int, o: np.ndarray) -> None:
    """Columns m0:m1 of W @ im2col(buf) into o (G, F/G, m1-m0)."""
    if not g.flat:
        np.matmul(wm, _im2col(buf, g, m0, m1), out=o)
        return
    B, s = m1 - m0, _reach(g)
    if _full(g):
        np.matmul(wm, _rows(buf, g, m0, B, full=True), out=o)
        return
    R = _rows(buf, g, m0, B + (g.KH - 1) * s)
    if g.F // g.G <= 32:  # few outputs: all kernel rows in one product, P_i = W_i @ R, then shifted adds
        Fg = g.F // g.G
        P = np.matmul(wm.reshape(g.G, Fg, g.KH, -1).swapaxes(1, 2).reshape(g.G, g.KH * Fg, -1), R)
        np.add(P[:, :Fg, :B], P[:, Fg:2 * Fg, s:s + B], out=o) if g.KH > 1 else np.copyto(o, P[..., :B])
        for i in range(2, g.KH):
            o += P[:, i * Fg:(i + 1) * Fg, i * s:i * s + B]
        return
    np.matmul(_wrow(wm, g, 0), R[..., :B], out=o)
    for i in range(1, g.KH):
        o += _wrow(wm, g, i) @ R[..., i * s:i * s + B]


def _forward_nchw(buf: np.ndarray, wm: np.ndarray, g: ConvGeom, b: np.ndarray | None = None,
                  relu: bool = False) -> np.ndarray:
    """_from_cols(_forward(buf, wm, g), g, b, relu) without the (F, M) buffer between them: in the flat layout
    each block of whole padded rows is cropped into the NCHW output (bias and ReLU added) by the worker that
    computed it, while it is in cache."""
    if not g.flat:
        return _from_cols(_forward(buf, wm, g), g, b, relu)
    out = np.empty((g.N, g.F, g.OH, g.OW), buf.dtype)

    def block(m0: int, m1: int) -> None:
        o = np.empty((g.G, g.F // g.G, m1 - m0), buf.dtype)
        _product(buf, wm, g, m0, m1, o)
        rows = o.reshape(g.F, -1, g.Wb)  # block = whole rows of the (N*Hb, Wb) grid
        r, r1 = m0 // g.Wb, m1 // g.Wb
        while r < r1:
            n, rr = divmod(r, g.Hb)
            take = min(r1 - r, g.Hb - rr)  # this image's rows in the block
            k = min(take, g.OH - rr)  # the valid ones (the rest is padding's garbage)
            if k > 0:
                q = r - m0 // g.Wb
                _store(out[n, :, rr:rr + k], rows[:, q:q + k, :g.OW], None if b is None else b[:, None, None], relu)
            r += take

    map_runs(block, _blocks(g, buf.dtype))
    return out


def _adjoint(cols: np.ndarray, wm: np.ndarray, g: ConvGeom) -> np.ndarray:
    """col2im(W^T @ cols): the padded buffer of dL/d(input)."""
    buf = _zeros_buffer(g, cols.dtype)

    def block(m0: int, m1: int) -> None:
        d = cols[..., m0:m1]
        if not g.flat:
            _col2im_add(buf, g, m0, m1, wm.swapaxes(-1, -2) @ d)
            return
        B, s = m1 - m0, _reach(g)
        n = B + (g.KH - 1) * s
        dR = np.empty((g.G, g.KW, g.C // g.G, n), cols.dtype)  # adjoint of _rows' R
        flat = dR.reshape(g.G, -1, n)
        np.matmul(_wrow(wm, g, 0).swapaxes(-1, -2), d, out=flat[..., :B])
        flat[..., B:] = 0
        for i in range(1, g.KH):
            flat[..., i * s:i * s + B] += _wrow(wm, g, i).swapaxes(-1, -2) @ d
        for j in range(g.KW):
            a = m0 + j * g.dilation[1]
            v = buf[:, a:a + n].reshape(g.G, g.C // g.G, n)
            v += dR[:, j]

    blocks = _blocks(g, cols.dtype)
    if g.flat:  # a block's writes reach into the next block's columns (by the tail)
        map_runs(block, blocks, defer_last=True)
    else:  # whole images: the windows of one image stay in that image
        map_blocks(block, blocks)
    return buf


def _wgrad(buf: np.ndarray, cols: np.ndarray, g: ConvGeom) -> np.ndarray:
    """cols @ im2col(buf)^T: (G, F/G, KH*KW*C/G)."""

    def block(m0: int, m1: int) -> np.ndarray:
        d = cols[..., m0:m1]
        if not g.flat:
            return d @ _im2col(buf, g, m0, m1).swapaxes(-1, -2)
        B, s = m1 - m0, _reach(g)
        R = _rows(buf, g, m0, B + (g.KH - 1) * s)
        dT = np.ascontiguousarray(d.swapaxes(-1, -2))  # R_i @ d^T with d^T contiguous: 2x d @ R_i^T's speed here
        dwT = np.empty((g.G, g.KH, g.KW * (g.C // g.G), g.F // g.G), cols.dtype)
        for i in range(g.KH):
            np.matmul(R[..., i * s:i * s + B], dT, out=dwT[:, i])
        return dwT.transpose(0, 3, 1, 2).reshape(g.G, g.F // g.G, -1)

    dw, *rest = (map_runs if g.flat else map_blocks)(block, _blocks(g, cols.dtype))
    for part in rest:
        dw += part  # each block's result is its own array
    return dw


def _tiled(g: ConvGeom) -> bool:
    """Windows that tile the input exactly (stride = kernel, no padding, no dilation, one group):
    each output pixel reads its own KH x KW patch, as 2x2 stride-2 pooling-like convs do."""
    return (g.stride == (g.KH, g.KW) and g.dilation == (1, 1) and g.G == 1 and g.top == g.left == 0
            and (g.H, g.W) == (g.OH * g.KH, g.OW * g.KW))


def _tiled_input_grad(dy: np.ndarray, w: np.ndarray, g: ConvGeom) -> np.ndarray:
    """_input_grad when _tiled(g): every output pixel's gradient goes to its own patch, so it is one
    product per block of rows, (C*KH*KW, F) @ (F, rows*OW), and a depth-to-space copy, with no
    gathers or adds (the 2x2 stride-2 transposed convs of the U-Net's decoder)."""
    wt = np.ascontiguousarray(w.reshape(g.F, -1).T)  # (C*KH*KW, F), rows ordered (c, i, j)
    out = np.empty((g.N, g.C, g.OH, g.KH, g.OW, g.KW), dy.dtype)
    rows = max(1, (1 << 20) // max(1, wt.shape[0] * g.OW * dy.itemsize))  # about 1 MB of product a block

    def block(r0: int, r1: int) -> None:  # rows r0:r1 of image n = r0 // OH (blocks never span images)
        n, a, b = r0 // g.OH, r0 % g.OH, r0 % g.OH + (r1 - r0)
        t = (wt @ dy[n, :, a:b].reshape(g.F, -1)).reshape(g.C, g.KH, g.KW, b - a, g.OW)
        for i, j in offsets(g.KH, g.KW):  # one strided copy per kernel offset: 5x one transposing copy here
            out[n, :, a:b, i, :, j] = t[:, i, j]

    blocks = [(n * g.OH + a, n * g.OH + min(a + rows, g.OH)) for n in range(g.N) for a in range(0, g.OH, rows)]
    map_blocks(block, blocks)
    return out.reshape(g.N, g.C, g.H, g.W)


def _input_grad(dy: np.ndarray, w: np.ndarray, g: ConvGeom) -> np.ndarray:
    """dL/d(input) (N, C, H, W) of the convolution g, from dy (N, F, OH, OW).

    With stride 1 it is itself a convolution, run by the forward path (no scatter-adds):
        dx[c, y, x] = sum_{f,i,j} w[f, c, i, j] * dy[f, y + top - i*dh, x + left - j*dw]
    is dy, padded by (KH-1)*dh - top before and (KH-1)*dh - bottom after, correlated with the kernel
    flipped in both axes and with in/out channels swapped (per group). Padding wider than the
    kernel's reach (a negative pad here), and strides, take the adjoint path instead."""
    pads = ((g.KH - 1) * g.dilation[0] - g.top, g.H + g.top - g.OH,
            (g.KW - 1) * g.dilation[1] - g.left, g.W + g.left - g.OW)
    if _tiled(g):
        return _tiled_input_grad(np.ascontiguousarray(dy), w, g)
    if not g.flat or min(pads) < 0:
        return _unpad(_adjoint(_to_cols(dy, g), _wmat(w, g), g), g)
    Fg, Cg = g.F // g.G, g.C // g.G
    wt = w.reshape(g.G, Fg, Cg, g.KH, g.KW).transpose(0, 2, 1, 3, 4).reshape(g.C, Fg, g.KH, g.KW)[..., ::-1, ::-1]
    dx, _ = conv2d_forward(dy, wt, None, padding=pads, dilation=g.dilation, groups=g.G)
    return dx


# --- public API ------------------------------------------------------------------------------

class ConvCache(NamedTuple):
    x: np.ndarray
    w: np.ndarray
    has_bias: bool
    geom: ConvGeom


def _check_bias(b: np.ndarray | None, channels: int) -> None:
    if b is not None and b.shape != (channels,):
        raise UsageError(f"bias has shape {b.shape}, the output has {channels} channels")


def _add_bias(out: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    if b is not None:
        out += b.reshape(1, -1, 1, 1)
    return out


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, stride=1, padding=0,
                   dilation=1, groups: int = 1) -> tuple[np.ndarray, ConvCache]:
    """x (N, C, H, W), w (F, C/groups, KH, KW), b (F,) or None -> out (N, F, OH, OW), cache.

    padding: any form of cvtool.arithmetic.resolve_padding (int, pair, 4-tuple, 'same', 'valid').
    """
    x, w, b = as_float(x, w, b)
    _check(x, w, groups, "conv2d")
    g = conv_geom(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation, groups=groups)
    _check_bias(b, g.F)
    if is_depthwise(g, w.shape):  # no channel sum: shifted multiply-adds, not C one-row products (depthwise.py)
        return depthwise_forward(x, w, b, g)
    if (g.KH, g.KW, g.G) == (1, 1, 1) and g.flat and (g.Hb, g.Wb, g.OH, g.OW) == (g.H, g.W, g.H, g.W):
        out = _conv1x1(x, w, b)
    else:
        out = _forward_nchw(_source(x, g), _wmat(w, g), g, b)
    return out, ConvCache(x, w, b is not None, g)


def conv2d_relu(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, stride=1, padding=0, dilation=1,
                groups: int = 1) -> np.ndarray:
    """max(0, conv2d(x, w, b)) for inference: the activation is applied in the copy out of the
    GEMM buffer, saving a pass over the output. No cache (nothing to differentiate)."""
    x, w, b = as_float(x, w, b)
    _check(x, w, groups, "conv2d")
    g = conv_geom(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation, groups=groups)
    _check_bias(b, g.F)
    if is_depthwise(g, w.shape):
        return depthwise_forward(x, w, b, g, relu=True)[0]
    return _forward_nchw(_source(x, g), _wmat(w, g), g, b, relu=True)


def conv2d_backward(dout: np.ndarray, cache: ConvCache):
    """dout (N, F, OH, OW) -> dx (N, C, H, W), dw (F, C/G, KH, KW), db (F,) or None."""
    if isinstance(cache, DepthwiseCache):
        return depthwise_backward(dout, cache)
    x, w, has_bias, g = cache
    dout = np.asarray(dout, x.dtype)
    dx = _input_grad(dout, w, g)
    dw = _from_wmat(_wgrad(_source(x, g), _to_cols(dout, g), g), g)
    return dx, dw, (dout.sum(axis=(0, 2, 3)) if has_bias else None)


def conv_transpose2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, stride=1, padding=0,
                             output_padding=0, dilation=1, groups: int = 1) -> tuple[np.ndarray, ConvCache]:
    """x (N, C_in, H, W), w (C_in, C_out/groups, KH, KW) as torch/ONNX store it, b (C_out,) or None
    -> out (N, C_out, OH, OW) with OH, OW from cvtool.arithmetic.conv_transpose2d_output."""
    x, w, b = as_float(x, w, b)
    _check(x, w, groups, "conv_transpose2d")
    g = conv_transpose_geom(x.shape, w.shape, stride=stride, padding=padding, output_padding=output_padding,
                            dilation=dilation, groups=groups)
    _check_bias(b, g.C)
    out = _input_grad(x, w, g)
    return _add_bias(out, b), ConvCache(x, w, b is not None, g)


def conv_transpose2d_backward(dout: np.ndarray, cache: ConvCache):
    """dout (N, C_out, OH, OW) -> dx (N, C_in, H, W), dw (C_in, C_out/G, KH, KW), db (C_out,) or None."""
    x, w, has_bias, g = cache
    dout = np.asarray(dout, x.dtype)
    src = _source(dout, g)
    dx = _forward_nchw(src, _wmat(w, g), g)
    dw = _from_wmat(_wgrad(src, _to_cols(x, g), g), g)
    return dx, dw, (dout.sum(axis=(0, 2, 3)) if has_bias else None)


__all__ = ["ConvCache", "ConvGeom", "conv_geom", "conv_transpose_geom", "conv2d_forward", "conv2d_backward", "conv2d_relu",
           "conv_transpose2d_forward", "conv_transpose2d_backward"]
