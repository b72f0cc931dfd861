"""ImageNet weights for the lite0 encoder: efficientnet_pytorch's tensor names mapped onto the spec's, strictly.

The weights come as a state dict in the efficientnet_pytorch layout (`_conv_stem`, `_bn0`,
`_blocks.N._expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`, `_conv_head`, `_bn1`, `_fc`); reading the
file is the CLI's business (a .pth needs torch), this module only sees name -> array. Every encoder tensor must be
there with exactly the shape the spec needs; the classifier's head may be there (it is not part of the
segmentation net) and BatchNorm's `num_batches_tracked` counters are ignored; anything else is refused. The first
tensor that does not fit is named in the one-line error.

Grayscale input (in_channels 1) takes the stem's weights summed over the three colour channels: a grey image
copied into R, G and B gives the same stem output, since every channel is normalised alike.
The weights were trained on inputs (x - 127) / 128, x in 0..255 (TF style): NORMALIZATION, in ModelMeta's units.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from cvtool.errors import UsageError
from cvtool.model import lite0
from cvtool.model.spec import ModelSpec, Node, check_params, init_params, param_shapes

MEAN, STD = 127 / 255, 128 / 255  # (image/255 - MEAN) / STD = (x - 127) / 128
BN = ("weight", "bias", "running_mean", "running_var")
# the spec's layer name inside a block -> efficientnet_pytorch's
BLOCK_LAYERS = {"expand": "_expand_conv", "bn0": "_bn0", "dw": "_depthwise_conv", "bn1": "_bn1",
                "project": "_project_conv", "bn2": "_bn2"}
STEM_LAYERS = {"enc.stem.conv": "_conv_stem", "enc.stem.bn": "_bn0"}
HEAD_LAYERS = {"enc.head.conv": "_conv_head", "enc.head.bn": "_bn1", "fc": "_fc"}
FC = {"fc.weight": (1000, lite0.HEAD), "fc.bias": (1000,)}  # the ImageNet classifier after global average pooling


def normalization(in_channels: int) -> tuple[list[float], list[float]]:
    """(mean, std) per channel for ModelMeta: the normalisation the weights expect."""
    return [MEAN] * in_channels, [STD] * in_channels


def source_name(name: str) -> str:
    """A spec parameter name (`enc.b3.dw.weight`) -> efficientnet_pytorch's (`_blocks.3._depthwise_conv.weight`)."""
    layer, _, tensor = name.rpartition(".")
    if layer in STEM_LAYERS:
        return f"{STEM_LAYERS[layer]}.{tensor}"
    if layer in HEAD_LAYERS:
        return f"{HEAD_LAYERS[layer]}.{tensor}"
    enc, block, part = layer.split(".")
    if enc != "enc" or not block.startswith("b") or part not in BLOCK_LAYERS:
        raise ValueError(f"{name} is not a parameter of the lite0 encoder")
    return f"_blocks.{block[1:]}.{BLOCK_LAYERS[part]}.{tensor}"


def encoder_shapes(in_channels: int, head: bool = False) -> dict[str, tuple[int, ...]]:
    """The spec's encoder parameters (and with `head`, the classifier's conv head and fc), name -> shape."""
    nodes: list[Node] = []
    x = lite0.encoder(nodes, in_channels)[-1][0]
    if head:
        lite0.head(nodes, x)
    shapes = param_shapes(nodes)
    return {**shapes, **FC} if head else shapes


def _known_extra(name: str) -> bool:
    return name.endswith(".num_batches_tracked") or name.split(".")[0] in ("_conv_head", "_bn1", "_fc")


def map_weights(sd: dict[str, np.ndarray], in_channels: int = 3, *, head: bool = False,
                source: str = "the weights") -> dict[str, np.ndarray]:
    """efficientnet_pytorch state dict -> the spec's encoder parameters (float32) for `in_channels` (3, or 1: the
    stem folded), checked strictly.

    Raises UsageError naming the first tensor (in the file's order) that is unknown or has another shape,
    else the first that is missing."""
    want = {source_name(k): (k, shape) for k, shape in encoder_shapes(3, head).items()}  # the file's stem is RGB
    for k, v in sd.items():
        if k not in want:
            if _known_extra(k):
                continue
            raise UsageError(f"{source}: tensor {k!r} is not part of EfficientNet-Lite0 (efficientnet_pytorch layout)",
                             hint="--weights takes a state dict of the same architecture")
        if tuple(np.shape(v)) != want[k][1]:
            raise UsageError(f"{source}: tensor {k!r} has shape {tuple(np.shape(v))}, EfficientNet-Lite0 needs "
                             f"{want[k][1]}", hint="--weights takes a state dict of the same architecture")
    missing = [k for k in want if k not in sd]
    if missing:
        raise UsageError(f"{source}: tensor {missing[0]!r} is missing ({len(missing)} of {len(want)} absent)",
                         hint="--weights takes a whole EfficientNet-Lite0 state dict")
    return for_channels({name: np.array(sd[k], np.float32) for k, (name, _) in want.items()}, in_channels)


def for_channels(weights: dict[str, np.ndarray], in_channels: int) -> dict[str, np.ndarray]:
    """RGB encoder weights for a net taking `in_channels`: 3 as they are, 1 with the stem summed over R, G, B."""
    if in_channels not in (1, 3):
        raise UsageError(f"the pretrained EfficientNet-Lite0 stem takes 3 (RGB) or 1 (grey) channels, not {in_channels}",
                         hint="--weights none trains the lite0 encoder from scratch; or convert the images")
    stem = weights["enc.stem.conv.weight"]
    if in_channels == 1 and stem.shape[1] == 3:
        weights = {**weights, "enc.stem.conv.weight": stem.sum(axis=1, keepdims=True)}
    return weights


def pretrained_params(spec: ModelSpec, sd: dict[str, np.ndarray], seed: int = 0,
                      source: str = "the weights") -> dict[str, np.ndarray]:
    """A whole lite0 network's parameters: the decoder drawn by init_params(seed), the encoder from `sd`."""
    if spec.encoder != "lite0":
        raise UsageError(f"pretrained weights are for the lite0 encoder, not {spec.encoder!r}",
                         hint="train --encoder lite0")
    params = init_params(spec, seed)
    params.update(map_weights(sd, spec.in_channels, source=source))
    check_params(spec, params)
    return params


def classify(features: np.ndarray, fc_weight: np.ndarray, fc_bias: np.ndarray) -> np.ndarray:
    """(N, 1280, h, w) conv-head features -> (N, 1000) ImageNet logits: global average pooling, then _fc."""
    pooled = np.asarray(features, np.float64).mean(axis=(2, 3))
    return pooled @ np.asarray(fc_weight, np.float64).T + np.asarray(fc_bias, np.float64)


__all__ = ["MEAN", "STD", "normalization", "source_name", "encoder_shapes", "map_weights", "for_channels",
           "pretrained_params", "classify"]


class EncoderStart(NamedTuple):
    """What `train --encoder/--weights` asks of a new network: the encoder, and its weights already mapped onto
    the spec's names and checked (None: random, as the U-Net's)."""

    encoder: str
    weights: dict[str, np.ndarray] | None  # the encoder's parameters (cvtool.model.pretrained.map_weights)
    source: str | None  # the file they came from

    def params(self, spec, seed: int) -> dict[str, np.ndarray]:
        """The network's starting parameters: init_params(seed), the encoder's replaced by the weights."""
        from cvtool.model.spec import check_params, init_params

        params = init_params(spec, seed)
        if self.weights is not None:
            params.update(for_channels(self.weights, spec.in_channels))
            check_params(spec, params)
        return params

    def normalization(self, in_channels: int) -> tuple[list[float], list[float]] | None:
        """(mean, std) the weights were trained with, for the model's metadata; None: the data's own statistics."""
        return None if self.weights is None else normalization(in_channels)


class Starts(NamedTuple):
    """The encoders a new network may start from on this machine, and how: get(encoder) gives its EncoderStart
    (the weights read and mapped when first asked). A planned run picks one (cvtool.train.plan.choose_encoder)."""

    encoders: tuple[str, ...]
    get: Callable[[str], EncoderStart]

    @classmethod
    def only(cls, start: EncoderStart) -> "Starts":
        return cls((start.encoder,), lambda encoder: start)
