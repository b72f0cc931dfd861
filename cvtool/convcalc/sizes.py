"""Output sizes: o as a function of i (--kernel alone), one output size (-i), and padding 'same' (--same)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cvtool.arithmetic import ceil_div, resolve_padding, same_pad
from cvtool.convcalc import explain
from cvtool.convcalc.chain import LayerSpec, formulas, output_hw
from cvtool.convcalc.text import params_text, title
from cvtool.errors import UsageError

COMMON_SIZES = (7, 8, 28, 32, 64, 224, 256)


def axes(spec: LayerSpec) -> list[tuple[str, int]]:
    """[('', 0)] when H and W behave alike, else [('H: ', 0), ('W: ', 1)]."""
    alike = all(v[0] == v[1] for v in (spec.kernel, spec.stride, spec.dilation, spec.output_padding))
    if isinstance(spec.padding, tuple):
        p = spec.padding
        alike = alike and (p[0] == p[1] if len(p) == 2 else p[0:2] == p[2:4])
    return [("", 0)] if alike else [("H: ", 0), ("W: ", 1)]


def as_kind(spec: LayerSpec, kind: str) -> LayerSpec:
    """The same geometry as another kind (conv <-> tconv)."""
    if kind == spec.kind:
        return spec
    return replace(spec, kind=kind, output_padding=(0, 0) if kind != "tconv" else spec.output_padding)


def _symbolic(spec: LayerSpec, kind: str, pad_mode: str | None, pads, a: int) -> explain.Symbolic:
    k, s, d = spec.kernel[a], spec.stride[a], spec.dilation[a]
    if kind == "conv" and pad_mode == "same":
        return explain.same_symbolic(k, s, d)
    if kind == "conv":
        return explain.conv_symbolic(k, s, pads[a], d)
    if kind == "tconv":
        return explain.conv_transpose_symbolic(k, s, pads[a], spec.output_padding[a], d)
    return explain.conv_symbolic(k, s, pads[a], d, rounding="ceil" if spec.ceil_mode else "floor")


def formula_doc(spec: LayerSpec) -> dict:
    """o(i) for the layer (a convolution also as its transposed one) and its value over COMMON_SIZES."""
    pad_mode = spec.padding if isinstance(spec.padding, str) else None
    pads = None if pad_mode == "same" else resolve_padding(spec.padding, kernel=spec.kernel)
    if spec.kind in ("conv", "tconv"):
        kinds = ["conv", "tconv"] if pad_mode != "same" else ["conv"]
    else:
        kinds = [spec.kind]
    ops = []
    for kind in kinds:
        sym = []
        for label, a in axes(spec):
            f = _symbolic(spec, kind, pad_mode, pads, a)
            sym.append({"axis": label.strip(": ") or "HW", "general": f.general, "substituted": f.substituted,
                        "summary": f.summary, "min_input": f.min_input})
        ops.append({"op": kind, "title": title(kind), "params": params_text(as_kind(spec, kind), pads), "formulas": sym})
    table = []
    for i in COMMON_SIZES:
        row: dict[str, Any] = {"input": i}
        for kind in kinds:
            try:
                row[kind] = list(output_hw(as_kind(spec, kind), (i, i))[0])
            except UsageError:
                row[kind] = None
        table.append(row)
    note = "transposed convolution takes no padding 'same'" if pad_mode == "same" and spec.kind == "conv" else None
    return {"mode": "formula", "ops": ops, "table": table, "note": note}


def output_doc(spec: LayerSpec, hw: tuple[int, int]) -> dict:
    """The output size of one input size, the formula with its numbers, and what to watch out for."""
    o, pads = output_hw(spec, hw)
    fs = formulas(spec, hw, pads)
    notes = [n if len(fs) == 1 else f"{'HW'[a]}: {n}" for a, f in enumerate(fs) for n in f.notes]
    if spec.padding == "same" and spec.stride != (1, 1):
        notes.append("PyTorch refuses padding='same' with stride > 1; this is TensorFlow's 'SAME' (o = ceil(i/s))")
    return {"mode": "output", "op": spec.kind, "title": title(spec.kind), "input": list(hw), "params": spec.to_dict(),
            "params_text": params_text(spec, pads), "padding": [list(p) for p in pads], "output": list(o),
            "formula": fs[0].general, "substituted": [f.substituted for f in fs], "notes": list(dict.fromkeys(notes))}


def same_doc(spec: LayerSpec, hw: tuple[int, int] | None) -> dict:
    """The padding that keeps the size (TensorFlow's 'SAME' for a stride > 1), explained per axis."""
    if spec.kind != "conv":
        raise UsageError("--same is about convolutions", hint="drop --transposed / --pool")
    alike = axes(spec) == [("", 0)] and (hw is None or hw[0] == hw[1])
    named = [("HW", 0, "o")] if alike else [("H", 0, "OH"), ("W", 1, "OW")]
    res = [explain.same(spec.kernel[a], spec.stride[a], spec.dilation[a], None if hw is None else hw[a], lhs)
           for _, a, lhs in named]
    per_dim = res * 2 if alike else res  # (H, W)
    doc: dict[str, Any] = {
        "mode": "same", "op": "conv", "input": list(hw) if hw else None, "params": spec.to_dict(),
        "params_text": params_text(spec), "pytorch_padding_same": spec.stride == (1, 1),
        "padding": [list(r.pad) for r in per_dim if r.pad is not None] or None,  # all None or none (hw unknown)
        "explanation": [{"axis": name, "lines": list(r.lines)} for (name, _, _), r in zip(named, res)]}
    if hw is not None:
        doc["output"] = [r.output for r in per_dim]
    elif spec.stride != (1, 1):  # the padding depends on i: show it for common sizes
        doc["table"] = [{"input": i, "output": [ceil_div(i, s) for s in spec.stride],
                         "padding": [list(same_pad(spec.kernel[a], spec.stride[a], spec.dilation[a], i))
                                     for a in (0, 1)]}
                        for i in COMMON_SIZES]
    return doc


__all__ = ["formula_doc", "output_doc", "same_doc", "axes", "as_kind", "COMMON_SIZES"]
