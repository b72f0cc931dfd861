"""A convolution is a matrix multiplication: y = C x, with x and y flattened row by row.

C has one row per output pixel and one column per input pixel; row r holds the kernel at the
place its window covers (zero elsewhere, and padding pixels simply have no column). The
transposed convolution is C^T: it maps a y of the output's shape back to the input's shape, and
equals conv_transpose2d(y, w) with the same stride, padding and dilation (the gradient dL/dx).

One channel, small sizes: this is for looking at, not for computing. Imported lazily (numpy).
"""

from __future__ import annotations

import os

import numpy as np

from cvtool import arithmetic as A
from cvtool.errors import DataError, UsageError

MAX_DIM = 64  # rows and columns of a matrix we are willing to print


def conv_matrix(w: np.ndarray, in_hw: tuple[int, int], *, stride=1, padding: A.PaddingArg = 0, dilation=1,
                out_hw: tuple[int, int] | None = None) -> np.ndarray:
    """C of shape (OH*OW, H*W) with C @ x.ravel() == conv2d(x, w).ravel() (cross-correlation, as in PyTorch).

    out_hw defaults to the convolution's output size; a transposed convolution passes its own input
    size there (with output_padding the two differ: the extra rows/columns get no row of C).
    """
    KH, KW = w.shape
    H, W = in_hw
    (sh, sw), (dh, dw) = A.pair(stride, "stride"), A.pair(dilation, "dilation")
    pads = A.resolve_padding(padding, kernel=(KH, KW), stride=(sh, sw), dilation=(dh, dw), input_size=(H, W))
    if out_hw is None:
        out_hw = (A.conv_output(H, KH, sh, pads[0], dh), A.conv_output(W, KW, sw, pads[1], dw))
    OH, OW = out_hw
    top, left = pads[0][0], pads[1][0]
    C = np.zeros((OH * OW, H * W), dtype=np.result_type(w.dtype, np.float64))
    for oy in range(OH):
        for ox in range(OW):
            for ty in range(KH):
                iy = oy * sh - top + ty * dh  # input row under kernel row ty
                if not 0 <= iy < H:
                    continue  # a padding row: zero, no column
                for tx in range(KW):
                    ix = ox * sw - left + tx * dw
                    if 0 <= ix < W:
                        C[oy * OW + ox, iy * W + ix] += w[ty, tx]
    return C


def check_size(rows: int, cols: int) -> None:
    if rows > MAX_DIM or cols > MAX_DIM:
        raise UsageError(f"the matrix would be {rows}x{cols}: too large to show (at most {MAX_DIM}x{MAX_DIM})",
                         hint="use an input of at most 8x8, e.g. -i 4")


def parse_values(text: str, what: str) -> np.ndarray:
    """'4,5,8;1,8,8' (rows separated by ';') or a path to a 2-D .npy file -> a 2-D float array."""
    t = text.strip()
    if t.lower().endswith(".npy"):
        if not os.path.isfile(t):
            raise DataError(f"{what}: no such file {t!r}")
        try:
            a = np.load(t, allow_pickle=False)
        except Exception as e:  # a corrupt file, a pickle
            raise DataError(f"{what}: cannot read {t!r}: {e}") from None
        a = np.squeeze(a) if a.ndim > 2 else a
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise UsageError(f"{what}: expected a 2-D array in {t!r}, got shape {a.shape}")
        return a.astype(np.float64)
    rows = [r for r in t.split(";") if r.strip()]
    try:
        vals = [[float(v) for v in r.replace(",", " ").split()] for r in rows]
    except ValueError:
        raise UsageError(f"malformed {what} {text!r}", hint="numbers separated by ',' with rows separated by ';'") from None
    if not vals or any(len(r) != len(vals[0]) for r in vals) or not vals[0]:
        raise UsageError(f"malformed {what} {text!r}: rows of different lengths or no values")
    return np.array(vals, dtype=np.float64)


def seeded_ints(shape: tuple[int, int], seed: int, high: int) -> np.ndarray:
    """Small integers 0..high-1, so that every product can be checked by hand."""
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(np.float64)


__all__ = ["conv_matrix", "check_size", "parse_values", "seeded_ints", "MAX_DIM"]
