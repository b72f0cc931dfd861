"""Every output of one layer written as the lecture writes it: its sum, with the numbers.

    conv:   y[i, j] = sum_{u, v} x_pad[i*s + u*d, j*s + v*d] * w[u, v] (+ b)     -> the nine products of a 3x3
    max:    y[i, j] = max of the window                                           -> which element wins
    avg:    y[i, j] = sum of the window / count                                   -> the sum and the divisor
    tconv:  each input pixel x[i, j] stamps x[i, j] * w at (i*s, j*s); y sums the stamps that overlap it, after
            `padding` is cropped from the borders (and output_padding added at the end)

Pure functions of 2-D arrays (one channel) and a cvtool.convcalc.chain.LayerSpec; they return plain data (lists and
numbers), which `convcalc --steps` renders and prints as JSON.
"""

from __future__ import annotations

import numpy as np

from cvtool.arithmetic import effective_kernel
from cvtool.convcalc.chain import LayerSpec, output_hw
from cvtool.convcalc.text import params_text, title
from cvtool.convcalc.values import layer_values
from cvtool.errors import UsageError

MAX_OUTPUTS = 64  # --steps writes each output's sum: beyond this it is no longer something to read
MAX_TAPS = 49  # kernel elements (7x7)


def check_counts(n_out: int, taps: int) -> None:
    if n_out > MAX_OUTPUTS:
        raise UsageError(f"--steps writes every output's sum: {n_out} outputs is too many (at most {MAX_OUTPUTS})",
                         hint="use a smaller -i (e.g. -i 5) or a larger stride")
    if taps > MAX_TAPS:
        raise UsageError(f"--steps: a {taps}-element kernel is too large to write out (at most {MAX_TAPS})")


def _num(v) -> float | int:
    v = float(v)
    return int(v) if v.is_integer() else v


def _taps(i: int, j: int, spec: LayerSpec, pads) -> list[tuple[int, int, int, int]]:
    """(u, v, row, col) of output (i, j)'s window: kernel offset and input position (may be in the padding)."""
    (s0, s1), (d0, d1) = spec.stride, spec.dilation
    KH, KW = spec.kernel
    return [(u, v, i * s0 + u * d0 - pads[0][0], j * s1 + v * d1 - pads[1][0]) for u in range(KH) for v in range(KW)]


def conv_steps(x: np.ndarray, w: np.ndarray, spec: LayerSpec, b: float = 0.0) -> dict:
    """Each output as sum_{u,v} x * w over its window; a term in the padding reads 0 (marked pad)."""
    H, W = x.shape
    (OH, OW), pads = output_hw(spec, (H, W))
    check_counts(OH * OW, w.size)
    outs = []
    for i in range(OH):
        for j in range(OW):
            terms, value = [], 0.0
            for u, v, r, c in _taps(i, j, spec, pads):
                inside = 0 <= r < H and 0 <= c < W
                xv, wv = _num(x[r, c]) if inside else 0, _num(w[u, v])
                terms.append({"x": xv, "w": wv, "at": [r, c] if inside else None})
                value += xv * wv
            value += b
            outs.append({"out": [i, j], "terms": terms, "bias": _num(b), "value": _num(value)})
    return {"op": "conv", "input": [H, W], "output": [OH, OW], "pads": pads, "outputs": outs}


def pool_steps(x: np.ndarray, spec: LayerSpec) -> dict:
    """Max: the window and its winner (the first largest); avg: the window's sum and the divisor
    (cells inside the padded input, PyTorch's count_include_pad=True)."""
    H, W = x.shape
    (OH, OW), pads = output_hw(spec, (H, W))
    KH, KW = spec.kernel
    check_counts(OH * OW, KH * KW)
    outs = []
    for i in range(OH):
        for j in range(OW):
            cells = []
            for u, v, r, c in _taps(i, j, spec, pads):
                inside = 0 <= r < H and 0 <= c < W
                in_pad = -pads[0][0] <= r < H + pads[0][1] and -pads[1][0] <= c < W + pads[1][1]
                cells.append({"x": _num(x[r, c]) if inside else None, "at": [r, c], "inside": inside, "in_pad": in_pad})
            if spec.kind == "maxpool":
                vals = [cl["x"] for cl in cells if cl["inside"]]
                best = max(vals)
                k = next(n for n, cl in enumerate(cells) if cl["inside"] and cl["x"] == best)
                outs.append({"out": [i, j], "window": cells, "winner": cells[k]["at"], "value": best})
            else:
                n = sum(cl["in_pad"] for cl in cells)
                total = sum(cl["x"] for cl in cells if cl["inside"])
                outs.append({"out": [i, j], "window": cells, "sum": _num(total), "count": n, "value": _num(total / n)})
    return {"op": spec.kind, "input": [H, W], "output": [OH, OW], "pads": pads, "outputs": outs}


def tconv_steps(x: np.ndarray, w: np.ndarray, spec: LayerSpec, b: float = 0.0) -> dict:
    """The stamps (input pixel (i, j) -> x[i, j] * w placed at rows i*s + u*d, cols j*s + v*d of the full
    output), then each output of the cropped result as the sum of the stamp entries that land on it."""
    H, W = x.shape
    (OH, OW), pads = output_hw(spec, (H, W))
    KH, KW = spec.kernel
    check_counts(OH * OW, KH * KW)
    (s0, s1), (d0, d1) = spec.stride, spec.dilation
    stamps: list = []
    land: dict = {}  # output (r, c) -> the stamp entries that land on it
    for i in range(H):
        for j in range(W):
            cells = []
            for u in range(KH):
                for v in range(KW):
                    r, c = i * s0 + u * d0 - pads[0][0], j * s1 + v * d1 - pads[1][0]  # in output coordinates
                    kept = 0 <= r < OH and 0 <= c < OW
                    cells.append({"w": _num(w[u, v]), "value": _num(x[i, j] * w[u, v]), "to": [r, c], "kept": kept})
                    if kept:
                        land.setdefault((r, c), []).append({"x": _num(x[i, j]), "w": _num(w[u, v]), "from": [i, j]})
            stamps.append({"in": [i, j], "x": _num(x[i, j]), "cells": cells})
    outs = [{"out": [r, c], "terms": land.get((r, c), []), "bias": _num(b),
             "value": _num(sum(t["x"] * t["w"] for t in land.get((r, c), [])) + b)} for r in range(OH) for c in range(OW)]
    full = [(H - 1) * s0 + effective_kernel(KH, d0) + spec.output_padding[0],
            (W - 1) * s1 + effective_kernel(KW, d1) + spec.output_padding[1]]
    return {"op": "tconv", "input": [H, W], "output": [OH, OW], "pads": pads, "full": full, "stamps": stamps,
            "outputs": outs}


def steps(spec: LayerSpec, x: np.ndarray, w: np.ndarray | None) -> dict:
    if spec.kind not in ("conv", "tconv"):
        return pool_steps(x, spec)
    assert w is not None, "a convolution's worked example has its kernel (layer_values)"
    return conv_steps(x, w, spec) if spec.kind == "conv" else tconv_steps(x, w, spec)


def term_text(t: dict) -> str:
    """'x*w' as the lecture writes it (negative factors bare: 0*-1)."""
    return f"{t['x']}*{t['w']}"


def sum_text(o: dict) -> str:
    """The whole line of one output: '1*0 + 1*0 + 0*-1 + ... = 0'."""
    body = " + ".join(term_text(t) for t in o["terms"]) or "0"
    bias = f" + {o['bias']}" if o.get("bias") else ""
    return f"{body}{bias} = {o['value']}"


def steps_doc(spec: LayerSpec, hw, x_text, w_text, seed: int, kernel_given: bool) -> dict:
    """steps() on the worked example, with x, w and the result as an array."""
    if hw is not None and x_text is None:  # too many sums to write: said before the example is drawn
        o = output_hw(spec, hw)[0]
        check_counts(o[0] * o[1], spec.kernel[0] * spec.kernel[1] if w_text is None else 0)
    spec, hw, xv, wv = layer_values(spec, hw, x_text, w_text, seed, kernel_given, fixed_avg=False)
    doc = steps(spec, xv, wv)
    result = np.zeros(doc["output"])
    for o in doc["outputs"]:
        result[tuple(o["out"])] = o["value"]
    return {"mode": "steps", "title": title(spec.kind), "params_text": params_text(spec, doc["pads"]),
            "x": xv.tolist(), "w": None if wv is None else wv.tolist(), "result": result.tolist(), **doc}
