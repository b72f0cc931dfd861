"""--matrix: a convolution (or average pooling) as its matrix C, a transposed convolution as C^T."""

from __future__ import annotations

from cvtool.convcalc import matrix as M
from cvtool.convcalc.chain import LayerSpec, output_hw
from cvtool.convcalc.text import params_text, title
from cvtool.convcalc.values import layer_values, pads_arg
from cvtool.errors import UsageError


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
        M.check_size(hw[0] * hw[1], o[0] * o[1])
        C = M.conv_matrix(wv, o, stride=stride, padding=spec.padding, dilation=dilation, out_hw=hw)
        applied = C.T
    else:
        M.check_size(o[0] * o[1], hw[0] * hw[1])
        C = M.conv_matrix(wv, hw, stride=stride, padding=pads_arg(pads), dilation=dilation)
        applied = C
    y = applied @ xv.ravel()
    return {"mode": "matrix", "op": spec.kind, "title": title(spec.kind), "input": list(hw), "output": list(o),
            "params_text": params_text(spec, pads), "x": xv, "w": wv, "matrix": applied,
            "matrix_shape": list(applied.shape), "applied": "C^T" if spec.kind == "tconv" else "C",
            "result": y.reshape(o), "result_flat": y}


__all__ = ["matrix_doc"]
