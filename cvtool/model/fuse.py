"""Inference-time graph rewrites shared by the backends that run a network (numpy_fast, torch):
BatchNorm folded into the conv before it, and Conv2d -> ReLU pairs marked to run as one layer.
Pure spec + NumPy: each backend executes the rewritten nodes its own way."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Union

import numpy as np

from cvtool.model.layers import Activation, BatchNorm2d, Conv2d, Layer, Node


def fold_batchnorm(nodes: list[Node], params: dict[str, np.ndarray]) -> tuple[list[Node], dict[str, np.ndarray]]:
    """Evaluation-mode BatchNorm right after a conv (its only consumer) folded into the conv:
    BN(conv(x)) = s * (w * x + b - mean) + beta = (s * w) * x + (s * (b - mean) + beta),
    s = gamma / sqrt(running_var + eps) per output channel. Computed in float64, stored in the
    parameters' dtype; the BN nodes disappear and their consumers read the conv."""
    kinds = {n.name: n.layer for n in nodes}
    uses = Counter(src for n in nodes for src in n.inputs)
    p, out = dict(params), []
    rename: dict[str, str] = {}  # a folded BN -> the conv that now stands for it
    for n in nodes:
        n = replace(n, inputs=tuple(rename.get(src, src) for src in n.inputs))
        src = n.inputs[0] if len(n.inputs) == 1 else ""  # "": no node has that name
        if isinstance(n.layer, BatchNorm2d) and isinstance(kinds.get(src), Conv2d) and uses[src] == 1:
            f64 = {k: np.asarray(p[f"{n.name}.{k}"], np.float64) for k in ("weight", "bias", "running_mean", "running_var")}
            s = f64["weight"] / np.sqrt(f64["running_var"] + n.layer.eps)
            w = p[f"{src}.weight"]
            b = np.asarray(p.get(f"{src}.bias", 0.0), np.float64)
            p[f"{src}.weight"] = (w.astype(np.float64) * s[:, None, None, None]).astype(w.dtype)
            p[f"{src}.bias"] = (s * (b - f64["running_mean"]) + f64["bias"]).astype(w.dtype)
            rename[n.name] = src
            continue
        out.append(n)
    return out, p


@dataclass(frozen=True)
class ConvReLU:
    """Inference only: a Conv2d whose single consumer is a ReLU, run as one layer (conv.conv2d_relu)."""

    conv: Conv2d


@dataclass(frozen=True)
class FusedNode:
    """A node of the rewritten inference graph: Node's fields, its layer a spec layer or a ConvReLU."""

    name: str
    layer: Layer | ConvReLU
    inputs: tuple[str, ...]


GraphNode = Union[Node, FusedNode]  # what a backend executes: a spec's node, or one rewritten here


def fuse_relu(nodes: list[Node]) -> list[FusedNode]:
    """Each Conv2d -> ReLU pair (the ReLU the conv's only consumer) as one ConvReLU node under the
    conv's name (its parameters keep their names); the ReLU's consumers read the conv."""
    by_name = {n.name: n for n in nodes}
    uses = Counter(src for n in nodes for src in n.inputs)
    relu_of = {n.inputs[0]: n.name for n in nodes
               if isinstance(n.layer, Activation) and n.layer.kind == "relu" and len(n.inputs) == 1
               and isinstance(getattr(by_name.get(n.inputs[0]), "layer", None), Conv2d) and uses[n.inputs[0]] == 1}
    rename = {relu: conv for conv, relu in relu_of.items()}
    out = []
    for n in nodes:
        if n.name in rename:
            continue
        layer = ConvReLU(n.layer) if n.name in relu_of and isinstance(n.layer, Conv2d) else n.layer
        out.append(FusedNode(n.name, layer, tuple(rename.get(src, src) for src in n.inputs)))
    return out


