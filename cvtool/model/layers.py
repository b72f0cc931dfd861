"""The layer records a network is made of (names and fields as torch.nn spells them), the graph's Node, and the
U-Net's double-conv block, which both networks' decoders use (cvtool/model/spec.py, cvtool/model/lite0.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from cvtool.arithmetic import is_symmetric, resolve_padding

ACTIVATIONS = ("relu", "sigmoid", "tanh")  # what a spec's `activation` may be
KINDS = ACTIVATIONS + ("relu6",)  # what an Activation node may be (relu6: min(max(x, 0), 6), EfficientNet-Lite's)


# --- layer records (names and fields as torch.nn spells them) ---------------------------------

@dataclass(frozen=True)
class Conv2d:
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int | tuple[int, int, int, int] = 0  # p on every side, or (top, bottom, left, right): TF "SAME"
    dilation: int = 1
    bias: bool = True
    groups: int = 1  # in_channels = out_channels = groups: depthwise

    @property
    def pads(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((top, bottom), (left, right))."""
        return resolve_padding(self.padding, kernel=self.kernel_size)

    @property
    def symmetric(self) -> bool:
        return is_symmetric(self.pads) and self.pads[0] == self.pads[1]


@dataclass(frozen=True)
class ConvTranspose2d:
    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    bias: bool = True


@dataclass(frozen=True)
class BatchNorm2d:
    num_features: int
    eps: float = 1e-5
    momentum: float = 0.1


@dataclass(frozen=True)
class Activation:
    kind: str  # one of KINDS


@dataclass(frozen=True)
class MaxPool2d:
    kernel_size: int
    stride: int


@dataclass(frozen=True)
class Concat:
    """Channel concatenation (dim 1) of the node's inputs, in order."""


@dataclass(frozen=True)
class Add:
    """Element-wise sum of the node's two inputs (same shape): a residual connection."""


Layer = Union[Conv2d, ConvTranspose2d, BatchNorm2d, Activation, MaxPool2d, Concat, Add]


@dataclass(frozen=True)
class Node:
    name: str  # unique; the parameter prefix for layers with parameters
    layer: Layer
    inputs: tuple[str, ...]  # node names, or "input"


# --- the spec ---------------------------------------------------------------------------------


def double_conv(nodes: list[Node], prefix: str, x: str, cin: int, cout: int, activation: str, norm: str) -> str:
    """conv3x3 -> [bn] -> act, twice (the U-Net's block, in its encoder and in every decoder). Returns the name of
    the last node."""
    for j, c in ((1, cin), (2, cout)):
        conv = f"{prefix}.conv{j}"
        nodes.append(Node(conv, Conv2d(c, cout, 3, padding=1, bias=norm == "none"), (x,)))
        x = conv
        if norm == "batch":
            nodes.append(Node(f"{prefix}.bn{j}", BatchNorm2d(cout), (x,)))
            x = f"{prefix}.bn{j}"
        nodes.append(Node(f"{prefix}.act{j}", Activation(activation), (x,)))
        x = f"{prefix}.act{j}"
    return x
