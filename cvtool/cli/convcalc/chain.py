"""Rendering of `cvtool convcalc --chain` and `--model`: a table a layer (what they compute: cvtool/convcalc/trace.py)."""

from __future__ import annotations

from cvtool.cli.convcalc.common import say
from cvtool.cli.output import out, table
from cvtool.convcalc.text import dims


def _shape_text(shape) -> str:
    c, h, w = shape
    return f"{'?' if c is None else c} x {h} x {w}"


def render_chain(doc: dict) -> None:
    rows = [["0", "input", _shape_text(doc["input"]), "1", "1", "0", ""]]
    for s in doc["layers"]:
        rows.append([s["index"], s["layer"], _shape_text(s["shape"]), dims(s["receptive_field"]),
                     dims(s["jump"]), dims(s["start"]), "?" if s["params"] is None else f"{s['params']:,}"])
    out().print(table("Layer by layer (receptive field, jump and start in input pixels)",
                      ["#", "layer", "C x H x W", "RF", "jump", "start", "params"], rows))
    for s in doc["layers"]:
        for f in s["formulas"]:
            say(f"  {s['index']}: {f}", style="cyan")
    total = "" if doc["params"] is None else f", {doc['params']:,} parameters"
    say(f"output {_shape_text(doc['shape'])}; each output pixel sees {dims(doc['receptive_field'])} input "
        f"pixels{total}", style="bold green")
    say("RF: first to last input pixel that can change an output pixel (max over pixels); jump: distance of "
        "neighbouring output pixels; start: centre of the first one's field", style="dim")


def render_model(doc: dict) -> None:
    from cvtool.model.spec import NAMES  # numpy: not at import (convcalc's modes load at `cvtool --help`)

    rows = [["input", "", "", _shape_text(doc["input"]), "1", "1", "", ""]]
    for r in doc["layers"]:
        rows.append([r["name"], r["op"], r["detail"], _shape_text(r["shape"]), f"{r['jump']:g}", str(r["receptive_field"]),
                     f"{r['params']:,}" if r["params"] else "", f"{r['flops'] / 1e6:,.1f}" if r["flops"] else ""])
    s = doc["spec"]
    net = f"{NAMES[s.get('encoder', 'unet')]} width {s['width']} depth {s['depth']} {s['activation']}, norm {s['norm']}"
    out().print(table(f"{doc['source']}: {net}", ["layer", "op", "", "C x H x W", "stride", "RF", "params", "MFLOP"],
                      rows))
    say(f"{doc['params']:,} parameters; {doc['flops'] / 1e9:.2f} GFLOP per {doc['input'][1]}x{doc['input'][2]} image "
        f"({doc['conv_flops'] / 1e9:.2f} in convolutions; a multiply-add counts 2)", style="bold green")
    say(f"deepest stride {doc['max_jump']:g}; each output pixel sees {doc['receptive_field']} input pixels across",
        style="bold green")
    say("stride: input pixels between neighbouring pixels of the layer's output; RF: receptive field, the input "
        "pixels across that one of them can see (the widest path through the graph)", style="dim")


__all__ = ["render_chain", "render_model"]
