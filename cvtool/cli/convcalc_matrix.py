"""`cvtool convcalc --matrix`: a convolution (or average pooling) as its matrix C, a transposed convolution as C^T."""

from __future__ import annotations

from typing import Any

from cvtool.chain import LayerSpec, output_hw
from cvtool.cli.convcalc import _print, _title, dims, hw_text, params_text
from cvtool.cli.output import out
from cvtool.errors import UsageError


def layer_values(spec: LayerSpec, hw, x_text, w_text, seed: int, kernel_given: bool, *, fixed_avg: bool = True):
    """(spec, hw, x, w) for a one-channel worked example: --x / --w as given (their shapes set the input size and
    the kernel), else seeded small integers; average pooling's w is 1/(KH*KW) (fixed_avg), max pooling has none."""
    import numpy as np

    from cvtool import convmatrix as M

    if spec.kind in ("maxpool", "avgpool"):
        if w_text is not None:
            raise UsageError(f"--pool {spec.kind[:3]} has no kernel weights to give: drop --w")
        wv = np.full(spec.kernel, 1.0 / (spec.kernel[0] * spec.kernel[1])) if spec.kind == "avgpool" and fixed_avg else None
    elif w_text is not None:
        wv = M.parse_values(w_text, "--w")
        if kernel_given and tuple(wv.shape) != spec.kernel:
            raise UsageError(f"--w is {wv.shape[0]}x{wv.shape[1]} but --kernel says {dims(spec.kernel)}")
        from dataclasses import replace

        spec = replace(spec, kernel=tuple(wv.shape))
    else:
        wv = M.seeded_ints(spec.kernel, seed + 1, 5)
    if x_text is not None:
        xv = M.parse_values(x_text, "--x")
        if hw is not None and tuple(xv.shape) != tuple(hw):
            raise UsageError(f"--x is {xv.shape[0]}x{xv.shape[1]} but --input says {dims(hw)}")
        hw = tuple(xv.shape)
    else:
        hw = hw or ((2, 2) if spec.kind == "tconv" else (4, 4))
        xv = M.seeded_ints(hw, seed, 10)
    return spec, hw, xv, wv


def matrix_mode(spec: LayerSpec, hw, x_text, w_text, seed: int, kernel_given: bool) -> dict:
    from cvtool import convmatrix as M

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
    return {"mode": "matrix", "op": spec.kind, "title": _title(spec.kind), "input": list(hw), "output": list(o),
            "params_text": params_text(spec, pads), "x": xv, "w": wv, "matrix": applied,
            "matrix_shape": list(applied.shape), "applied": "C^T" if spec.kind == "tconv" else "C",
            "result": y.reshape(o), "result_flat": y}


def pads_arg(pads) -> tuple[int, int, int, int]:
    return (pads[0][0], pads[0][1], pads[1][0], pads[1][1])


def _num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


def _grid(a) -> Any:
    from rich import box
    from rich.table import Table

    t = Table(show_header=False, box=box.SQUARE, padding=(0, 1))
    for _ in range(a.shape[1]):
        t.add_column(justify="right")
    for r in a:
        t.add_row(*(_num(v) for v in r))
    return t


def render_matrix(doc: dict) -> None:
    from rich import box
    from rich.table import Table

    tconv = doc["op"] == "tconv"
    xname = "y" if tconv else "x"
    (ih, iw), (oh, ow) = doc["input"], doc["output"]
    _print(f"{doc['title']} as a matrix: input {hw_text(doc['input'])} -> output {hw_text(doc['output'])}, "
           f"{doc['params_text']}", style="bold")
    _print(f"{xname} (input):")
    out().print(_grid(doc["x"]))
    _print("w (kernel):")
    out().print(_grid(doc["w"]))
    rows, cols = doc["matrix_shape"]
    _print(f"{doc['applied']} ({rows}x{cols}): row r = output pixel r, column j = input pixel j, both flattened "
           f"row by row ({xname}[j // {iw}, j % {iw}])", style="bold")
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True)
    t.add_column("", style="dim")
    for j in range(cols):
        t.add_column(str(j), justify="right")
    for n, row in enumerate(doc["matrix"]):
        t.add_row(str(n), *(f"[dim]{_num(v)}[/dim]" if v == 0 else _num(v) for v in row))
    out().print(t)
    flat = ", ".join(_num(v) for v in doc["result_flat"])
    _print(f"{doc['applied']} {xname} = [{flat}]", style="cyan")
    what = "conv_transpose2d(y, w)" if tconv else ("avg_pool2d(x)" if doc["op"] == "avgpool" else "conv2d(x, w)")
    _print(f"reshaped to {hw_text(doc['output'])} = {what}:", style="bold green")
    out().print(_grid(doc["result"]))
    if tconv:
        _print(f"C is the matrix of the convolution with the same kernel, stride and padding from {hw_text(doc['output'])} "
               f"down to {hw_text(doc['input'])}; C^T spreads each input pixel back over the window it came from "
               "(C^T is also the gradient dL/dx of that convolution)", style="dim")


__all__ = ["matrix_mode", "render_matrix", "pads_arg", "layer_values", "_grid", "_num"]
