"""dL/dx, dL/dw, dL/db of one layer by autograd, for `convcalc --backward` (float64; L = sum(y * dy))."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cvtool.arithmetic import conv_transpose2d_output, pair, resolve_padding


def _leaf(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


def _grad(t: torch.Tensor) -> np.ndarray:
    assert t.grad is not None, "a leaf that y depends on has its gradient after backward()"
    return t.grad.numpy()


def gradients(op: str, x, w, b, dy, params: dict) -> dict[str, np.ndarray]:
    xt = _leaf(x)
    wt, bt = (None if w is None else _leaf(w)), (None if b is None else _leaf(b))
    if op == "conv2d":
        assert wt is not None, "conv2d needs its kernel w"
        (pt, pb), (pl, pr) = resolve_padding(params.get("padding", 0), kernel=w.shape[2:], stride=params.get("stride", 1),
                                             dilation=params.get("dilation", 1), input_size=x.shape[2:])
        y = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), wt, bt, pair(params.get("stride", 1)), 0,
                     pair(params.get("dilation", 1)), params.get("groups", 1))
    elif op == "conv_transpose2d":
        assert wt is not None, "conv_transpose2d needs its kernel w"
        OH, OW = conv_transpose2d_output(x.shape[2:], w.shape[2:], params.get("stride", 1), params.get("padding", 0),
                                         params.get("output_padding", 0), params.get("dilation", 1))
        (pt, _), (pl, _) = resolve_padding(params.get("padding", 0), kernel=w.shape[2:])
        full = F.conv_transpose2d(xt, wt, bt, pair(params.get("stride", 1)), 0, pair(params.get("output_padding", 0)),
                                  params.get("groups", 1), pair(params.get("dilation", 1)))
        y = full[:, :, pt:pt + OH, pl:pl + OW]  # the crop that padding means
    elif op == "max_pool2d":
        y = F.max_pool2d(xt, params["kernel"], params.get("stride"), params.get("padding", 0), params.get("dilation", 1),
                         ceil_mode=params.get("ceil_mode", False))
    elif op == "avg_pool2d":
        y = F.avg_pool2d(xt, params["kernel"], params.get("stride"), params.get("padding", 0),
                         ceil_mode=params.get("ceil_mode", False), count_include_pad=params.get("count_include_pad", True))
    else:
        y = {"relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh}[op](xt)
    (y * torch.from_numpy(np.asarray(dy, np.float64))).sum().backward()
    out = {"y": y.detach().numpy(), "dx": _grad(xt)}
    if wt is not None:
        out["dw"] = _grad(wt)
    if bt is not None:
        out["db"] = _grad(bt)
    return out
