"""What the network of a ModelSpec (the U-Net, with its own encoder or lite0's) needs in memory, as cvtool.footprint
Needs: its weights, and the arrays of one forward pass (inference) or one training step, per layer of its graph.
Lower bounds, as everything there."""

from __future__ import annotations

import math

from cvtool.arithmetic import conv2d_output, conv_transpose2d_output, pool2d_output
from cvtool.footprint import Need, array
from cvtool.model.spec import Concat, Conv2d, ConvTranspose2d, MaxPool2d, ModelSpec


def output_shape(layer, inputs: list[tuple[int, int, int]]) -> tuple[int, int, int]:
    """(C, H, W) out of one layer of the graph, from its inputs' (cvtool.arithmetic's formulas)."""
    C, h, w = inputs[0]
    if isinstance(layer, Conv2d):
        p = layer.padding if isinstance(layer.padding, int) else tuple(layer.padding)
        return (layer.out_channels, *conv2d_output((h, w), layer.kernel_size, layer.stride, p, layer.dilation))
    if isinstance(layer, ConvTranspose2d):
        return (layer.out_channels, *conv_transpose2d_output((h, w), layer.kernel_size, layer.stride, layer.padding,
                                                             layer.output_padding))
    if isinstance(layer, MaxPool2d):
        return (C, *pool2d_output((h, w), layer.kernel_size, layer.stride))
    if isinstance(layer, Concat):
        return (sum(c for c, _, _ in inputs), h, w)
    return (C, h, w)  # BatchNorm, activations, Add: the shape they are given


def weights_need(spec: ModelSpec, itemsize: int = 8) -> Need:
    """The parameters of `spec` (drawn in float64 by cvtool.model.spec.init_params before the cast)."""
    return Need(f"the weights of a width-{spec.width} depth-{spec.depth} U-Net ({spec.encoder} encoder)",
                sum(math.prod(s) for s in spec.param_shapes().values()) * itemsize)


def unet_needs(spec: ModelSpec, N: int, H: int, W: int, *, itemsize: int = 4, training: bool = False) -> list[Need]:
    """The network of `spec` on a batch N x C x H x W: its weights, input and logits; inference at least its largest
    layer output, training every layer's output for the backward pass."""
    shapes = {"input": (spec.in_channels, H, W)}
    for node in spec.graph():
        shapes[node.name] = output_shape(node.layer, [shapes[i] for i in node.inputs])
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


__all__ = ["unet_needs", "weights_need", "output_shape"]
