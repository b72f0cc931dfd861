"""Convolution arithmetic: output sizes and padding, one spatial dimension at a time.

Standard library only (no numpy) so that `cvtool convcalc` starts fast. Every backend and the
CLI take their shape maths from here; nothing else computes an output size.

Notation (Dumoulin & Visin): i input size, k kernel, s stride, p padding, d dilation, o output.
Padding of one dimension is a pair (begin, end); a symmetric padding p is (p, p).

    conv:            o = floor((i + p_begin + p_end - d*(k-1) - 1) / s) + 1
    transposed conv: o = (i-1)*s - p_begin - p_end + d*(k-1) + output_padding + 1
                       = (i-1)*s - 2p + k + output_padding          (d = 1, symmetric p)
    pooling:         as conv, with ceil instead of floor when ceil_mode (PyTorch's rule:
                     the last window must start inside the input or its left padding)
"""

from __future__ import annotations

from typing import Sequence, Union

from cvtool.errors import UsageError

Pad = tuple[int, int]  # (begin, end) of one dimension
Pads2d = tuple[Pad, Pad]  # ((top, bottom), (left, right))
PaddingArg = Union[int, str, Sequence[int]]


def pair(v: int | Sequence[int], what: str = "value") -> tuple[int, int]:
    """3 -> (3, 3); (3, 5) -> (3, 5)."""
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(a) for a in v)
    if len(t) == 1:
        return (t[0], t[0])
    if len(t) != 2:
        raise UsageError(f"{what} needs one value or two (height, width), got {len(t)}: {tuple(v)}")
    return t


def _check_positive(name: str, v: int) -> None:
    if v < 1:
        raise UsageError(f"{name} must be at least 1, got {v}")


def _check_pad(p: Pad) -> None:
    if p[0] < 0 or p[1] < 0:
        raise UsageError(f"padding must not be negative, got {p}")


def effective_kernel(k: int, d: int = 1) -> int:
    """A kernel of size k with dilation d spans d*(k-1)+1 input pixels."""
    return d * (k - 1) + 1


def same_pad(k: int, s: int = 1, d: int = 1, i: int | None = None) -> Pad:
    """Padding that keeps the size (s=1), or gives ceil(i/s) (s>1, TensorFlow's 'SAME').

    The total d*(k-1) is split begin = total // 2, end = the rest: for odd k this is the
    lecture's (K-1)/2 on both sides; for even k the extra pixel goes to the end, as PyTorch does.
    With s > 1 the total depends on i: max((ceil(i/s)-1)*s + d*(k-1) + 1 - i, 0).
    """
    _check_positive("kernel", k)
    _check_positive("stride", s)
    _check_positive("dilation", d)
    if s == 1:
        total = d * (k - 1)
    else:
        if i is None:
            raise UsageError("padding 'same' with stride > 1 depends on the input size",
                             hint="give the input size, or an explicit padding")
        o = -(-i // s)
        total = max((o - 1) * s + effective_kernel(k, d) - i, 0)
    return (total // 2, total - total // 2)


def resolve_padding(padding: PaddingArg, *, kernel, stride=1, dilation=1, input_size=None) -> Pads2d:
    """Any accepted padding form -> ((top, bottom), (left, right)).

    int p | (ph, pw) | (top, bottom, left, right) | 'same' | 'valid'.
    """
    kh, kw = pair(kernel, "kernel")
    sh, sw = pair(stride, "stride")
    dh, dw = pair(dilation, "dilation")
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            ih, iw = pair(input_size, "input") if input_size is not None else (None, None)
            return (same_pad(kh, sh, dh, ih), same_pad(kw, sw, dw, iw))
        raise UsageError(f"unknown padding {padding!r}", hint="use an integer, HxW, top,bottom,left,right, 'same' or 'valid'")
    if isinstance(padding, int):
        pads = ((padding, padding), (padding, padding))
    else:
        t = tuple(int(a) for a in padding)
        if len(t) == 1:
            pads = ((t[0], t[0]), (t[0], t[0]))
        elif len(t) == 2:
            pads = ((t[0], t[0]), (t[1], t[1]))
        elif len(t) == 4:
            pads = ((t[0], t[1]), (t[2], t[3]))
        else:
            raise UsageError(f"padding needs 1, 2 or 4 values, got {len(t)}: {t}")
    for p in pads:
        _check_pad(p)
    return pads


def is_symmetric(pads: Pads2d) -> bool:
    return pads[0][0] == pads[0][1] and pads[1][0] == pads[1][1]


# --- one dimension ---------------------------------------------------------------------------

def _checked(i: int, k: int, s: int, p: int | Pad, d: int) -> Pad:
    """Validate one dimension's parameters; the padding as (begin, end)."""
    pb, pe = (p, p) if isinstance(p, int) else p
    for name, v in (("input size", i), ("kernel", k), ("stride", s), ("dilation", d)):
        _check_positive(name, v)
    _check_pad((pb, pe))
    return pb, pe


def conv_output(i: int, k: int, s: int = 1, p: int | Pad = 0, d: int = 1) -> int:
    """Output size of a convolution along one dimension."""
    pb, pe = _checked(i, k, s, p, d)
    ek = effective_kernel(k, d)
    padded = i + pb + pe
    if ek > padded:
        dil = f" (dilated to {ek})" if d > 1 else ""
        raise UsageError(f"kernel {k}{dil} is larger than the padded input {padded} ({i} + {pb} + {pe})")
    return (padded - ek) // s + 1


def conv_transpose_output(i: int, k: int, s: int = 1, p: int | Pad = 0, output_padding: int = 0, d: int = 1) -> int:
    """Output size of a transposed convolution along one dimension (the shape of conv's dL/dx)."""
    pb, pe = _checked(i, k, s, p, d)
    if output_padding < 0:
        raise UsageError(f"output_padding must not be negative, got {output_padding}")
    if output_padding >= max(s, d):
        raise UsageError(
            f"output_padding {output_padding} must be smaller than the stride {s} or the dilation {d}",
            hint="output_padding only picks among the sizes that stride > 1 makes ambiguous")
    o = (i - 1) * s - pb - pe + effective_kernel(k, d) + output_padding
    if o < 1:
        raise UsageError(f"transposed convolution output would be {o}: padding {pb}+{pe} crops away everything")
    return o


def pool_output(i: int, k: int, s: int | None = None, p: int = 0, d: int = 1, ceil_mode: bool = False) -> int:
    """Output size of max/avg pooling along one dimension (PyTorch's rule, stride defaults to k)."""
    s = k if s is None else s
    _check_positive("kernel", k)
    _check_positive("stride", s)
    if p < 0:
        raise UsageError(f"padding must not be negative, got {p}")
    if 2 * p > k:
        raise UsageError(f"pooling padding {p} must be at most half the kernel {k}")
    if not ceil_mode:
        return conv_output(i, k, s, p, d)
    _check_positive("input size", i)
    _check_positive("dilation", d)
    ek = effective_kernel(k, d)
    # ceil may let the one window hang over the end of the padded input (PyTorch allows it)
    o = -(-(i + 2 * p - ek) // s) + 1
    if (o - 1) * s >= i + p:  # the last window would start in the right padding only
        o -= 1
    if o < 1:
        raise UsageError(f"kernel {k} is larger than the padded input {i + 2 * p} ({i} + {p} + {p})")
    return o


# --- two dimensions ---------------------------------------------------------------------------

def conv2d_output(hw, kernel, stride=1, padding: PaddingArg = 0, dilation=1) -> tuple[int, int]:
    (kh, kw), (sh, sw), (dh, dw) = pair(kernel, "kernel"), pair(stride, "stride"), pair(dilation, "dilation")
    (ph, pw) = resolve_padding(padding, kernel=(kh, kw), stride=(sh, sw), dilation=(dh, dw), input_size=hw)
    h, w = pair(hw, "input")
    return (conv_output(h, kh, sh, ph, dh), conv_output(w, kw, sw, pw, dw))


def conv_transpose2d_output(hw, kernel, stride=1, padding: PaddingArg = 0, output_padding=0, dilation=1) -> tuple[int, int]:
    (kh, kw), (sh, sw), (dh, dw) = pair(kernel, "kernel"), pair(stride, "stride"), pair(dilation, "dilation")
    oph, opw = pair(output_padding, "output_padding")
    if isinstance(padding, str):
        raise UsageError("transposed convolution takes numeric padding only")
    (ph, pw) = resolve_padding(padding, kernel=(kh, kw))
    h, w = pair(hw, "input")
    return (conv_transpose_output(h, kh, sh, ph, oph, dh), conv_transpose_output(w, kw, sw, pw, opw, dw))


def pool2d_output(hw, kernel, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> tuple[int, int]:
    kh, kw = pair(kernel, "kernel")
    sh, sw = pair(stride if stride is not None else kernel, "stride")
    ph, pw = pair(padding, "padding")
    dh, dw = pair(dilation, "dilation")
    h, w = pair(hw, "input")
    return (pool_output(h, kh, sh, ph, dh, ceil_mode), pool_output(w, kw, sw, pw, dw, ceil_mode))


def parse_size(text: str, what: str = "size") -> tuple[int, ...]:
    """'224' -> (224,); '224x160' -> (224, 160). Malformed -> UsageError."""
    parts = text.lower().replace("*", "x").replace(",", "x").split("x")
    try:
        vals = tuple(int(p) for p in parts)
    except ValueError:
        raise UsageError(f"malformed {what} {text!r}", hint="use a number, or HxW such as 224x160") from None
    if not 1 <= len(vals) <= 2:
        raise UsageError(f"malformed {what} {text!r}", hint="use a number, or HxW such as 224x160")
    return vals


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def round_up(a: int, m: int) -> int:
    """The smallest multiple of m that is >= a (a size padded to a net's multiple)."""
    return ceil_div(a, m) * m


__all__ = [
    "pair", "same_pad", "resolve_padding", "is_symmetric", "effective_kernel",
    "conv_output", "conv_transpose_output", "pool_output",
    "conv2d_output", "conv_transpose2d_output", "pool2d_output", "parse_size", "ceil_div", "round_up",
]
