"""--steps: every output of one layer written as its sum (the sums themselves: cvtool/convcalc/sums.py)."""

from __future__ import annotations

import numpy as np

from cvtool.convcalc import sums as ST
from cvtool.convcalc.chain import LayerSpec
from cvtool.convcalc.text import params_text, title
from cvtool.convcalc.values import layer_values


def steps_doc(spec: LayerSpec, hw, x_text, w_text, seed: int, kernel_given: bool) -> dict:
    """cvtool.convcalc.sums.steps on the worked example, with x, w and the result as an array."""
    spec, hw, xv, wv = layer_values(spec, hw, x_text, w_text, seed, kernel_given, fixed_avg=False)
    doc = ST.steps(spec, xv, wv)
    result = np.zeros(doc["output"])
    for o in doc["outputs"]:
        result[tuple(o["out"])] = o["value"]
    return {"mode": "steps", "title": title(spec.kind), "params_text": params_text(spec, doc["pads"]),
            "x": xv.tolist(), "w": None if wv is None else wv.tolist(), "result": result.tolist(), **doc}


__all__ = ["steps_doc"]
