"""--verify: one layer on every backend against the NumPy reference in float64 (bench times the same layer).

The backends come in as objects the CLI resolved (or as the reason one is unavailable): nothing here
imports `backends`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cvtool.compare import TOLERANCE, compare
from cvtool.convcalc.chain import POOLS, LayerSpec, output_hw
from cvtool.convcalc.text import hw_text, params_text, title
from cvtool.errors import CvtoolError
from cvtool.footprint import array, require

RTOL = TOLERANCE["float32"].max_rel  # what a float32 layer is held to (--verify, and bench's pass)
N, C_IN, C_OUT = 2, 3, 4  # batch and channels of the check: enough to catch a mixed-up axis


@dataclass(frozen=True)
class Case:
    """The layer, its sizes and the seeded float32 inputs every backend gets."""

    spec: LayerSpec
    hw: tuple[int, int]
    out: tuple[int, int]
    pads: Any
    x: np.ndarray
    w: np.ndarray
    b: np.ndarray
    expect: tuple[int, ...]  # the shape the formula says the result has
    seed: int


def case(spec: LayerSpec, hw: tuple[int, int], seed: int) -> Case:
    """Seeded inputs for the layer; an impossible size is a UsageError here, before any backend loads."""
    o, pads = output_hw(spec, hw)
    C_y = C_IN if spec.kind in POOLS else C_OUT
    require([array("the float32 input", (N, C_IN, *hw), 4), array("its float64 copy", (N, C_IN, *hw), 8),
             array("the float64 reference output", (N, C_y, *o), 8), array("a backend's output", (N, C_y, *o), 4)],
            doing=f"--verify at {hw_text(hw)}", hint="use a smaller -i (or, transposed, a smaller stride)")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, C_IN, *hw)).astype(np.float32)
    KH, KW = spec.kernel
    wshape = (C_IN, C_OUT, KH, KW) if spec.kind == "tconv" else (C_OUT, C_IN, KH, KW)
    w = (rng.standard_normal(wshape) / np.sqrt(C_IN * KH * KW)).astype(np.float32)
    b = rng.standard_normal(C_OUT).astype(np.float32)
    expect = (N, C_IN if spec.kind in POOLS else C_OUT, *o)
    return Case(spec, hw, o, pads, x, w, b, expect, seed)


def run_layer(be, spec: LayerSpec, x, w, b):
    """The one layer on a backend (padding passed as written: every backend resolves it itself)."""
    if spec.kind == "conv":
        return be.conv2d(x, w, b, stride=spec.stride, padding=spec.padding, dilation=spec.dilation, groups=1)
    if spec.kind == "tconv":
        return be.conv_transpose2d(x, w, b, stride=spec.stride, padding=spec.padding,
                                   output_padding=spec.output_padding, dilation=spec.dilation, groups=1)
    if spec.kind == "maxpool":
        return be.max_pool2d(x, kernel=spec.kernel, stride=spec.stride, padding=spec.padding,
                             dilation=spec.dilation, ceil_mode=spec.ceil_mode)
    return be.avg_pool2d(x, kernel=spec.kernel, stride=spec.stride, padding=spec.padding, ceil_mode=spec.ceil_mode,
                         count_include_pad=True)


def _row(c: Case, name: str, be, ref: np.ndarray, device: str) -> dict:
    """One backend's row: its output shape against the formula's, its error against the reference."""
    row: dict[str, Any] = {"backend": name, "device": None, "available": not isinstance(be, str), "shape": None,
                           "shape_ok": None, "max_abs_err": None, "max_rel_err": None, "ok": None, "error": None,
                           "skipped": None}
    if isinstance(be, str):
        row["error"] = f"unavailable: {be}"
        return row
    row["device"] = getattr(be, "device", device)
    try:
        res = np.asarray(run_layer(be, c.spec, c.x, c.w, c.b), dtype=np.float32)
    except CvtoolError as e:  # the backend declines this input, and says why (naive: too many outputs for its loops)
        row["skipped"], row["error"] = e.message, f"skipped: {e.message}"
        return row
    except Exception as e:  # a backend's failure is a row of the table, not a crash
        row["ok"], row["error"] = False, f"{type(e).__name__}: {e}".splitlines()[0][:200]
        return row
    row["shape"] = list(res.shape)
    row["shape_ok"] = tuple(res.shape) == c.expect
    agree = compare(res, ref, TOLERANCE["float32"]) if row["shape_ok"] else None
    if agree is not None and agree.max_abs is not None:
        row["max_abs_err"], row["max_rel_err"] = agree.max_abs, agree.max_rel
    row["ok"] = bool(agree is not None and agree.ok)
    return row


def verify_doc(c: Case, ref_backend, backends: dict[str, Any], device: str) -> dict:
    """Every backend's row and whether all that ran passed. backends: name -> a backend object, or a str: why
    that one is unavailable (a row of the table, not a failure)."""
    # the reference runs in float64, so every float32 row (the NumPy one too) shows its own rounding error
    f64 = [a.astype(np.float64) for a in (c.x, c.w, c.b)]
    ref = np.asarray(run_layer(ref_backend, c.spec, *f64))
    rows = [_row(c, name, be, ref, device) for name, be in backends.items()]
    ran = [r for r in rows if r["ok"] is not None]
    return {"mode": "verify", "op": c.spec.kind, "title": title(c.spec.kind), "params": c.spec.to_dict(),
            "params_text": params_text(c.spec, c.pads), "input": [N, C_IN, *c.hw], "output": list(c.out),
            "expected_shape": list(c.expect), "tolerance": RTOL, "results": rows,
            "ok": bool(ran) and all(r["ok"] for r in ran), "seed": c.seed}


__all__ = ["case", "verify_doc", "run_layer", "Case", "RTOL"]
