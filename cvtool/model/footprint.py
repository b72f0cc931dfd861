"""What the network of a ModelSpec (the U-Net, with its own encoder or lite0's) needs in memory, as cvtool.footprint
Needs: its weights, and the arrays of one forward pass (inference) or one training step, per layer of its graph.
Lower bounds, as everything there: they refuse what cannot fit, and a refusal must never stop what would.
cvtool.model.activations is the other side on purpose, an upper bound that sizes a pass (whole image or tiles),
which must never overflow. Both read the layer shapes from cvtool.model.spec.trace."""

from __future__ import annotations

import math

from cvtool.footprint import Need, array
from cvtool.model.spec import ModelSpec, trace


def weights_need(spec: ModelSpec, itemsize: int = 8) -> Need:
    """The parameters of `spec` (drawn in float64 by cvtool.model.spec.init_params before the cast)."""
    return Need(f"the weights of a width-{spec.width} depth-{spec.depth} U-Net ({spec.encoder} encoder)",
                sum(math.prod(s) for s in spec.param_shapes().values()) * itemsize)


def unet_needs(spec: ModelSpec, N: int, H: int, W: int, *, itemsize: int = 4, training: bool = False) -> list[Need]:
    """The network of `spec` on a batch N x C x H x W: its weights, input and logits; inference at least its largest
    layer output, training every layer's output for the backward pass. The layers' shapes are spec.trace's at H x W
    rounded down to the net's multiple (a bound from below stays one)."""
    m = spec.multiple
    hw = (max(m, H // m * m), max(m, W // m * m))
    shapes = {"input": (spec.in_channels, H, W), **{t.name: t.out_shape for t in trace(spec, hw)}}
    per = {k: N * math.prod(v) * itemsize for k, v in shapes.items()}
    needs = [weights_need(spec), array("the input batch", (N, spec.in_channels, H, W), itemsize),
             array("the logits", (N, spec.num_classes, H, W), itemsize)]
    if training:  # every output is kept for the backward pass, which then needs at least the largest one's gradient
        inner = {k: v for k, v in per.items() if k not in ("input", spec.graph()[-1].name)}
        needs += [Need("the activations kept for the backward pass", sum(inner.values())),
                  Need("the largest activation's gradient", max(inner.values(), default=0))]
    else:
        needs.append(Need("the largest layer output", max(per.values())))
    return needs


__all__ = ["unet_needs", "weights_need"]
