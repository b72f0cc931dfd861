"""`cvtool convcalc --verify`: the backends resolved by name, the check run (cvtool/convcalc/verify.py), the table."""

from __future__ import annotations

from typing import Any

from cvtool.cli.convcalc.common import backend_status, say
from cvtool.cli.output import fmt_float, out, table
from cvtool.convcalc import verify as verify_doc
from cvtool.convcalc.chain import LayerSpec
from cvtool.convcalc.text import hw_text
from cvtool.errors import BackendUnavailable, CvtoolError, UsageError


def cross_check(spec: LayerSpec, hw: tuple[int, int], backend_spec: str, device: str, seed: int) -> dict:
    """The --verify document for the backends named (all: every one known) on the device."""
    import cvtool_backends as registry

    names = registry.parse_list(backend_spec)
    if device not in registry.DEVICES:
        raise UsageError(f"unknown device {device!r}", hint="use auto, cpu or cuda")
    case = verify_doc.case(spec, hw, seed)
    statuses = {n: backend_status(registry, n) for n in names}
    if device == "cuda" and not any(st.available and "cuda" in st.devices for st in statuses.values()):
        raise BackendUnavailable("--device cuda: no usable CUDA GPU here (no selected backend reports one)",
                                 hint="use --device cpu or auto")
    ref_status = statuses.get(registry.REFERENCE) or backend_status(registry, registry.REFERENCE)
    if not ref_status.available:
        raise BackendUnavailable(f"the NumPy reference backend is not available: {ref_status.reason}")
    try:
        ref_backend = registry.get(registry.REFERENCE, "cpu")
    except Exception as e:
        raise BackendUnavailable(f"the NumPy reference backend cannot run: {e}") from None
    engines: dict[str, Any] = {}  # name -> the backend, or why it is unavailable
    for n, st in statuses.items():
        if not st.available:
            engines[n] = st.reason
            continue
        try:
            engines[n] = registry.get(n, device)
        except CvtoolError as e:
            engines[n] = e.message
    return verify_doc.verify_doc(case, ref_backend, engines, device)


def render_verify(doc: dict) -> None:
    say(f"{doc['title']}: input {' x '.join(map(str, doc['input']))}, {doc['params_text']}", style="bold")
    say(f"  formula: output {hw_text(doc['output'])}, so the result must be {' x '.join(map(str, doc['expected_shape']))}")
    rows = []
    for r in doc["results"]:
        if r["ok"] is None:
            rows.append([r["backend"], r["device"] or "-", "-", "-", "-", "-", "skipped" if r.get("skipped") else r["error"]])
            continue
        rows.append([r["backend"], r["device"], "x".join(map(str, r["shape"])) if r["shape"] else "-",
                     "-" if r["shape_ok"] is None else ("yes" if r["shape_ok"] else "NO"),
                     fmt_float(r["max_abs_err"]), fmt_float(r["max_rel_err"]),
                     "pass" if r["ok"] else f"FAIL{': ' + r['error'] if r['error'] else ''}"])
    out().print(table("Cross-check against the NumPy reference in float64",
                      ["backend", "device", "output", "= formula", "max abs err", "max rel err", "result"], rows))
    say(f"rel err = max|out - ref| / max|ref|; pass: shape as the formula says and rel err <= {doc['tolerance']:g}",
        style="dim")
    for r in doc["results"]:
        if r.get("skipped"):
            say(f"{r['backend']} skipped: {r['skipped']}", style="dim")
    ran = [r for r in doc["results"] if r["ok"] is not None]
    if not ran:
        say("nothing was checked: no selected backend is available", style="bold red")
    else:
        say("all passed" if doc["ok"] else "FAILED", style="bold green" if doc["ok"] else "bold red")


__all__ = ["cross_check", "render_verify"]
