"""`cvtool convcalc --verify`: one layer on every backend, compared with the NumPy reference (also used by bench)."""

from __future__ import annotations

from typing import Any

from cvtool.chain import LayerSpec, output_hw
from cvtool.cli.convcalc import _print, _title, hw_text, params_text
from cvtool.cli.output import out
from cvtool.errors import BackendUnavailable, CvtoolError, UsageError

RTOL = 1e-4  # max |out - ref| / max |ref| allowed (float32)


def verify_mode(spec: LayerSpec, hw: tuple[int, int], backend_spec: str, device: str, seed: int) -> dict:
    import numpy as np

    import backends as registry

    names = registry.parse_list(backend_spec)
    if device not in registry.DEVICES:
        raise UsageError(f"unknown device {device!r}", hint="use auto, cpu or cuda")
    o, pads = output_hw(spec, hw)
    N, Cin, Cout = 2, 3, 4
    rng = np.random.default_rng(seed)
    xv = rng.standard_normal((N, Cin, *hw)).astype(np.float32)
    KH, KW = spec.kernel
    wshape = (Cin, Cout, KH, KW) if spec.kind == "tconv" else (Cout, Cin, KH, KW)
    wv = (rng.standard_normal(wshape) / np.sqrt(Cin * KH * KW)).astype(np.float32)
    bv = rng.standard_normal(Cout).astype(np.float32)
    expect = (N, Cin if spec.kind in ("maxpool", "avgpool") else Cout, *o)
    statuses = {n: _status(registry, n) for n in names}
    if device == "cuda" and not any(st.available and "cuda" in st.devices for st in statuses.values()):
        raise BackendUnavailable("--device cuda: no usable CUDA GPU here (no selected backend reports one)",
                                 hint="use --device cpu or auto")
    ref_status = statuses.get(registry.REFERENCE) or _status(registry, registry.REFERENCE)
    if not ref_status.available:
        raise BackendUnavailable(f"the NumPy reference backend is not available: {ref_status.reason}")
    try:
        ref_backend = registry.get(registry.REFERENCE, "cpu")
    except Exception as e:
        raise BackendUnavailable(f"the NumPy reference backend cannot run: {e}") from None
    # the reference runs in float64, so every float32 row (the NumPy one too) shows its own rounding error
    ref = np.asarray(run_layer(ref_backend, spec, xv.astype(np.float64), wv.astype(np.float64), bv.astype(np.float64)))
    rows = []
    for n in names:
        st = statuses[n]
        row: dict[str, Any] = {"backend": n, "device": None, "available": st.available, "shape": None,
                               "shape_ok": None, "max_abs_err": None, "max_rel_err": None, "ok": None, "error": None}
        rows.append(row)
        if not st.available:
            row["error"] = f"unavailable: {st.reason}"
            continue
        try:
            be = registry.get(n, device)
        except CvtoolError as e:
            row["available"], row["error"] = False, f"unavailable: {e.message}"
            continue
        row["device"] = be.device
        try:
            res = np.asarray(run_layer(be, spec, xv, wv, bv), dtype=np.float32)
        except Exception as e:  # a backend's failure is a row of the table, not a crash
            row["ok"], row["error"] = False, f"{type(e).__name__}: {e}".splitlines()[0][:200]
            continue
        row["shape"] = list(res.shape)
        row["shape_ok"] = tuple(res.shape) == expect
        if row["shape_ok"]:
            err = float(np.max(np.abs(res.astype(np.float64) - ref))) if res.size else 0.0
            row["max_abs_err"] = err
            row["max_rel_err"] = err / max(float(np.max(np.abs(ref))) if ref.size else 0.0, 1e-12)
        row["ok"] = bool(row["shape_ok"] and row["max_rel_err"] <= RTOL)
    ran = [r for r in rows if r["ok"] is not None]
    return {"mode": "verify", "op": spec.kind, "title": _title(spec.kind), "params": spec.to_dict(),
            "params_text": params_text(spec, pads), "input": [N, Cin, *hw], "output": list(o),
            "expected_shape": list(expect), "tolerance": RTOL, "results": rows,
            "ok": bool(ran) and all(r["ok"] for r in ran), "seed": seed}


def _status(registry, name: str):
    """A backend's status; one that cannot even be imported is unavailable, not a crash."""
    from backends.base import Status

    try:
        return registry.status(name)
    except Exception as e:  # a half-installed or broken plug-in
        return Status(name=name, available=False, reason=f"{type(e).__name__}: {e}".splitlines()[0][:200])


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


def render_verify(doc: dict) -> None:
    from cvtool.cli.output import fmt_float, table

    _print(f"{doc['title']}: input {' x '.join(map(str, doc['input']))}, {doc['params_text']}", style="bold")
    _print(f"  formula: output {hw_text(doc['output'])}, so the result must be {' x '.join(map(str, doc['expected_shape']))}")
    rows = []
    for r in doc["results"]:
        if r["ok"] is None:
            rows.append([r["backend"], r["device"] or "-", "-", "-", "-", "-", r["error"]])
            continue
        rows.append([r["backend"], r["device"], "x".join(map(str, r["shape"])) if r["shape"] else "-",
                     "-" if r["shape_ok"] is None else ("yes" if r["shape_ok"] else "NO"),
                     fmt_float(r["max_abs_err"]), fmt_float(r["max_rel_err"]),
                     "pass" if r["ok"] else f"FAIL{': ' + r['error'] if r['error'] else ''}"])
    out().print(table("Cross-check against the NumPy reference in float64",
                      ["backend", "device", "output", "= formula", "max abs err", "max rel err", "result"], rows))
    _print(f"rel err = max|out - ref| / max|ref|; pass: shape as the formula says and rel err <= {doc['tolerance']:g}",
           style="dim")
    ran = [r for r in doc["results"] if r["ok"] is not None]
    if not ran:
        _print("nothing was checked: no selected backend is available", style="bold red")
    else:
        _print("all passed" if doc["ok"] else "FAILED", style="bold green" if doc["ok"] else "bold red")


__all__ = ["verify_mode", "render_verify", "run_layer", "RTOL"]
