"""EfficientNet-Lite0 as a spec graph: the encoder, and a U-Net decoder over its five feature strides.

EfficientNet-Lite is the lecture's own layers: convolution, depthwise (grouped) convolution, BatchNorm,
ReLU6 and residual additions (no squeeze-excite, no swish; stem and head widths fixed). Per block (MBConv):

    [expand conv1x1 -> bn0 -> relu6]   (expand ratio 6; the first stage has none)
    depthwise conv kxk / s, "SAME" -> bn1 -> relu6
    project conv1x1 -> bn2             (linear: no activation)
    [+ the block's input]              (stride 1 and the same width in and out)

Padding is TensorFlow's "SAME": out = ceil(in / s), the k - s missing pixels split with the extra one at the
bottom/right. The weights were trained with it; torch's symmetric padding would shift every stride-2 layer by
half a pixel. For an input divisible by the stride the split is fixed, so it is written as explicit pads; the
net takes sizes divisible by 32, which makes that so at every layer. BatchNorm eps is TF's 1e-3.

Features for the decoder (stride: channels): 2: 16 (stage 0), 4: 24, 8: 40, 16: 112, 32: 320 (the last block).
The decoder is the U-Net's: per level transposed conv 2x2/2, concat the skip, double conv; widths
8w, 4w, 2w, 3w/2, w (w = spec.width: 128/64/32/24/16 at the default 16), then a 1x1 head.
Node names are cvtool's (`enc.b3.dw`); cvtool/model/pretrained.py maps efficientnet_pytorch's names onto them.
"""

from __future__ import annotations

from typing import NamedTuple

from cvtool.model.layers import (
    Activation,
    Add,
    BatchNorm2d,
    Concat,
    Conv2d,
    ConvTranspose2d,
    Node,
    double_conv,
)

STEM, HEAD = 32, 1280  # the Lite variants fix these for every width multiplier
BN_EPS = 1e-3  # TensorFlow's BatchNorm epsilon, which the weights' running statistics go with
BN_MOMENTUM = 0.1  # torch's default: a fine-tuning run moves the ImageNet statistics to its data quickly


class Stage(NamedTuple):
    repeats: int
    kernel: int
    stride: int  # of the stage's first block
    expand: int
    out: int


STAGES = (Stage(1, 3, 1, 1, 16), Stage(2, 3, 2, 6, 24), Stage(2, 5, 2, 6, 40), Stage(3, 3, 2, 6, 80),
          Stage(3, 5, 1, 6, 112), Stage(4, 5, 2, 6, 192), Stage(1, 3, 1, 6, 320))
FEATURE_STAGES = (0, 1, 2, 4, 6)  # the last block of each of these gives the stride 2, 4, 8, 16, 32 features


class Block(NamedTuple):
    number: int  # efficientnet_pytorch's _blocks.N
    cin: int
    cout: int
    kernel: int
    stride: int
    expand: int

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


def blocks() -> list[Block]:
    """The 16 MBConv blocks in order."""
    out: list[Block] = []
    cin = STEM
    for st in STAGES:
        for r in range(st.repeats):
            out.append(Block(len(out), cin, st.out, st.kernel, st.stride if r == 0 else 1, st.expand))
            cin = st.out
    return out


def same_pads(k: int, s: int) -> tuple[int, int, int, int]:
    """TF "SAME" as (top, bottom, left, right) for an input divisible by s: k - s pixels in all (at least 0),
    the larger half after."""
    total = max(k - s, 0)
    return (total // 2, total - total // 2) * 2


def decoder_widths(width: int) -> tuple[int, ...]:
    """Output channels of the decoder levels, from stride 16 down to stride 1."""
    return 8 * width, 4 * width, 2 * width, max(1, 3 * width // 2), width


def _conv_bn(nodes: list[Node], name: str, x: str, cin: int, cout: int, k: int = 1, s: int = 1, groups: int = 1,
             bn: str = "bn", act: str | None = "act") -> str:
    """conv (no bias: BN follows) -> BN -> [relu6]; returns the last node's name."""
    pads = same_pads(k, s)
    padding = pads[0] if len(set(pads)) == 1 else pads
    nodes.append(Node(name, Conv2d(cin, cout, k, s, padding, bias=False, groups=groups), (x,)))
    prefix = name.rsplit(".", 1)[0]
    nodes.append(Node(f"{prefix}.{bn}", BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM), (name,)))
    x = f"{prefix}.{bn}"
    if act is not None:
        nodes.append(Node(f"{prefix}.{act}", Activation("relu6"), (x,)))
        x = f"{prefix}.{act}"
    return x


def encoder(nodes: list[Node], in_channels: int) -> list[tuple[str, int]]:
    """Stem and blocks appended to `nodes`; returns the (node, channels) of the stride 2 ... 32 features."""
    x = _conv_bn(nodes, "enc.stem.conv", "input", in_channels, STEM, k=3, s=2)
    features, last = [], {}
    for b in blocks():
        p, xin, c = f"enc.b{b.number}", x, b.cin * b.expand
        if b.expand != 1:
            x = _conv_bn(nodes, f"{p}.expand", x, b.cin, c, bn="bn0", act="act0")
        x = _conv_bn(nodes, f"{p}.dw", x, c, c, k=b.kernel, s=b.stride, groups=c, bn="bn1", act="act1")
        x = _conv_bn(nodes, f"{p}.project", x, c, b.cout, bn="bn2", act=None)
        if b.residual:
            nodes.append(Node(f"{p}.add", Add(), (x, xin)))
            x = f"{p}.add"
        last[b.cout] = x
    for st in FEATURE_STAGES:
        features.append((last[STAGES[st].out], STAGES[st].out))
    return features


def head(nodes: list[Node], x: str) -> str:
    """The ImageNet classifier's conv head (320 -> 1280, BN, ReLU6) after the encoder; pooling and _fc follow
    outside the graph (pretrained.classify)."""
    return _conv_bn(nodes, "enc.head.conv", x, STAGES[-1].out, HEAD)


def lite0_graph(in_channels: int, num_classes: int, width: int, activation: str, norm: str) -> list[Node]:
    """The encoder, the decoder over its features (ModelSpec's activation and norm in the decoder's double convs),
    and a 1x1 head to num_classes logits."""
    nodes: list[Node] = []
    feats = encoder(nodes, in_channels)
    x, cin = feats[-1]
    skips = feats[:-1][::-1] + [None]  # stride 16, 8, 4, 2, then full resolution without a skip
    for level, (skip, c) in zip(range(4, -1, -1), zip(skips, decoder_widths(width))):
        nodes.append(Node(f"up{level}", ConvTranspose2d(cin, c, 2, stride=2), (x,)))
        x, cat = f"up{level}", c
        if skip is not None:
            nodes.append(Node(f"cat{level}", Concat(), (x, skip[0])))
            x, cat = f"cat{level}", c + skip[1]
        x = double_conv(nodes, f"dec{level}", x, cat, c, activation, norm)
        cin = c
    nodes.append(Node("head", Conv2d(cin, num_classes, 1), (x,)))
    return nodes


def classifier_graph(in_channels: int = 3) -> list[Node]:
    """Stem, blocks and conv head: (N, C, H, W) -> the (N, 1280, H/32, W/32) features the ImageNet _fc pools."""
    nodes: list[Node] = []
    head(nodes, encoder(nodes, in_channels)[-1][0])
    return nodes


__all__ = ["STAGES", "Block", "blocks", "same_pads", "decoder_widths", "encoder", "head", "lite0_graph",
           "classifier_graph"]
