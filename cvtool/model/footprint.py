"""What the U-Net of a ModelSpec needs in memory, as cvtool.footprint Needs: its weights, and the arrays of one
forward pass (inference) or one training step, per layer of its graph. Lower bounds, as everything there."""

from __future__ import annotations

import math

from cvtool.footprint import Need, array
from cvtool.model.spec import Activation, BatchNorm2d, Conv2d, ConvTranspose2d, MaxPool2d, ModelSpec


def weights_need(spec: ModelSpec, itemsize: int = 8) -> Need:
    """The parameters of `spec` (drawn in float64 by cvtool.model.spec.init_params before the cast)."""
    return Need(f"the weights of a width-{spec.width} depth-{spec.depth} U-Net",
                sum(math.prod(s) for s in spec.param_shapes().values()) * itemsize)


def unet_needs(spec: ModelSpec, N: int, H: int, W: int, *, itemsize: int = 4, training: bool = False) -> list[Need]:
    """The U-Net of `spec` on a batch N x C x H x W: its weights, input and logits; inference also keeps the
    encoder's skips while it goes down and up, training every layer's output for the backward pass."""
    shapes = {"input": (spec.in_channels, H, W)}
    for node in spec.graph():
        L = node.layer
        C, h, w = shapes[node.inputs[0]]
        if isinstance(L, (Conv2d, BatchNorm2d, Activation)):
            shapes[node.name] = (getattr(L, "out_channels", C), h, w)  # 3x3 convs pad 1: the size stays
        elif isinstance(L, MaxPool2d):
            shapes[node.name] = (C, h // L.stride, w // L.stride)
        elif isinstance(L, ConvTranspose2d):
            shapes[node.name] = (L.out_channels, h * L.stride, w * L.stride)
        else:  # Concat: channels add up
            shapes[node.name] = (sum(shapes[i][0] for i in node.inputs), h, w)
    per = {k: N * math.prod(v) * itemsize for k, v in shapes.items()}
    needs = [weights_need(spec), array("the input batch", (N, spec.in_channels, H, W), itemsize),
             array("the logits", (N, spec.num_classes, H, W), itemsize)]
    if training:  # every output is kept for the backward pass, which then needs at least the largest one's gradient
        inner = {k: v for k, v in per.items() if k not in ("input", spec.graph()[-1].name)}
        needs += [Need("the activations kept for the backward pass", sum(inner.values())),
                  Need("the largest activation's gradient", max(inner.values(), default=0))]
    else:
        needs.append(Need("the encoder's skip connections", sum(per[f"enc{l}.act2"] for l in range(spec.depth))))
    return needs


__all__ = ["unet_needs", "weights_need"]
