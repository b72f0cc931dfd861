"""Rendering of `cvtool convcalc --steps`: every output as its sum (what it computes: cvtool/convcalc/sums.py)."""

from __future__ import annotations

from cvtool.cli.convcalc.common import grid, num, say
from cvtool.cli.output import out
from cvtool.convcalc.text import hw_text


def _at(rc) -> str:
    return f"[{rc[0]},{rc[1]}]"


def _tconv_lines(doc: dict) -> None:
    say("1. every input pixel stamps x[i,j] * w onto the output, its corner at (i*stride, j*stride) "
        "(before the padding is cropped):", style="dim")
    for st in doc["stamps"]:
        kept = [c for c in st["cells"] if c["kept"]]
        if not kept:
            say(f"x{_at(st['in'])} = {st['x']}: its whole stamp falls in the cropped border")
            continue
        cells = ", ".join(f"{_at(c['to'])} += {st['x']}*{c['w']}" for c in kept)
        say(f"x{_at(st['in'])} = {st['x']}: {cells}")
    say("2. each output sums the stamps that overlap it:", style="dim")
    for o in doc["outputs"]:
        terms = " + ".join(f"{t['x']}*{t['w']}" for t in o["terms"]) or "0"
        say(f"y{_at(o['out'])} = {terms} = {o['value']}")


def render_steps(doc: dict) -> None:
    import numpy as np

    from cvtool.convcalc.sums import sum_text

    say(f"{doc['title']} written out: input {hw_text(doc['input'])} -> output {hw_text(doc['output'])}, "
        f"{doc['params_text']}", style="bold")
    say("x (input):")
    out().print(grid(np.array(doc["x"])))
    if doc["w"] is not None:
        say("w (kernel):")
        out().print(grid(np.array(doc["w"])))
    op = doc["op"]
    if op == "conv":
        say("each output: the kernel laid on its window, x*w summed (a term in the padding reads 0)", style="dim")
        for o in doc["outputs"]:
            say(f"y{_at(o['out'])} = {sum_text(o)}")
    elif op == "maxpool":
        for o in doc["outputs"]:
            vals = ", ".join(str(c["x"]) for c in o["window"] if c["inside"])
            say(f"y{_at(o['out'])} = max({vals}) = {o['value']}   (x{_at(o['winner'])} wins)")
    elif op == "avgpool":
        for o in doc["outputs"]:
            vals = " + ".join(str(c["x"]) for c in o["window"] if c["inside"]) or "0"
            say(f"y{_at(o['out'])} = ({vals}) / {o['count']} = {num(o['value'])}")
        say("count: the window's cells inside the input and its padding (PyTorch's count_include_pad)", style="dim")
    else:
        _tconv_lines(doc)
    say(f"y (output, {hw_text(doc['output'])}):", style="bold green")
    out().print(grid(np.array(doc["result"])))


__all__ = ["render_steps"]
