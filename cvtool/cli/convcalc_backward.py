"""`cvtool convcalc --backward`: the three rules of a layer on the user's numbers.

forward y; backward dL/dx (for a convolution also as C^T dL/dy and as the transposed convolution of dL/dy),
dL/dw (the correlation of x with dL/dy) and dL/db; the update w - lr * dL/dw. Every backend with a backward
(hand-written NumPy, the naive loops, torch autograd) and central finite differences in float64 agree in one table.
L is taken as sum(y * dL/dy), so dL/dy is whatever the user gives (default: all ones).
"""

from __future__ import annotations

from cvtool.chain import LayerSpec, output_hw
from cvtool.cli.convcalc import _print, _title, params_text
from cvtool.cli.convcalc_matrix import _grid, layer_values, pads_arg
from cvtool.cli.output import fmt_float, out, table
from cvtool.errors import UsageError

OPS = {"conv": "conv2d", "tconv": "conv_transpose2d", "maxpool": "max_pool2d", "avgpool": "avg_pool2d"}
MAX_VALUES = 144  # a 12x12 input at most: every array is printed


def _params(spec: LayerSpec, pads) -> dict:
    p = pads_arg(pads)
    if spec.kind == "conv":
        return dict(stride=spec.stride, padding=p, dilation=spec.dilation)
    if spec.kind == "tconv":
        return dict(stride=spec.stride, padding=p, output_padding=spec.output_padding, dilation=spec.dilation)
    if spec.kind == "maxpool":
        return dict(kernel=spec.kernel, stride=spec.stride, padding=(pads[0][0], pads[1][0]), dilation=spec.dilation,
                    ceil_mode=spec.ceil_mode)
    return dict(kernel=spec.kernel, stride=spec.stride, padding=(pads[0][0], pads[1][0]), ceil_mode=spec.ceil_mode)


def backward_mode(spec: LayerSpec | None, hw, x_text, w_text, dy_text, lr: float, seed: int, kernel_given: bool,
                  activation: str | None) -> dict:
    import numpy as np

    import backends as registry
    from cvtool import convmatrix as M
    from cvtool.arithmetic import conv_transpose_output

    if not lr > 0:
        raise UsageError(f"--lr must be positive, got {lr}")
    if activation is not None:  # f and f' on the values
        xv = M.parse_values(x_text, "--x") if x_text else np.round(np.random.default_rng(seed).uniform(-3, 3, hw or (3, 3)), 1)
        op, w4, b4, params, o = activation, None, None, {}, xv.shape
        title, ptext = f"{activation} activation", f"f = {activation}"
    else:
        spec, hw, xv, wv = layer_values(spec, hw, x_text, w_text, seed, kernel_given, fixed_avg=False)
        o, pads = output_hw(spec, hw)
        op, params = OPS[spec.kind], _params(spec, pads)
        w4 = None if wv is None else wv[None, None].astype(np.float64)
        b4 = np.zeros(1) if spec.kind in ("conv", "tconv") else None
        title, ptext = _title(spec.kind), params_text(spec, pads)
    if xv.size > MAX_VALUES:
        raise UsageError(f"--backward prints every array: a {xv.shape[0]}x{xv.shape[1]} input is too large "
                         f"(at most {MAX_VALUES} values)", hint="use e.g. -i 5")
    dy = M.parse_values(dy_text, "--dy") if dy_text is not None else np.ones(o)
    if tuple(dy.shape) != tuple(o):
        raise UsageError(f"--dy is {dy.shape[0]}x{dy.shape[1]} but the output is {o[0]}x{o[1]}")
    x4, dy4 = xv[None, None].astype(np.float64), dy[None, None].astype(np.float64)
    results, rows = {}, []
    for name in ("numpy", "naive", "torch"):
        st = registry.status(name)
        if not st.available:
            rows.append({"method": name, "error": f"unavailable: {st.reason}"})
            continue
        be = registry.get(name, "cpu")
        g = be.gradients(op, x4, w4, b4, dy4, **params)
        results[name] = g
    ref = results["numpy"]
    ref_be = registry.get("numpy", "cpu")

    def loss() -> float:
        return float((ref_be.gradients(op, x4, w4, b4, dy4, **params)["y"] * dy4).sum())

    wrt = {"dx": x4} | ({"dw": w4} if w4 is not None else {}) | ({"db": b4} if b4 is not None else {})
    from cvtool.gradcheck import numeric_grad

    fd = {k: numeric_grad(loss, v) for k, v in wrt.items()}
    kinks = _kinks(op, xv, ref)
    methods = {"numpy (hand-written)": ref, "naive (loops)": results.get("naive"), "torch (autograd)": results.get("torch"),
               "finite differences": fd}
    for label, g in methods.items():
        if g is None:
            continue
        row = {"method": label}
        for k in wrt:
            row[k] = float(np.max(np.abs(g[k] - ref[k])))
        row["ok"] = all(row[k] <= (1e-6 if label == "finite differences" else 1e-10) for k in wrt) or (
            label == "finite differences" and kinks)
        rows.append(row)
    doc = {"mode": "backward", "op": op, "title": title, "params_text": ptext, "x": xv.tolist(), "dy": dy.tolist(),
           "y": ref["y"][0, 0].tolist(), "dx": ref["dx"][0, 0].tolist(), "agreement": rows, "lr": lr,
           "kinks": kinks, "ok": all(r.get("ok", False) for r in rows if "error" not in r)}
    if w4 is not None:
        dw = ref["dw"][0, 0]
        doc.update(w=wv.tolist(), dw=dw.tolist(), w_new=(wv - lr * dw).tolist())
    if b4 is not None:
        doc.update(b=0.0, db=float(ref["db"][0]), b_new=float(-lr * ref["db"][0]))
    if op == "conv2d":  # the same dL/dx two more ways, and dL/dw as a correlation
        C = M.conv_matrix(wv, hw, stride=spec.stride, padding=pads_arg(pads), dilation=spec.dilation)
        doc["dx_via_CT"] = (C.T @ dy.ravel()).reshape(hw).tolist()
        opad = [hw[a] - conv_transpose_output(o[a], spec.kernel[a], spec.stride[a], pads[a], 0, spec.dilation[a])
                for a in (0, 1)]
        if all(0 <= opad[a] < max(spec.stride[a], spec.dilation[a]) for a in (0, 1)):
            doc["dx_via_tconv"] = ref_be.conv_transpose2d(dy4, w4, stride=spec.stride, padding=pads_arg(pads),
                                                          output_padding=opad, dilation=spec.dilation)[0, 0].tolist()
        if spec.dilation == (1, 1):
            xp = np.pad(xv, pads)[None, None]
            doc["dw_via_correlation"] = ref_be.conv2d(xp, dy4, dilation=spec.stride)[0, 0].tolist()
    if activation is not None:
        doc["f_prime"] = (ref["dx"][0, 0] / np.where(dy == 0, 1, dy)).tolist()
    return doc


def _kinks(op: str, x, ref) -> bool:
    """Whether finite differences are ill-defined here: relu at 0, a max-pool window with a tie."""
    import numpy as np

    if op == "relu":
        return bool((np.asarray(x) == 0).any())
    if op == "max_pool2d":
        return bool(np.unique(np.asarray(x)).size < np.asarray(x).size)  # a repeated value may tie in a window
    return False


def render_backward(doc: dict) -> None:
    import numpy as np

    g = lambda k: _grid(np.array(doc[k]))  # noqa: E731
    _print(f"{doc['title']}: forward, backward and update, {doc['params_text']}; L = sum(y * dL/dy)", style="bold")
    _print("x (input):")
    out().print(g("x"))
    if "w" in doc:
        _print("w (kernel), b = 0:")
        out().print(g("w"))
    _print("1. forward: y", style="bold")
    out().print(g("y"))
    _print("dL/dy (given; default all ones):")
    out().print(g("dy"))
    _print("2. backward: dL/dx" + (" = dL/dy * f'(x)" if "f_prime" in doc else ""), style="bold")
    out().print(g("dx"))
    if "f_prime" in doc:
        _print("f'(x):")
        out().print(g("f_prime"))
    if doc["op"] == "max_pool2d":
        _print("each output's gradient goes to the element that won its window; the others get 0", style="dim")
    for key, what in (("dx_via_CT", "C^T dL/dy (C: the convolution's matrix, convcalc --matrix)"),
                      ("dx_via_tconv", "conv_transpose2d(dL/dy, w): the transposed convolution of dL/dy")):
        if key in doc:
            same = np.allclose(doc[key], doc["dx"])
            _print(f"   = {what}: {'the same' if same else 'DIFFERENT'}", style="green" if same else "red")
    if "dw" in doc:
        _print("dL/dw (each weight: the sum of the inputs it multiplied, times their outputs' dL/dy):", style="bold")
        out().print(g("dw"))
        if "dw_via_correlation" in doc:
            same = np.allclose(doc["dw_via_correlation"], doc["dw"])
            _print(f"   = the correlation of x (padded) with dL/dy: {'the same' if same else 'DIFFERENT'}",
                   style="green" if same else "red")
        _print(f"dL/db = sum of dL/dy = {fmt_float(doc['db'])}", style="bold")
        _print(f"3. update (lr = {doc['lr']:g}): w <- w - lr * dL/dw", style="bold")
        out().print(g("w_new"))
        _print(f"   b <- 0 - {doc['lr']:g} * {fmt_float(doc['db'])} = {fmt_float(doc['b_new'])}")
    keys = [k for k in ("dx", "dw", "db") if k in doc["agreement"][0]]
    rows = [[r["method"]] + ([r["error"]] + [""] * (len(keys) - 1) + [""] if "error" in r else
                             [fmt_float(r[k]) for k in keys] + ["yes" if r["ok"] else "NO"]) for r in doc["agreement"]]
    out().print(table("Agreement: max |gradient - NumPy's| (float64)", ["method", *keys, "ok"], rows))
    if doc["kinks"]:
        _print("finite differences are not defined at a tie or at relu's 0: their row may differ there", style="dim")
    if doc["ok"]:
        _print("all agree", style="bold green")


__all__ = ["backward_mode", "render_backward"]
