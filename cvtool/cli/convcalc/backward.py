"""`cvtool convcalc --backward`: the backends with a backward resolved by name, the gradients computed
(cvtool/convcalc/backward.py), forward, backward and update printed on the numbers."""

from __future__ import annotations

from typing import Any

from cvtool.cli.convcalc.common import backend_status, grid, say
from cvtool.cli.output import fmt_float, out, table
from cvtool.convcalc.backward import Case, backward_doc
from cvtool.errors import BackendUnavailable


def gradients(case: Case) -> dict:
    """The --backward document: every backend with a backward that is available here, on the CPU."""
    import cvtool_backends as registry

    engines: dict[str, Any] = {}  # "name (how)" -> the backend, or why it is unavailable; the reference first
    reference = None  # its label
    for name in [registry.REFERENCE] + sorted(n for n in registry.names() if n != registry.REFERENCE):
        try:
            caps = registry.backend_class(name).capabilities
        except Exception:  # a framework or plug-in that cannot even be imported has no backward to show
            continue
        if not caps.backward:
            continue
        label = f"{name} ({caps.extra.get('backward_by', 'backward')})"
        st = backend_status(registry, name)
        engines[label] = registry.get(name, "cpu") if st.available else st.reason
        if name == registry.REFERENCE:
            reference = label
    if reference is None or isinstance(engines[reference], str):
        why = engines[reference] if reference else "it cannot be imported"
        raise BackendUnavailable(f"the NumPy reference backend is not available: {why}")
    return backward_doc(case, engines, reference)


def render_backward(doc: dict) -> None:
    import numpy as np

    g = lambda k: grid(np.array(doc[k]))  # noqa: E731
    say(f"{doc['title']}: forward, backward and update, {doc['params_text']}; L = sum(y * dL/dy)", style="bold")
    say("x (input):")
    out().print(g("x"))
    if "w" in doc:
        say("w (kernel), b = 0:")
        out().print(g("w"))
    say("1. forward: y", style="bold")
    out().print(g("y"))
    say("dL/dy (given; default all ones):")
    out().print(g("dy"))
    say("2. backward: dL/dx" + (" = dL/dy * f'(x)" if "f_prime" in doc else ""), style="bold")
    out().print(g("dx"))
    if "f_prime" in doc:
        say("f'(x):")
        out().print(g("f_prime"))
    if doc["op"] == "max_pool2d":
        say("each output's gradient goes to the element that won its window; the others get 0", style="dim")
    for key, what in (("dx_via_CT", "C^T dL/dy (C: the convolution's matrix, convcalc --matrix)"),
                      ("dx_via_tconv", "conv_transpose2d(dL/dy, w): the transposed convolution of dL/dy")):
        if key in doc:
            same = np.allclose(doc[key], doc["dx"])
            say(f"   = {what}: {'the same' if same else 'DIFFERENT'}", style="green" if same else "red")
    if "dw" in doc:
        say("dL/dw (each weight: the sum of the inputs it multiplied, times their outputs' dL/dy):", style="bold")
        out().print(g("dw"))
        if "dw_via_correlation" in doc:
            same = np.allclose(doc["dw_via_correlation"], doc["dw"])
            say(f"   = the correlation of x (padded) with dL/dy: {'the same' if same else 'DIFFERENT'}",
                style="green" if same else "red")
        say(f"dL/db = sum of dL/dy = {fmt_float(doc['db'])}", style="bold")
        say(f"3. update (lr = {doc['lr']:g}): w <- w - lr * dL/dw", style="bold")
        out().print(g("w_new"))
        say(f"   b <- 0 - {doc['lr']:g} * {fmt_float(doc['db'])} = {fmt_float(doc['b_new'])}")
    keys = [k for k in ("dx", "dw", "db") if k in doc["agreement"][0]]
    rows = [[r["method"]] + ([r["error"]] + [""] * (len(keys) - 1) + [""] if "error" in r else
                             [fmt_float(r[k]) for k in keys] + ["yes" if r["ok"] else "NO"]) for r in doc["agreement"]]
    out().print(table("Agreement: max |gradient - NumPy's| (float64)", ["method", *keys, "ok"], rows))
    if doc["kinks"]:
        say("finite differences are not defined at a tie or at relu's 0: their row may differ there", style="dim")
    if doc["ok"]:
        say("all agree", style="bold green")


__all__ = ["gradients", "render_backward"]
