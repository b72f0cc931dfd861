"""A convolution is a matrix multiplication: y = C x, with x and y flattened row by row.

C has one row per output pixel and one column per input pixel; row r holds the kernel at the
place its window covers (zero elsewhere, and padding pixels simply have no column). The
transposed convolution is C^T: it maps a y of the output's shape back to the input's shape, and
equals conv_transpose2d(y, w) with the same stride, padding and dilation (the gradient dL/dx).

One channel, small sizes: this is for looking at, not for computing. Imported lazily (numpy).
matrix_doc is `convcalc --matrix`: the worked example, its matrix and the product.
"""

from __future__ import annotations

import numpy as np

from cvtool.arithmetic import PaddingArg, conv_output, pair, resolve_padding
from cvtool.convcalc.chain import LayerSpec, output_hw
from cvtool.convcalc.text import params_text, title
from cvtool.convcalc.values import layer_values, pads_arg
from cvtool.errors import UsageError

MAX_DIM = 64  # rows and columns of a matrix we are willing to print


def conv_matrix(w: np.ndarray, in_hw: tuple[int, int], *, stride=1, padding: PaddingArg = 0, dilation=1,
                out_hw: tuple[int, int] | None = None) -> np.ndarray:
    """C of shape (OH*OW, H*W) with C @ x.ravel() == conv2d(x, w).ravel() (cross-correlation, as in PyTorch).

    out_hw defaults to the convolution's output size; a transposed convolution passes its own input
    size there (with output_padding the two differ: the extra rows/columns get no row of C).
    """
    KH, KW = w.shape
    H, W = in_hw
    (sh, sw), (dh, dw) = pair(stride, "stride"), pair(dilation, "dilation")
    pads = resolve_padding(padding, kernel=(KH, KW), stride=(sh, sw), dilation=(dh, dw), input_size=(H, W))
    if out_hw is None:
        out_hw = (conv_output(H, KH, sh, pads[0], dh), conv_output(W, KW, sw, pads[1], dw))
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


def matrix_doc(spec: LayerSpec, hw, x_text, w_text, seed: int, kernel_given: bool) -> dict:
    """x, w, the matrix applied (C, or C^T for a transposed convolution) and its product, flat and reshaped."""
    if spec.kind == "maxpool":
        raise UsageError("max pooling is not linear: it has no matrix", hint="use --pool avg, or a convolution")
    if spec.ceil_mode:
        raise UsageError("--matrix does not take --ceil-mode")
    spec, hw, xv, wv = layer_values(spec, hw, x_text, w_text, seed, kernel_given)
    o, pads = output_hw(spec, hw)
    stride, dilation = spec.stride, spec.dilation
    if spec.kind == "tconv":
        # C maps the tconv's output size o down to its input size i; what is applied is C^T
        check_size(hw[0] * hw[1], o[0] * o[1])
        C = conv_matrix(wv, o, stride=stride, padding=spec.padding, dilation=dilation, out_hw=hw)
        applied = C.T
    else:
        check_size(o[0] * o[1], hw[0] * hw[1])
        C = conv_matrix(wv, hw, stride=stride, padding=pads_arg(pads), dilation=dilation)
        applied = C
    y = applied @ xv.ravel()
    return {"mode": "matrix", "op": spec.kind, "title": title(spec.kind), "input": list(hw), "output": list(o),
            "params_text": params_text(spec, pads), "x": xv, "w": wv, "matrix": applied,
            "matrix_shape": list(applied.shape), "applied": "C^T" if spec.kind == "tconv" else "C",
            "result": y.reshape(o), "result_flat": y}


__all__ = ["conv_matrix", "check_size", "matrix_doc", "MAX_DIM"]
