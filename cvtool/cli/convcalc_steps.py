"""`cvtool convcalc --steps`: every output of one layer written out as its sum (the maths is cvtool/steps.py)."""

from __future__ import annotations

from cvtool.chain import LayerSpec
from cvtool.cli.convcalc import _print, _title, hw_text, params_text
from cvtool.cli.convcalc_matrix import _grid, _num, layer_values
from cvtool.cli.output import out


def steps_mode(spec: LayerSpec, hw, x_text, w_text, seed: int, kernel_given: bool) -> dict:
    import numpy as np

    from cvtool import steps as ST

    spec, hw, xv, wv = layer_values(spec, hw, x_text, w_text, seed, kernel_given, fixed_avg=False)
    doc = ST.steps(spec, xv, wv)
    result = np.zeros(doc["output"])
    for o in doc["outputs"]:
        result[tuple(o["out"])] = o["value"]
    return {"mode": "steps", "title": _title(spec.kind), "params_text": params_text(spec, doc["pads"]),
            "x": xv.tolist(), "w": None if wv is None else wv.tolist(), "result": result.tolist(), **doc}


def _at(rc) -> str:
    return f"[{rc[0]},{rc[1]}]"


def render_steps(doc: dict) -> None:
    import numpy as np

    from cvtool import steps as ST

    _print(f"{doc['title']} written out: input {hw_text(doc['input'])} -> output {hw_text(doc['output'])}, "
           f"{doc['params_text']}", style="bold")
    _print("x (input):")
    out().print(_grid(np.array(doc["x"])))
    if doc["w"] is not None:
        _print("w (kernel):")
        out().print(_grid(np.array(doc["w"])))
    op = doc["op"]
    if op == "conv":
        _print("each output: the kernel laid on its window, x*w summed (a term in the padding reads 0)", style="dim")
        for o in doc["outputs"]:
            _print(f"y{_at(o['out'])} = {ST.sum_text(o)}")
    elif op == "maxpool":
        for o in doc["outputs"]:
            vals = ", ".join(str(c["x"]) for c in o["window"] if c["inside"])
            _print(f"y{_at(o['out'])} = max({vals}) = {o['value']}   (x{_at(o['winner'])} wins)")
    elif op == "avgpool":
        for o in doc["outputs"]:
            vals = " + ".join(str(c["x"]) for c in o["window"] if c["inside"]) or "0"
            _print(f"y{_at(o['out'])} = ({vals}) / {o['count']} = {_num(o['value'])}")
        _print("count: the window's cells inside the input and its padding (PyTorch's count_include_pad)", style="dim")
    else:
        _print("1. every input pixel stamps x[i,j] * w onto the output, its corner at (i*stride, j*stride) "
               "(before the padding is cropped):", style="dim")
        for st in doc["stamps"]:
            kept = [c for c in st["cells"] if c["kept"]]
            if not kept:
                _print(f"x{_at(st['in'])} = {st['x']}: its whole stamp falls in the cropped border")
                continue
            cells = ", ".join(f"{_at(c['to'])} += {st['x']}*{c['w']}" for c in kept)
            _print(f"x{_at(st['in'])} = {st['x']}: {cells}")
        _print("2. each output sums the stamps that overlap it:", style="dim")
        for o in doc["outputs"]:
            terms = " + ".join(f"{t['x']}*{t['w']}" for t in o["terms"]) or "0"
            _print(f"y{_at(o['out'])} = {terms} = {o['value']}")
    _print(f"y (output, {hw_text(doc['output'])}):", style="bold green")
    out().print(_grid(np.array(doc["result"])))


__all__ = ["steps_mode", "render_steps"]
