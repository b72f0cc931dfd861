"""The network as data: a U-Net described once, built by every backend.

A `ModelSpec` (a few numbers) expands into a graph: a topologically ordered list of `Node`s, each a
layer record named like its torch counterpart. Parameters travel between backends as
`dict[str, np.ndarray]` with torch-style dotted names (`enc0.conv1.weight`), conv weights OIHW,
transposed-conv weights IOHW. Initial weights are drawn here, so every backend starts identical.

Per level l (width w_l = width * 2**l):   conv3x3 -> [bn] -> act -> conv3x3 -> [bn] -> act
down: maxpool 2x2 / 2; bottom: the same double conv at width * 2**depth;
up: convtranspose 2x2 / 2, concat the skip, double conv; head: conv1x1 -> num_classes logits.
With encoder "lite0" the encoder is EfficientNet-Lite0 (cvtool/model/lite0.py) and the same decoder reads its
stride-2 to stride-32 features.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from cvtool.arithmetic import (
    ceil_div,
    conv2d_output,
    conv_transpose2d_output,
    effective_kernel,
    pool2d_output,
)
from cvtool.errors import UsageError
from cvtool.model.layers import (  # the records, re-exported: every backend reads them from here
    ACTIVATIONS,
    Activation,
    Add,
    BatchNorm2d,
    Concat,
    Conv2d,
    ConvTranspose2d,
    MaxPool2d,
    Node,
    double_conv,
)
from cvtool.model.lite0 import lite0_graph

NORMS = ("batch", "none")
ENCODERS = ("unet", "lite0")
NAMES = {"unet": "U-Net", "lite0": "EfficientNet-Lite0 + U-Net decoder"}  # how messages call each network


@dataclass(frozen=True)
class ModelSpec:
    in_channels: int = 3
    num_classes: int = 4
    width: int = 16
    depth: int = 3
    activation: str = "relu"
    norm: str = "batch"
    arch: str = "unet"
    encoder: str = "unet"  # unet: the double convs and max pooling above; lite0: EfficientNet-Lite0

    def __post_init__(self):
        if self.arch != "unet":
            raise UsageError(f"unknown architecture {self.arch!r}")
        if self.encoder not in ENCODERS:
            raise UsageError(f"unknown encoder {self.encoder!r}", hint=f"choose one of {', '.join(ENCODERS)}")
        if self.encoder == "lite0" and self.depth != 5:
            raise UsageError(f"the lite0 encoder has 5 levels (stride 32): depth must be 5, got {self.depth}")
        if self.activation not in ACTIVATIONS:
            raise UsageError(f"unknown activation {self.activation!r}", hint=f"choose one of {', '.join(ACTIVATIONS)}")
        if self.norm not in NORMS:
            raise UsageError(f"unknown norm {self.norm!r}", hint=f"choose one of {', '.join(NORMS)}")
        for f in ("in_channels", "num_classes", "width"):
            if getattr(self, f) < 1:
                raise UsageError(f"{f} must be at least 1, got {getattr(self, f)}")
        if not 0 <= self.depth <= 6:
            raise UsageError(f"depth must be between 0 and 6, got {self.depth}")
        if self.num_classes < 2:
            raise UsageError("a segmentation net needs at least 2 classes")

    @property
    def multiple(self) -> int:
        """Input height and width must be divisible by this (one halving per level)."""
        return 2 ** self.depth

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":  # a file written before `encoder` existed: a U-Net
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"model spec has unknown fields: {', '.join(sorted(unknown))}")
        return cls(**d)

    def graph(self) -> list[Node]:
        if self.encoder == "lite0":
            return lite0_graph(self.in_channels, self.num_classes, self.width, self.activation, self.norm)
        return unet_graph(self)

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return param_shapes(self.graph())

    def num_params(self) -> int:
        return sum(int(np.prod(s)) for n, s in self.param_shapes().items() if not _is_buffer(n))


def unet_graph(spec: ModelSpec) -> list[Node]:
    nodes: list[Node] = []
    x, cin = "input", spec.in_channels
    skips: list[tuple[str, int]] = []
    for level in range(spec.depth):
        c = spec.width * 2**level
        x = double_conv(nodes, f"enc{level}", x, cin, c, spec.activation, spec.norm)
        skips.append((x, c))
        nodes.append(Node(f"pool{level}", MaxPool2d(2, 2), (x,)))
        x, cin = f"pool{level}", c
    c = spec.width * 2**spec.depth
    x = double_conv(nodes, "mid", x, cin, c, spec.activation, spec.norm)
    cin = c
    for level in reversed(range(spec.depth)):
        skip, cs = skips[level]
        nodes.append(Node(f"up{level}", ConvTranspose2d(cin, cs, 2, stride=2), (x,)))
        nodes.append(Node(f"cat{level}", Concat(), (f"up{level}", skip)))
        x = double_conv(nodes, f"dec{level}", f"cat{level}", 2 * cs, cs, spec.activation, spec.norm)
        cin = cs
    nodes.append(Node("head", Conv2d(cin, spec.num_classes, 1), (x,)))
    return nodes


# --- parameters -------------------------------------------------------------------------------

BUFFER_SUFFIXES = (".running_mean", ".running_var")


def _is_buffer(name: str) -> bool:
    return name.endswith(BUFFER_SUFFIXES)


def param_shapes(nodes: list[Node]) -> dict[str, tuple[int, ...]]:
    """Name -> shape for every parameter and buffer, in graph order (torch's state_dict order)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for n in nodes:
        L = n.layer
        if isinstance(L, Conv2d):
            shapes[f"{n.name}.weight"] = (L.out_channels, L.in_channels // L.groups, L.kernel_size, L.kernel_size)  # OIHW
            if L.bias:
                shapes[f"{n.name}.bias"] = (L.out_channels,)
        elif isinstance(L, ConvTranspose2d):
            shapes[f"{n.name}.weight"] = (L.in_channels, L.out_channels, L.kernel_size, L.kernel_size)  # IOHW
            if L.bias:
                shapes[f"{n.name}.bias"] = (L.out_channels,)
        elif isinstance(L, BatchNorm2d):
            for p in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{n.name}.{p}"] = (L.num_features,)
    return shapes


def trainable(name: str) -> bool:
    return not _is_buffer(name)


def init_params(spec: ModelSpec, seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    """He-normal conv weights (fan-in; Xavier for sigmoid/tanh), zero biases, BN gamma 1 beta 0.

    Drawn here, once, so that a seed gives identical starting weights on every backend.
    """
    rng = np.random.default_rng(seed)
    gain = 2.0 if spec.activation == "relu" else 1.0
    params: dict[str, np.ndarray] = {}
    for name, shape in param_shapes(spec.graph()).items():
        if name.endswith(".weight") and len(shape) == 4:
            is_up = name.startswith("up")
            fan_in = (shape[0] if is_up else shape[1]) * shape[2] * shape[3]
            if is_up:  # a 2x2/2 transposed conv: each output pixel sees one input pixel per channel
                fan_in = shape[0]
            params[name] = rng.normal(0.0, np.sqrt(gain / fan_in), size=shape).astype(dtype)
        elif name.endswith(".weight") or name.endswith(".running_var"):
            params[name] = np.ones(shape, dtype)
        else:  # biases, running means
            params[name] = np.zeros(shape, dtype)
    return params


def check_params(spec: ModelSpec, params: dict[str, np.ndarray]) -> None:
    """Same names and shapes as the spec asks for, else a clear error."""
    want = param_shapes(spec.graph())
    missing = [k for k in want if k not in params]
    extra = [k for k in params if k not in want]
    if missing or extra:
        raise UsageError(f"parameters do not match the model spec (missing: {missing[:3]}, unexpected: {extra[:3]})")
    for k, s in want.items():
        if tuple(params[k].shape) != s:
            raise UsageError(f"parameter {k} has shape {tuple(params[k].shape)}, the spec needs {s}")


# --- shapes, parameters, FLOPs, strides and receptive fields, layer by layer ------------------

@dataclass
class LayerTrace:
    name: str
    op: str
    out_shape: tuple[int, int, int]  # (C, H, W)
    params: int
    flops: int  # multiply-adds counted as 2
    detail: str = ""
    inputs: tuple[str, ...] = field(default_factory=tuple)
    jump: float = 1.0  # input pixels between neighbouring output pixels (the stride so far)
    rf: int = 1  # receptive field: input pixels across that one output pixel sees (the widest path)


def _conv_detail(L: Conv2d) -> str:
    (t, b), (left, right) = L.pads
    pad = f"p{t}" if L.symmetric else f"p{t},{b},{left},{right}"  # top, bottom, left, right
    return f"k{L.kernel_size} s{L.stride} {pad}" + (f" g{L.groups}" if L.groups > 1 else "")


def trace(spec: ModelSpec, hw: tuple[int, int]) -> list[LayerTrace]:
    """Shapes of every node for one (H, W) input; errors on sizes the net cannot take."""
    H, W = hw
    if H % spec.multiple or W % spec.multiple:
        raise UsageError(f"input {H}x{W} is not divisible by {spec.multiple} (2**depth)",
                         hint="pad the input (cvtool segment does this) or pick another size")
    shapes: dict[str, tuple[int, int, int]] = {"input": (spec.in_channels, H, W)}
    field_of: dict[str, tuple[float, int]] = {"input": (1.0, 1)}  # (jump, rf)
    rows = []
    for n in spec.graph():
        L = n.layer
        c, h, w = shapes[n.inputs[0]]
        jump, rf = field_of[n.inputs[0]][0], max(field_of[i][1] for i in n.inputs)
        params = flops = 0
        if isinstance(L, Conv2d):
            oh, ow = conv2d_output((h, w), L.kernel_size, L.stride, L.padding, L.dilation)
            out = (L.out_channels, oh, ow)
            params = L.out_channels * L.in_channels // L.groups * L.kernel_size**2 + (L.out_channels if L.bias else 0)
            flops = 2 * L.in_channels // L.groups * L.kernel_size**2 * L.out_channels * oh * ow
            detail, op = _conv_detail(L), "conv"
            rf += int((effective_kernel(L.kernel_size, L.dilation) - 1) * jump)
            jump *= L.stride
        elif isinstance(L, ConvTranspose2d):
            oh, ow = conv_transpose2d_output((h, w), L.kernel_size, L.stride, L.padding, L.output_padding)
            out = (L.out_channels, oh, ow)
            params = L.in_channels * L.out_channels * L.kernel_size**2 + (L.out_channels if L.bias else 0)
            flops = 2 * L.in_channels * L.kernel_size**2 * L.out_channels * h * w
            detail = f"k{L.kernel_size} s{L.stride} p{L.padding}"
            op = "tconv"
            rf += int((ceil_div(L.kernel_size, L.stride) - 1) * jump)  # inputs one output pixel reads
            jump /= L.stride
        elif isinstance(L, MaxPool2d):
            oh, ow = pool2d_output((h, w), L.kernel_size, L.stride)
            out = (c, oh, ow)
            flops = c * oh * ow * (L.kernel_size**2 - 1)
            detail = f"k{L.kernel_size} s{L.stride}"
            op = "maxpool"
            rf += int((L.kernel_size - 1) * jump)
            jump *= L.stride
        elif isinstance(L, BatchNorm2d):
            out, params, flops, detail, op = (c, h, w), 2 * c, 2 * c * h * w, "", "bn"
        elif isinstance(L, Activation):
            out, detail, op = (c, h, w), L.kind, "act"
            flops = c * h * w
        else:  # Concat, Add
            others = [shapes[i] for i in n.inputs]
            add = isinstance(L, Add)
            if any(s[1:] != (h, w) for s in others) or (add and any(s != others[0] for s in others)):
                raise UsageError(f"{n.name}: cannot {'add' if add else 'concatenate'} shapes {others}")
            out = others[0] if add else (sum(s[0] for s in others), h, w)
            detail, op = "+".join(n.inputs), "add" if add else "concat"
            flops = c * h * w if add else 0
        shapes[n.name], field_of[n.name] = out, (jump, rf)
        rows.append(LayerTrace(n.name, op, out, params, flops, detail, n.inputs, jump, rf))
    return rows


def total_flops(spec: ModelSpec, hw: tuple[int, int]) -> int:
    """Forward FLOPs of conv-like layers (the GEMM work) for one image."""
    return sum(r.flops for r in trace(spec, hw) if r.op in ("conv", "tconv"))
