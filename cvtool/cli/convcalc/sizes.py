"""Rendering of the size modes of `cvtool convcalc`: o(i), one output size, padding 'same', solving
(what they compute: cvtool/convcalc/sizes.py, cvtool/convcalc/solve.py)."""

from __future__ import annotations

from cvtool.cli.convcalc.common import say
from cvtool.cli.output import out, table
from cvtool.convcalc.text import dims, hw_text


def render_formula(doc: dict) -> None:
    for op in doc["ops"]:
        say(f"{op['title']}: {op['params']}", style="bold")
        for f in op["formulas"]:
            axis = "" if f["axis"] == "HW" else f"{f['axis']}: "
            say(f"  {axis}{f['general']}")
            say(f"  {axis}{f['substituted']}", style="cyan")
            say(f"      {f['summary']}; needs i >= {f['min_input']}", style="dim")
    if doc["note"]:
        say(f"({doc['note']})", style="dim")
    kinds = [op["op"] for op in doc["ops"]]
    rows = [[r["input"]] + [dims(r[k]) if r[k] else "-" for k in kinds] for r in doc["table"]]
    out().print(table(None, ["input i x i"] + [op["title"].lower() for op in doc["ops"]], rows))


def render_output(doc: dict) -> None:
    say(f"{doc['title']}: input {hw_text(doc['input'])}, {doc['params_text']}", style="bold")
    say(f"  {doc['formula']}")
    for s in doc["substituted"]:
        say(f"  {s}", style="cyan")
    say(f"  output: {hw_text(doc['output'])}", style="bold green")
    for n in doc["notes"]:
        say(f"  note: {n}", style="dim")


def render_same(doc: dict) -> None:
    where = f"input {hw_text(doc['input'])}, " if doc["input"] else ""
    say(f"Padding 'same' for a convolution: {where}{doc['params_text']}", style="bold")
    for e in doc["explanation"]:
        if e["axis"] != "HW":
            say(f" {e['axis']}:", style="bold")
        for line in e["lines"]:
            say(f"  {line}", style="cyan" if line.startswith(("o =", "OH =", "OW =")) else None)
    if doc["padding"]:
        (t, b), (l, r) = doc["padding"]
        say(f"  padding: top {t}, bottom {b}, left {l}, right {r}" +
            (f"  (F.pad(x, ({l}, {r}, {t}, {b})) then padding=0)" if (t, l) != (b, r) else ""), style="bold green")
    if "output" in doc:
        say(f"  output: {hw_text(doc['output'])}", style="bold green")
    if "table" in doc:
        rows = [[r["input"], dims(r["output"]), " / ".join(f"{p[0]},{p[1]}" for p in r["padding"])] for r in doc["table"]]
        out().print(table("TensorFlow 'SAME' over common sizes (padding begin,end for H / W)",
                          ["i", "output", "padding"], rows))


def _pad_cell(p) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]} begin, {p[1]} end"


def render_solve(doc: dict) -> None:
    what = f"{doc['title'].lower()} {hw_text(doc['input'])} -> {hw_text(doc['output'])}"
    say(f"Solving: {what}" + (f" with {doc['params_text']}" if doc["params_text"] else ""), style="bold")
    tconv = doc["op"] == "tconv"
    b = doc["bounds"]
    bounds = b and f"kernel {b['kernel'][0]}..{b['kernel'][1]}, stride {b['stride'][0]}..{b['stride'][1]}, padding {b['padding']}"
    for e in doc["axes"]:
        axis = "" if e["axis"] == "HW" else f" ({e['axis']}: {e['input']} -> {e['output']})"
        if "paddings" in e:
            if e["paddings"]:
                asym = "no: ONNX pads only" if tconv else "no: extra pixel at the end"
                rows = [[_pad_cell(p["padding"]), "yes" if p["symmetric"] else asym]
                        + ([p["output_padding"]] if tconv else []) + [p["check"]] for p in e["paddings"]]
                cols = ["padding", "symmetric"] + (["output_padding"] if tconv else []) + ["check"]
                out().print(table(f"Paddings that give it{axis}", cols, rows))
            else:
                say(f"  no padding gives {e['output']} from {e['input']}{axis}: {e['why_not']}", style="bold red")
        if "kernel_stride" in e:
            if e["kernel_stride"]:
                rows = [[p["kernel"], p["stride"], p["padding"][0]] + ([p["output_padding"]] if tconv else [])
                        + [p["check"]] for p in e["kernel_stride"]]
                cols = ["kernel", "stride", "padding"] + (["output_padding"] if tconv else []) + ["check"]
                out().print(table(f"Kernel / stride / padding choices ({bounds}){axis}", cols, rows))
            else:
                say(f"  no {bounds} gives {e['output']} from {e['input']}{axis}", style="bold red")


__all__ = ["render_formula", "render_output", "render_same", "render_solve"]
