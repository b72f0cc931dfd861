"""--backward: the three rules of a layer on the user's numbers.

forward y; backward dL/dx (for a convolution also as C^T dL/dy and as the transposed convolution of dL/dy),
dL/dw (the correlation of x with dL/dy) and dL/db; the update w - lr * dL/dw. Every backend with a backward
(hand-written NumPy, the naive loops, torch autograd, plug-ins) and central finite differences in float64 agree in
one table.
L is taken as sum(y * dL/dy), so dL/dy is whatever the user gives (default: all ones).

The backends come in as objects the CLI resolved: nothing here imports `backends`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cvtool.arithmetic import conv_transpose_output
from cvtool.bounds import POSITIVE, check
from cvtool.compare import TOLERANCE, compare
from cvtool.convcalc.chain import LayerSpec, output_hw
from cvtool.convcalc.gradcheck import numeric_grad
from cvtool.convcalc.matrix import conv_matrix
from cvtool.convcalc.text import params_text, title
from cvtool.convcalc.values import layer_values, pads_arg, parse_values
from cvtool.errors import UsageError

OPS = {"conv": "conv2d", "tconv": "conv_transpose2d", "maxpool": "max_pool2d", "avgpool": "avg_pool2d"}
ACTIVATIONS = ("relu", "sigmoid", "tanh")
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


@dataclass(frozen=True)
class Case:
    """The operation and its float64 numbers (one image, one channel: arrays of shape (1, 1, H, W))."""

    op: str  # a backend's gradients() name: conv2d ... or an activation
    title: str
    params_text: str
    spec: LayerSpec | None  # None for an activation
    hw: Any
    pads: Any
    out: tuple[int, int]
    x: np.ndarray  # 2-D, as given
    w: np.ndarray | None
    dy: np.ndarray
    params: dict
    lr: float

    def arrays(self):
        """x, w, b, dL/dy as the backends take them."""
        w4 = None if self.w is None else self.w[None, None].astype(np.float64)
        b4 = np.zeros(1) if self.op in ("conv2d", "conv_transpose2d") else None
        return self.x[None, None].astype(np.float64), w4, b4, self.dy[None, None].astype(np.float64)


def _too_large(hw) -> None:
    raise UsageError(f"--backward prints every array: a {hw[0]}x{hw[1]} input is too large (at most {MAX_VALUES} "
                     "values)", hint="use e.g. -i 5")


def case(spec: LayerSpec | None, hw, x_text, w_text, dy_text, lr: float, seed: int, kernel_given: bool,
         activation: str | None) -> Case:
    """The numbers, checked (an error here comes before any backend loads)."""
    check("--lr", lr, POSITIVE)
    if hw is not None and x_text is None and hw[0] * hw[1] > MAX_VALUES:  # before the example is drawn
        _too_large(hw)
    if activation is not None:  # f and f' on the values
        xv = parse_values(x_text, "--x") if x_text else np.round(np.random.default_rng(seed).uniform(-3, 3, hw or (3, 3)), 1)
        op, wv, params, o, pads = activation, None, {}, xv.shape, None
        name, ptext = f"{activation} activation", f"f = {activation}"
    else:
        assert spec is not None, "the CLI gives a layer when there is no --activation"
        spec, hw, xv, wv = layer_values(spec, hw, x_text, w_text, seed, kernel_given, fixed_avg=False)
        o, pads = output_hw(spec, hw)
        op, params = OPS[spec.kind], _params(spec, pads)
        name, ptext = title(spec.kind), params_text(spec, pads)
    if xv.size > MAX_VALUES:
        _too_large(xv.shape)
    dy = parse_values(dy_text, "--dy") if dy_text is not None else np.ones(o)
    if tuple(dy.shape) != tuple(o):
        raise UsageError(f"--dy is {dy.shape[0]}x{dy.shape[1]} but the output is {o[0]}x{o[1]}")
    return Case(op, name, ptext, spec, hw, pads, o, xv, wv, dy, params, lr)


def kinks(op: str, x) -> bool:
    """Whether finite differences are ill-defined here: relu at 0, a max-pool window with a tie."""
    if op == "relu":
        return bool((np.asarray(x) == 0).any())
    if op == "max_pool2d":
        return bool(np.unique(np.asarray(x)).size < np.asarray(x).size)  # a repeated value may tie in a window
    return False


def _agreement(label: str, g: dict, ref: dict, wrt, kinked: bool) -> dict:
    """max |gradient - NumPy's| per array, within the float64 (or finite-difference) tolerance."""
    fd = label == "finite differences"
    agree = {k: compare(g[k], ref[k], TOLERANCE["finite differences" if fd else "float64"]) for k in wrt}
    row: dict[str, Any] = {"method": label, **{k: a.max_abs for k, a in agree.items()}}
    row["ok"] = all(a.ok for a in agree.values()) or (fd and kinked)
    return row


def _conv_views(c: Case, ref_be, dy4, w4) -> dict:
    """A convolution's dL/dx two more ways (C^T dL/dy, the transposed convolution) and dL/dw as a correlation."""
    spec, hw, o, pads = c.spec, c.hw, c.out, c.pads
    assert spec is not None and c.w is not None, "a convolution's case has its layer and kernel"
    doc = {}
    C = conv_matrix(c.w, hw, stride=spec.stride, padding=pads_arg(pads), dilation=spec.dilation)
    doc["dx_via_CT"] = (C.T @ c.dy.ravel()).reshape(hw).tolist()
    opad = [hw[a] - conv_transpose_output(o[a], spec.kernel[a], spec.stride[a], pads[a], 0, spec.dilation[a])
            for a in (0, 1)]
    if all(0 <= opad[a] < max(spec.stride[a], spec.dilation[a]) for a in (0, 1)):
        doc["dx_via_tconv"] = ref_be.conv_transpose2d(dy4, w4, stride=spec.stride, padding=pads_arg(pads),
                                                      output_padding=opad, dilation=spec.dilation)[0, 0].tolist()
    if spec.dilation == (1, 1):
        xp = np.pad(c.x, pads)[None, None]
        doc["dw_via_correlation"] = ref_be.conv2d(xp, dy4, dilation=spec.stride)[0, 0].tolist()
    return doc


def backward_doc(c: Case, backends: dict[str, Any], reference: str) -> dict:
    """backends: a label per backend with a backward ("numpy (hand-written)") -> the backend object, or a str: why
    that one is unavailable; `reference` labels the float64 reference among them (an object)."""
    x4, w4, b4, dy4 = c.arrays()
    ref_be = backends[reference]
    rows: list[dict] = [{"method": n, "error": f"unavailable: {be}"} for n, be in backends.items() if isinstance(be, str)]
    results = {n: be.gradients(c.op, x4, w4, b4, dy4, **c.params) for n, be in backends.items() if not isinstance(be, str)}
    ref = results[reference]

    def loss() -> float:
        return float((ref_be.gradients(c.op, x4, w4, b4, dy4, **c.params)["y"] * dy4).sum())

    wrt = {"dx": x4} | ({"dw": w4} if w4 is not None else {}) | ({"db": b4} if b4 is not None else {})
    fd = {k: numeric_grad(loss, v) for k, v in wrt.items()}
    kinked = kinks(c.op, c.x)
    methods = {reference: ref, **{n: g for n, g in results.items() if n != reference}, "finite differences": fd}
    rows += [_agreement(label, g, ref, wrt, kinked) for label, g in methods.items() if g is not None]
    doc = {"mode": "backward", "op": c.op, "title": c.title, "params_text": c.params_text, "x": c.x.tolist(),
           "dy": c.dy.tolist(), "y": ref["y"][0, 0].tolist(), "dx": ref["dx"][0, 0].tolist(), "agreement": rows,
           "lr": c.lr, "kinks": kinked, "ok": all(r.get("ok", False) for r in rows if "error" not in r)}
    if c.w is not None:  # and so w4
        dw = ref["dw"][0, 0]
        doc.update(w=c.w.tolist(), dw=dw.tolist(), w_new=(c.w - c.lr * dw).tolist())
    if b4 is not None:
        doc.update(b=0.0, db=float(ref["db"][0]), b_new=float(-c.lr * ref["db"][0]))
    if c.op == "conv2d":
        doc.update(_conv_views(c, ref_be, dy4, w4))
    if c.op in ACTIVATIONS:  # f' = dL/dx / dL/dy wherever dL/dy is not 0
        doc["f_prime"] = (ref["dx"][0, 0] / np.where(c.dy == 0, 1, c.dy)).tolist()
    return doc


__all__ = ["case", "backward_doc", "kinks", "Case", "OPS", "ACTIVATIONS", "MAX_VALUES"]
