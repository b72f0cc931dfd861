"""A stack of layers, traced: shapes, channels and the receptive field after every layer.

    "conv k3 p1 c16; pool k2 s2; tconv k2 s2 c8"   layers separated by ';' (or new lines); each is a kind, then
                                                  tokens in any order:
    kind      conv | tconv | pool (= maxpool) | maxpool | avgpool
    k3, k3x5  kernel (KH x KW)            s2, s2x1  stride (pools: default = kernel)
    p1, p1x2  padding, also p0,1,0,1 (top,bottom,left,right), psame, pvalid
    d2        dilation                    c16       output channels (conv/tconv)
    op1       output_padding (tconv)      g2        groups (conv/tconv)      ceil  ceil_mode (pools)

Receptive field (one dimension, in input pixels; Dumoulin & Visin, Araujo et al.):
    conv/pool:  r' = r + (d(k-1)+1 - 1)*j,   j' = j*s,   start' = start + ((d(k-1))/2 - p_begin)*j
    tconv:      j' = j/s, and an output pixel sees `tconv_span` neighbouring input pixels
Sizes come from cvtool.arithmetic. A `Step` holds everything a later pass needs (shapes, channels, padding, field,
parameters, multiply-accumulates), so that bigger networks (a U-Net with skips) can be traced one `step` at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from cvtool.arithmetic import PaddingArg, Pads2d, conv_output, conv_transpose_output, pair, pool_output, resolve_padding
from cvtool.convcalc import explain
from cvtool.errors import UsageError

KINDS = {"conv": "conv", "tconv": "tconv", "pool": "maxpool", "maxpool": "maxpool", "avgpool": "avgpool"}
POOLS = ("maxpool", "avgpool")
TITLES = {"conv": "convolution", "tconv": "transposed convolution", "maxpool": "max pooling",
          "avgpool": "average pooling"}


# --- parsing ----------------------------------------------------------------------------------

def parse_ints(text: str, what: str, counts: tuple[int, ...] = (1, 2)) -> tuple[int, ...]:
    """'3' -> (3,), '3x5' -> (3, 5), '0,1,0,1' -> (0, 1, 0, 1); anything else -> UsageError."""
    parts = re.split(r"[x,]", text.strip().lower())
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"malformed {what} {text!r}", hint="use a number, or HxW such as 3x5") from None
    if len(vals) not in counts:
        raise UsageError(f"malformed {what} {text!r}: {len(vals)} values, expected {' or '.join(map(str, counts))}")
    return vals


def parse_padding(text: str) -> PaddingArg:
    """'1' -> 1, '1x2' -> (1, 2), '0,1,0,1' -> (0, 1, 0, 1), 'same', 'valid'."""
    t = text.strip().lower()
    if t in ("same", "valid"):
        return t
    vals = parse_ints(t, "padding", (1, 2, 4))
    return vals[0] if len(vals) == 1 else vals


@dataclass(frozen=True)
class LayerSpec:
    """One layer as written: every geometric parameter, per dimension (H, W)."""

    kind: str  # conv | tconv | maxpool | avgpool
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: PaddingArg = 0  # int | (ph, pw) | (top, bottom, left, right) | 'same' | 'valid'
    dilation: tuple[int, int] = (1, 1)
    output_padding: tuple[int, int] = (0, 0)
    out_channels: int | None = None  # None: same as the input (and pools always keep them)
    groups: int = 1
    ceil_mode: bool = False
    bias: bool = True
    text: str = ""  # as written, for messages

    @property
    def title(self) -> str:
        return TITLES[self.kind]

    def describe(self) -> str:
        """Short text, e.g. 'conv k3 s1 p1 c16'."""
        def dims(v):
            return str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"

        pad = self.padding
        ptxt = pad if isinstance(pad, (int, str)) else ("x" if len(pad) == 2 else ",").join(map(str, pad))
        parts = [self.kind, f"k{dims(self.kernel)}", f"s{dims(self.stride)}", f"p{ptxt}"]
        if self.dilation != (1, 1):
            parts.append(f"d{dims(self.dilation)}")
        if self.output_padding != (0, 0):
            parts.append(f"op{dims(self.output_padding)}")
        if self.out_channels is not None:
            parts.append(f"c{self.out_channels}")
        if self.groups != 1:
            parts.append(f"g{self.groups}")
        if self.ceil_mode:
            parts.append("ceil")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        pad = self.padding
        return {"kind": self.kind, "kernel": list(self.kernel), "stride": list(self.stride),
                "padding": pad if isinstance(pad, (int, str)) else list(pad),
                "dilation": list(self.dilation), "output_padding": list(self.output_padding),
                "out_channels": self.out_channels, "groups": self.groups, "ceil_mode": self.ceil_mode}


def make_layer(kind: str, kernel, stride=None, padding: PaddingArg = 0, dilation=1, output_padding=0,
               out_channels: int | None = None, groups: int = 1, ceil_mode: bool = False, text: str = "") -> LayerSpec:
    """A checked LayerSpec: pools default their stride to the kernel; impossible combinations -> UsageError."""
    if kind not in KINDS:
        raise UsageError(f"unknown layer kind {kind!r}", hint="use conv, tconv, pool, maxpool or avgpool")
    kind = KINDS[kind]
    where = f" in {text!r}" if text else ""
    k = pair(kernel, "kernel")
    s = pair(stride if stride is not None else (k if kind in POOLS else 1), "stride")
    d = pair(dilation, "dilation")
    op = pair(output_padding, "output_padding")
    for name, v in (("kernel", k), ("stride", s), ("dilation", d)):
        if min(v) < 1:
            raise UsageError(f"{name} must be at least 1, got {min(v)}{where}")
    if kind != "tconv" and op != (0, 0):
        raise UsageError(f"output_padding is for transposed convolutions only{where}")
    if kind in POOLS:
        if out_channels is not None or groups != 1:
            raise UsageError(f"pooling keeps the channels: no c or g{where}")
        if kind == "avgpool" and d != (1, 1):
            raise UsageError(f"average pooling has no dilation{where}")
        if padding == "valid":
            padding = 0
        if isinstance(padding, str) or (not isinstance(padding, int) and len(padding) == 4):
            raise UsageError(f"pooling takes a symmetric padding (p or PHxPW){where}")
    else:
        if ceil_mode:
            raise UsageError(f"ceil_mode is for pooling only{where}")
        if kind == "tconv" and isinstance(padding, str):
            raise UsageError(f"transposed convolution takes numeric padding only, not {padding!r}{where}")
        if groups < 1 or (out_channels is not None and out_channels % groups):
            raise UsageError(f"groups {groups} must divide the output channels {out_channels}{where}")
    if out_channels is not None and out_channels < 1:
        raise UsageError(f"channels must be at least 1, got {out_channels}{where}")
    return LayerSpec(kind, k, s, padding, d, op, out_channels, groups, ceil_mode, text=text)


_TOKEN = re.compile(r"^(op|k|s|p|d|c|g)(.+)$")


def parse_layer(text: str) -> LayerSpec:
    """'conv k3 p1 c16' -> LayerSpec."""
    words = text.split()
    if not words:
        raise UsageError("empty layer in the chain", hint="layers are separated by ';'")
    kind, seen = words[0].lower(), set()
    tokens: dict[str, Any] = {}  # each key its own type: p a PaddingArg, c/g an int, ceil a bool, else ints
    if kind not in KINDS:
        raise UsageError(f"unknown layer kind {words[0]!r} in {text.strip()!r}",
                         hint="start each layer with conv, tconv, pool, maxpool or avgpool")
    for w in words[1:]:
        w = w.lower()
        if w == "ceil":
            tokens["ceil"] = True
            continue
        m = _TOKEN.match(w)
        if not m:
            raise UsageError(f"unknown token {w!r} in {text.strip()!r}",
                             hint="tokens: k<int>, s<int>, p<int|same|valid>, d<int>, c<int>, op<int>, g<int>, ceil")
        key, val = m.groups()
        if key in seen:
            raise UsageError(f"{key} given twice in {text.strip()!r}")
        seen.add(key)
        if key == "p":
            tokens[key] = parse_padding(val)
        elif key in ("c", "g"):
            tokens[key] = parse_ints(val, f"{key} value in {text.strip()!r}", (1,))[0]
        else:
            tokens[key] = parse_ints(val, f"{key} value in {text.strip()!r}")
    if "k" not in tokens:
        raise UsageError(f"layer {text.strip()!r} has no kernel", hint="add k<int>, e.g. k3")
    return make_layer(kind, tokens["k"], tokens.get("s"), tokens.get("p", 0), tokens.get("d", 1),
                      tokens.get("op", 0), tokens.get("c"), tokens.get("g", 1), tokens.get("ceil", False),
                      text=text.strip())


def parse_chain(text: str) -> list[LayerSpec]:
    parts = re.split(r"[;\n]", text)
    if not text.strip():
        raise UsageError("empty chain", hint='e.g. --chain "conv k3 p1 c16; pool k2 s2"')
    if parts and not parts[-1].strip():
        parts = parts[:-1]  # a trailing ';' is fine
    return [parse_layer(p) for p in parts]


# --- sizes ------------------------------------------------------------------------------------

def resolve_pads(spec: LayerSpec, hw: tuple[int, int]) -> Pads2d:
    if spec.kind in POOLS:
        assert not isinstance(spec.padding, str), "make_layer gives pools a numeric padding"
        ph, pw = pair(spec.padding, "padding")
        return ((ph, ph), (pw, pw))
    return resolve_padding(spec.padding, kernel=spec.kernel, stride=spec.stride, dilation=spec.dilation,
                             input_size=hw)


def output_1d(kind: str, i: int, k: int, s: int, p: tuple[int, int], d: int = 1, op: int = 0,
              ceil_mode: bool = False) -> int:
    """Output size along one dimension for any layer kind (dispatch to cvtool.arithmetic)."""
    if kind == "conv":
        return conv_output(i, k, s, p, d)
    if kind == "tconv":
        return conv_transpose_output(i, k, s, p, op, d)
    if p[0] != p[1]:
        raise UsageError("pooling takes a symmetric padding")
    return pool_output(i, k, s, p[0], d, ceil_mode)


def output_hw(spec: LayerSpec, hw: tuple[int, int]) -> tuple[tuple[int, int], Pads2d]:
    """(OH, OW) and the padding actually applied ((top, bottom), (left, right))."""
    pads = resolve_pads(spec, hw)
    out = tuple(output_1d(spec.kind, hw[a], spec.kernel[a], spec.stride[a], pads[a], spec.dilation[a],
                          spec.output_padding[a], spec.ceil_mode) for a in (0, 1))
    return out, pads  # type: ignore[return-value]


def formulas(spec: LayerSpec, hw: tuple[int, int], pads: Pads2d) -> list[explain.Formula]:
    """The size formula with numbers substituted: one for a square case, else one per dimension."""
    same_both = hw[0] == hw[1] and pads[0] == pads[1] and all(
        v[0] == v[1] for v in (spec.kernel, spec.stride, spec.dilation, spec.output_padding))
    dims = [("o", 0)] if same_both else [("OH", 0), ("OW", 1)]
    res = []
    for lhs, a in dims:
        i, k, s, p, d = hw[a], spec.kernel[a], spec.stride[a], pads[a], spec.dilation[a]
        if spec.kind == "conv":
            res.append(explain.conv(i, k, s, p, d, lhs))
        elif spec.kind == "tconv":
            res.append(explain.conv_transpose(i, k, s, p, spec.output_padding[a], d, lhs))
        else:
            res.append(explain.pool(i, k, s, p[0], d, spec.ceil_mode, lhs))
    return res


# --- receptive field --------------------------------------------------------------------------

Geom = tuple  # one layer along one dimension: (kind, k, s, d)


@dataclass(frozen=True)
class Field:
    """Receptive field of one output pixel along one dimension, in network-input pixels."""

    size: int = 1  # pixels from the first to the last one that can influence it (max over pixels)
    jump: Fraction = Fraction(1)  # distance between neighbouring output pixels (product of strides)
    start: Fraction = Fraction(0)  # centre of the first output pixel's field (input coordinates)
    path: tuple[Geom, ...] = ()  # the layers so far, for the exact size through transposed convs

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size, "jump": fmt_frac(self.jump), "start": fmt_frac(self.start)}


def fmt_frac(q: Fraction) -> str:
    return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"


def _back(g: Geom, lo: int, hi: int) -> tuple[int, int] | None:
    """Input pixels [lo', hi'] that output pixels lo..hi of one layer depend on (padding only shifts, so it is left
    out); None when they depend on none (a transposed conv's empty phase)."""
    kind, k, s, d = g
    if kind != "tconv":
        return lo * s, hi * s + (k - 1) * d

    def taps(y: int) -> list[int]:  # x with x*s + t*d == y
        return [(y - t * d) // s for t in range(k) if (y - t * d) % s == 0]

    # taps move right with y: the extremes sit at the first and last y that have any
    first = next((taps(y) for y in range(lo, min(hi, lo + s * d) + 1) if taps(y)), None)
    last = next((taps(y) for y in range(hi, max(lo, hi - s * d) - 1, -1) if taps(y)), None)
    if first is None or last is None:
        return None
    return min(first), max(last)


def field_size(path: tuple[Geom, ...]) -> int:
    """Exact receptive field after `path`: trace each output phase back to the network input. Only transposed
    convolutions make pixels differ, with period = the product of their strides."""
    period = 1
    for g in path:
        if g[0] == "tconv":
            period *= g[2]
    best = 0
    for y in range(period):
        span: tuple[int, int] | None = (y, y)
        for g in reversed(path):
            if span is None:
                break
            span = _back(g, *span)
        if span is not None:
            best = max(best, span[1] - span[0] + 1)
    return best


def tconv_span(k: int, s: int, d: int = 1) -> int:
    """Most input pixels one output pixel of a transposed convolution depends on (first to last)."""
    return field_size((("tconv", k, s, d),))


def field_after(spec: LayerSpec, f: Field, a: int, pad_begin: int) -> Field:
    """The field after this layer along dimension a (0: H, 1: W).

    conv/pool: r' = r + (d(k-1))*j, j' = j*s, start' = start + (d(k-1)/2 - p_begin)*j;
    tconv: j' = j/s, start' = start + (p_begin - d(k-1)/2)/s * j, r' exact (field_size)."""
    k, s, d = spec.kernel[a], spec.stride[a], spec.dilation[a]
    span = d * (k - 1)
    path = f.path + ((spec.kind, k, s, d),)
    if spec.kind == "tconv":
        return Field(field_size(path), f.jump / s, f.start + Fraction(2 * pad_begin - span, 2 * s) * f.jump, path)
    return Field(field_size(path), f.jump * s, f.start + Fraction(span - 2 * pad_begin, 2) * f.jump, path)


# --- tracing ----------------------------------------------------------------------------------

Shape = tuple  # (C or None, H, W)


@dataclass(frozen=True)
class Step:
    """One traced layer: what went in, what came out, and the cost."""

    index: int  # 1-based position in the chain
    layer: LayerSpec
    in_shape: Shape  # (C, H, W), C None when unknown
    out_shape: Shape
    pads: Pads2d
    rf: tuple[Field, Field]  # receptive field geometry along H and W
    formulas: tuple = ()  # explain.Formula: one, or one per dimension

    @property
    def weights(self) -> int | None:
        """Kernel weights, Cout * Cin/groups * KH * KW (pools 0; None while a channel count is unknown)."""
        if self.layer.kind in POOLS:
            return 0
        cin, cout = self.in_shape[0], self.out_shape[0]
        if cin is None or cout is None:
            return None
        return cout * (cin // self.layer.groups) * self.layer.kernel[0] * self.layer.kernel[1]

    @property
    def params(self) -> int | None:
        """Weights + biases."""
        w = self.weights
        return None if w is None else w + (self.out_shape[0] if w and self.layer.bias else 0)

    @property
    def macs(self) -> int | None:
        """Multiply-accumulates of one image (pools: 0; their compares/adds are not counted).

        conv: every weight once per output pixel; tconv: once per input pixel (it scatters)."""
        w = self.weights
        if w is None:
            return None
        _, h, w_ = self.in_shape if self.layer.kind == "tconv" else self.out_shape
        return w * h * w_

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "layer": self.layer.describe(), "spec": self.layer.to_dict(),
                "input": list(self.in_shape), "output": list(self.out_shape[1:]), "shape": list(self.out_shape),
                "channels": self.out_shape[0], "padding": [list(p) for p in self.pads],
                "receptive_field": [f.size for f in self.rf], "jump": [fmt_frac(f.jump) for f in self.rf],
                "start": [fmt_frac(f.start) for f in self.rf],
                "formulas": [f.substituted for f in self.formulas], "params": self.params, "macs": self.macs}


def step(index: int, spec: LayerSpec, in_shape: Shape, fields: tuple[Field, Field]) -> Step:
    """Trace one layer. Errors name the layer."""
    c, h, w = in_shape
    try:
        (oh, ow), pads = output_hw(spec, (h, w))
    except UsageError as e:
        raise UsageError(f"layer {index} ({spec.text or spec.describe()}), input {h}x{w}: {e.message}", e.hint) from None
    if spec.kind in POOLS:
        cout = c
    else:
        if c is not None and c % spec.groups:
            raise UsageError(f"layer {index} ({spec.text or spec.describe()}): groups {spec.groups} "
                             f"must divide the input channels {c}")
        cout = spec.out_channels if spec.out_channels is not None else c
    fields = (field_after(spec, fields[0], 0, pads[0][0]), field_after(spec, fields[1], 1, pads[1][0]))
    return Step(index, spec, (c, h, w), (cout, oh, ow), pads, fields, tuple(formulas(spec, (h, w), pads)))


def trace(layers: list[LayerSpec], hw: tuple[int, int], channels: int | None = None) -> list[Step]:
    """Every layer in order; the field of the network input is one pixel."""
    shape: Shape = (channels, hw[0], hw[1])
    fields = (Field(1), Field(1))
    steps = []
    for n, spec in enumerate(layers, 1):
        st = step(n, spec, shape, fields)
        steps.append(st)
        shape, fields = st.out_shape, st.rf
    return steps


__all__ = ["LayerSpec", "Field", "Step", "make_layer", "parse_layer", "parse_chain", "parse_padding", "parse_ints",
           "output_1d", "output_hw", "formulas", "tconv_span", "field_after", "step", "trace", "KINDS", "POOLS"]
