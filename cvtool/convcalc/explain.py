"""Convolution arithmetic as text: the formula, then the same formula with the numbers in.

Every size printed here comes from `cvtool.arithmetic` (the one place sizes are computed); this
module only writes down the steps that lead there, so that a student can redo them by hand.
One spatial dimension at a time; the CLI calls it once per dimension (H, W).

    conv:            o = floor((i + 2p - k)/s) + 1          (d(k-1) + 1 in place of k when dilated)
    transposed conv: o = (i - 1)*s - 2p + k + output_padding
    pooling:         o = floor((i + 2p - k)/s) + 1          (ceil with ceil_mode)
"""

from __future__ import annotations

from typing import NamedTuple

from cvtool.arithmetic import Pad, ceil_div, conv_output, conv_transpose_output, effective_kernel, pool_output, same_pad
from cvtool.errors import UsageError


class Formula(NamedTuple):
    general: str  # symbols only: 'o = floor((i + 2p - k)/s) + 1'
    substituted: str  # numbers in, every step: 'o = floor((32 + 2*1 - 3)/1) + 1 = ... = 32'
    value: int  # the output size, from cvtool.arithmetic
    notes: tuple[str, ...] = ()


class Symbolic(NamedTuple):
    """A formula as a function of the input size i: o = f(i)."""

    general: str  # 'o = floor((i + 2p - k)/s) + 1'
    substituted: str  # 'o = floor((i - 2)/2) + 1 = floor(i/2)'
    summary: str  # 'halves the size (rounding down)'
    min_input: int  # smallest i the formula holds for (the kernel must fit)


# --- pieces of text ---------------------------------------------------------------------------

def _pad_terms(p: Pad) -> tuple[str, str]:
    """Padding as symbols and as numbers: ('2p', '2*1') or ('p_b + p_e', '0 + 1')."""
    pb, pe = p
    if pb == pe:
        return "2p", f"2*{pb}"
    return "p_b + p_e", f"{pb} + {pe}"


def _kernel_terms(k: int, d: int) -> tuple[str, str]:
    """The span of the (dilated) kernel as symbols and as numbers."""
    if d == 1:
        return "k", f"{k}"
    return "(d(k-1) + 1)", f"({d}*({k}-1) + 1)"


def lin(a: int, b: int, var: str = "i") -> str:
    """a*i + b as a person writes it: 'i', '2i', 'i - 2', '2i + 1', '3'."""
    if a == 0:
        return str(b)
    head = var if a == 1 else f"{a}{var}"
    if b == 0:
        return head
    return f"{head} + {b}" if b > 0 else f"{head} - {-b}"


def ratio_word(s: int) -> str:
    return {2: "halves", 3: "thirds", 4: "quarters"}.get(s, f"divides by {s}")


def times_word(s: int) -> str:
    return {2: "doubles", 3: "triples", 4: "quadruples"}.get(s, f"multiplies by {s}")


def _check(k: int, s: int, d: int, p: Pad) -> None:
    """The parameter checks of arithmetic (stride 0, negative padding, ...) before any text."""
    for name, v in (("kernel", k), ("stride", s), ("dilation", d)):
        if v < 1:
            raise UsageError(f"{name} must be at least 1, got {v}")
    if min(p) < 0:
        raise UsageError(f"padding must not be negative, got {p}")


# --- one size, numbers substituted ------------------------------------------------------------

def conv(i: int, k: int, s: int = 1, p: Pad = (0, 0), d: int = 1, lhs: str = "o") -> Formula:
    o = conv_output(i, k, s, p, d)
    P, Pn = _pad_terms(p)
    K, Kn = _kernel_terms(k, d)
    ek = effective_kernel(k, d)
    n = i + p[0] + p[1] - ek  # how far the window can slide, in input pixels
    general = f"o = floor((i + {P} - {K})/s) + 1"
    sub = f"{lhs} = floor(({i} + {Pn} - {Kn})/{s}) + 1 = floor({n}/{s}) + 1 = {n // s} + 1 = {o}"
    notes = []
    if d > 1:
        notes.append(f"dilation {d}: the kernel spans d(k-1) + 1 = {ek} input pixels")
    if n % s:
        notes.append(f"{n} is not a multiple of the stride {s}: floor drops the last {n % s} "
                     f"row(s)/column(s) of the padded input, where no window fits")
    return Formula(general, sub, o, tuple(notes))


def conv_transpose(i: int, k: int, s: int = 1, p: Pad = (0, 0), op: int = 0, d: int = 1,
                   lhs: str = "o") -> Formula:
    o = conv_transpose_output(i, k, s, p, op, d)
    P = "2p" if p[0] == p[1] else "p_b - p_e"
    Pn = f"2*{p[0]}" if p[0] == p[1] else f"{p[0]} - {p[1]}"
    K = "k" if d == 1 else "d(k-1) + 1"
    Kn = f"{k}" if d == 1 else f"{d}*({k}-1) + 1"
    ek = effective_kernel(k, d)
    general = f"o = (i - 1)*s - {P} + {K} + output_padding"
    sub = (f"{lhs} = ({i} - 1)*{s} - {Pn} + {Kn} + {op} = "
           f"{(i - 1) * s} - {p[0] + p[1]} + {ek} + {op} = {o}")
    notes = []
    sources = conv_sources(o - op, k, s, p, d, i)
    if s > 1 and len(sources) > 1:
        notes.append(f"a convolution with the same k, s, p maps each of the sizes {', '.join(map(str, sources))} "
                     f"to {i}: output_padding (0..{s - 1}) picks which one comes back")
    if p[0] == p[1] and p[0] <= ek - 1:
        zeros = f" with {s - 1} zero(s) inserted between input pixels," if s > 1 else ""
        notes.append(f"the same as a stride-1 convolution (kernel flipped) of the input{zeros} "
                     f"padded by d(k-1) - p = {ek - 1 - p[0]}" + (f" (+{op} at the end)" if op else ""))
    return Formula(general, sub, o, tuple(notes))


def conv_sources(start: int, k: int, s: int, p: Pad, d: int, i: int) -> list[int]:
    """The input sizes m >= start that a convolution maps to i (the ambiguity stride > 1 creates)."""
    found = []
    for m in range(max(1, start), start + s):
        try:
            if conv_output(m, k, s, p, d) == i:
                found.append(m)
        except UsageError:
            pass
    return found


def pool(i: int, k: int, s: int, p: int = 0, d: int = 1, ceil_mode: bool = False, lhs: str = "o") -> Formula:
    o = pool_output(i, k, s, p, d, ceil_mode)
    K, Kn = _kernel_terms(k, d)
    ek = effective_kernel(k, d)
    n = i + 2 * p - ek
    rnd = "ceil" if ceil_mode else "floor"
    q = -(-n // s) if ceil_mode else n // s
    general = f"o = {rnd}((i + 2p - {K})/s) + 1"
    drop = " - 1" if q + 1 != o else ""  # ceil_mode's last window would start in the right padding
    sub = f"{lhs} = {rnd}(({i} + 2*{p} - {Kn})/{s}) + 1{drop} = {rnd}({n}/{s}) + 1{drop} = {q} + 1{drop} = {o}"
    notes = []
    if drop:
        notes.append(f"ceil_mode: a last window starting at {q * s} >= i + p = {i + p} would cover only "
                     "right padding, so PyTorch drops it (the - 1)")
    elif ceil_mode and n % s:
        notes.append("ceil_mode keeps a last, partial window that hangs over the end of the input")
    elif n % s:
        notes.append(f"{n} is not a multiple of the stride {s}: floor drops the last {n % s} "
                     "row(s)/column(s), where no window fits (ceil_mode would keep a partial window)")
    return Formula(general, sub, o, tuple(notes))


# --- as a function of i -----------------------------------------------------------------------

def conv_symbolic(k: int, s: int = 1, p: Pad = (0, 0), d: int = 1, *, rounding: str = "floor") -> Symbolic:
    """o(i) for a convolution (or a pooling, rounding='ceil' for ceil_mode)."""
    _check(k, s, d, p)
    P, _ = _pad_terms(p)
    K, _ = _kernel_terms(k, d)
    ek = effective_kernel(k, d)
    c = p[0] + p[1] - ek  # o = round((i + c)/s) + 1
    general = f"o = {rounding}((i + {P} - {K})/s) + 1"
    if s == 1:
        sub = f"o = ({lin(1, c)}) + 1 = {lin(1, c + 1)}"
        summary = "keeps the size" if c + 1 == 0 else (
            f"shrinks by {-(c + 1)}" if c + 1 < 0 else f"grows by {c + 1}")
    else:
        # round((i + c)/s) + 1 = round((i + c + s)/s)
        sub = f"o = {rounding}(({lin(1, c)})/{s}) + 1 = {rounding}(({lin(1, c + s)})/{s})"
        sub = sub.replace(f"(i)/{s}", f"i/{s}")
        if c + s == 0:
            summary = f"{ratio_word(s)} the size (rounding {'down' if rounding == 'floor' else 'up'})"
        elif rounding == "floor" and c + s == s - 1:
            summary = f"{ratio_word(s)} the size, rounding up: ceil(i/{s})"
        else:
            summary = f"about i/{s}"
    if rounding == "ceil" and (p[0] > 0 or ek < s):
        summary += "; minus 1 when the last window would start in the right padding"
    return Symbolic(general, sub, summary, max(1, ek - p[0] - p[1]))


def conv_transpose_symbolic(k: int, s: int = 1, p: Pad = (0, 0), op: int = 0, d: int = 1) -> Symbolic:
    _check(k, s, d, p)
    ek = effective_kernel(k, d)
    K = "k" if d == 1 else "d(k-1) + 1"
    P = "2p" if p[0] == p[1] else "p_b - p_e"
    general = f"o = (i - 1)*s - {P} + {K} + output_padding"
    terms = ("(i - 1)" if s == 1 else f"{s}(i - 1)")
    if p[0] + p[1]:
        terms += f" - {p[0] + p[1]}"
    terms += f" + {ek}"
    if op:
        terms += f" + {op}"
    b = ek + op - p[0] - p[1] - s  # o = s*i + b
    sub = f"o = {terms} = {lin(s, b)}"
    if s == 1:
        summary = "keeps the size" if b == 0 else (f"grows by {b}" if b > 0 else f"shrinks by {-b}")
    else:
        summary = f"{times_word(s)} the size" + ("" if b == 0 else f", then {'plus' if b > 0 else 'minus'} {abs(b)}")
    # o >= 1 needs s*i + b >= 1
    return Symbolic(general, sub, summary, max(1, -(-(1 - b) // s)))


def same_symbolic(k: int, s: int, d: int = 1) -> Symbolic:
    """padding='same': o = i (stride 1), o = ceil(i/s) (stride > 1, TensorFlow's rule)."""
    _check(k, s, d, (0, 0))
    if s == 1:
        return Symbolic("o = i  (padding 'same')", "o = i", "keeps the size", 1)
    return Symbolic("o = ceil(i/s)  (padding 'same', TensorFlow's rule)", f"o = ceil(i/{s})",
                    f"{ratio_word(s)} the size, rounding up", 1)


# --- padding 'same' ---------------------------------------------------------------------------

class Same(NamedTuple):
    pad: Pad | None  # (begin, end); None when it depends on an input size not given
    output: int | None
    lines: tuple[str, ...]


def same(k: int, s: int = 1, d: int = 1, i: int | None = None, lhs: str = "o") -> Same:
    """Which padding keeps the size, and why; what 'same' means with stride > 1."""
    _check(k, s, d, (0, 0))
    total = d * (k - 1)
    lines = []
    if s == 1:
        pad = same_pad(k, 1, d)
        rule = "(K-1)/2" if d == 1 else "d(K-1)/2"
        lines.append(f"total padding = d(k-1) = {d}*({k}-1) = {total}")
        if total % 2 == 0:
            lines.append(f"even total: p = {rule} = {total // 2} on each side (padding={total // 2} "
                         f"or padding='same' in PyTorch)")
        else:
            lines.append(f"odd total (even kernel): no symmetric padding keeps the size; PyTorch's "
                         f"padding='same' pads {pad[0]} at the start and {pad[1]} at the end (the extra "
                         f"pixel at the end)")
            lines.append(f"symmetric p = {pad[0]} gives o = i - 1, p = {pad[1]} gives o = i + 1")
        o = None
        if i is not None:
            f = conv(i, k, 1, pad, d, lhs)
            o = f.value
            lines.append(f.substituted)
        return Same(pad, o, tuple(lines))
    lines.append("stride > 1: no padding keeps the size; PyTorch refuses padding='same' for strided "
                 "convolutions, TensorFlow's 'SAME' means o = ceil(i/s)")
    lines.append("TensorFlow: total = max((o - 1)*s + d(k-1) + 1 - i, 0), begin = total//2, "
                 "end = total - begin (the extra pixel at the end)")
    if total % 2 == 0:
        lines.append(f"the symmetric p = d(k-1)/2 = {total // 2} gives the same size: "
                     f"floor((i - 1)/s) + 1 = ceil(i/s)")
    if i is None:
        return Same(None, None, tuple(lines))
    o = ceil_div(i, s)
    pad = same_pad(k, s, d, i)
    lines.append(f"{lhs} = ceil({i}/{s}) = {o}; total = max(({o} - 1)*{s} + {effective_kernel(k, d)} - {i}, 0) "
                 f"= {pad[0] + pad[1]} -> begin {pad[0]}, end {pad[1]}")
    check = conv(i, k, s, pad, d, lhs)
    lines.append(check.substituted)
    if total % 2 == 1:
        half = total // 2 + 1  # PyTorch users often write padding=k//2 (= this, for d = 1)
        o_sym = conv_output(i, k, s, half, d)
        lines.append(f"symmetric p = ceil(d(k-1)/2) = {half} would give {o_sym}" +
                     (" as well" if o_sym == o else f", not {o}"))
    return Same(pad, check.value, tuple(lines))


__all__ = ["Formula", "Symbolic", "Same", "conv", "conv_transpose", "pool", "conv_symbolic",
           "conv_transpose_symbolic", "same_symbolic", "same", "conv_sources", "lin"]
