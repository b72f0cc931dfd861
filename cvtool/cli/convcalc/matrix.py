"""Rendering of `cvtool convcalc --matrix`: x, w, the matrix C (or C^T) and its product
(what it computes: cvtool/convcalc/matrix.py)."""

from __future__ import annotations

from cvtool.cli.convcalc.common import grid, num, say
from cvtool.cli.output import out
from cvtool.convcalc.text import hw_text


def render_matrix(doc: dict) -> None:
    from rich import box
    from rich.table import Table

    tconv = doc["op"] == "tconv"
    xname = "y" if tconv else "x"
    iw = doc["input"][1]
    say(f"{doc['title']} as a matrix: input {hw_text(doc['input'])} -> output {hw_text(doc['output'])}, "
        f"{doc['params_text']}", style="bold")
    say(f"{xname} (input):")
    out().print(grid(doc["x"]))
    say("w (kernel):")
    out().print(grid(doc["w"]))
    rows, cols = doc["matrix_shape"]
    say(f"{doc['applied']} ({rows}x{cols}): row r = output pixel r, column j = input pixel j, both flattened "
        f"row by row ({xname}[j // {iw}, j % {iw}])", style="bold")
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False, collapse_padding=True)
    t.add_column("", style="dim")
    for j in range(cols):
        t.add_column(str(j), justify="right")
    for n, row in enumerate(doc["matrix"]):
        t.add_row(str(n), *(f"[dim]{num(v)}[/dim]" if v == 0 else num(v) for v in row))
    out().print(t)
    flat = ", ".join(num(v) for v in doc["result_flat"])
    say(f"{doc['applied']} {xname} = [{flat}]", style="cyan")
    what = "conv_transpose2d(y, w)" if tconv else ("avg_pool2d(x)" if doc["op"] == "avgpool" else "conv2d(x, w)")
    say(f"reshaped to {hw_text(doc['output'])} = {what}:", style="bold green")
    out().print(grid(doc["result"]))
    if tconv:
        say(f"C is the matrix of the convolution with the same kernel, stride and padding from {hw_text(doc['output'])} "
            f"down to {hw_text(doc['input'])}; C^T spreads each input pixel back over the window it came from "
            "(C^T is also the gradient dL/dx of that convolution)", style="dim")


__all__ = ["render_matrix"]
