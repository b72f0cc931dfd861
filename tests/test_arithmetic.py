"""cvtool.arithmetic against Dumoulin & Visin's 15 relationships, PyTorch's real shapes, and the
explanation text of cvtool.convcalc.explain (its last number must be the size arithmetic computes)."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cvtool.arithmetic import (
    conv2d_output,
    conv_output,
    conv_transpose2d_output,
    conv_transpose_output,
    effective_kernel,
    parse_size,
    pool2d_output,
    pool_output,
    resolve_padding,
    same_pad,
)
from cvtool.convcalc import explain
from cvtool.errors import UsageError

# Dumoulin & Visin, "A guide to convolution arithmetic for deep learning": (i, k, s, p) -> o
CONV = {
    1: (4, 3, 1, 0, 2),  # no padding, unit strides
    2: (5, 4, 1, 2, 6),  # arbitrary padding
    3: (5, 3, 1, 1, 5),  # half (same) padding
    4: (5, 3, 1, 2, 7),  # full padding
    5: (5, 3, 2, 0, 2),  # no padding, strides
    6: (5, 3, 2, 1, 3),  # padding and strides
    "6b": (6, 3, 2, 1, 3),  # ... the odd case: 5 and 6 both give 3
}
POOL = {7: (5, 3, 1, 0, 3)}
# transposed: (i', k, s, p, output_padding) -> o'
TCONV = {
    8: (2, 3, 1, 0, 0, 4),
    9: (6, 4, 1, 2, 0, 5),
    10: (5, 3, 1, 1, 0, 5),
    11: (7, 3, 1, 2, 0, 5),
    12: (2, 3, 2, 0, 0, 5),
    13: (3, 3, 2, 1, 0, 5),
    14: (3, 3, 2, 1, 1, 6),
}
DILATED = {15: (7, 3, 1, 0, 2, 3)}  # (i, k, s, p, d) -> o


@pytest.mark.parametrize("rel", list(CONV))
def test_dumoulin_conv(rel):
    i, k, s, p, o = CONV[rel]
    assert conv_output(i, k, s, p) == o
    assert conv2d_output((i, i), k, s, p) == (o, o)


def test_dumoulin_pool():
    i, k, s, p, o = POOL[7]
    assert pool_output(i, k, s, p) == o
    assert pool2d_output((i, i), k, s, p) == (o, o)


@pytest.mark.parametrize("rel", list(TCONV))
def test_dumoulin_transposed(rel):
    i, k, s, p, op, o = TCONV[rel]
    assert conv_transpose_output(i, k, s, p, op) == o
    assert conv_transpose2d_output((i, i), k, s, p, op) == (o, o)


def test_dumoulin_dilated():
    i, k, s, p, d, o = DILATED[15]
    assert conv_output(i, k, s, p, d) == o
    assert effective_kernel(k, d) == 5


def test_transposed_undoes_the_shape_of_its_convolution():
    """Relationships 8-14 are the transposes of 1-6: conv maps o' back to i'."""
    for i, k, s, p, op, o in TCONV.values():
        assert conv_output(o, k, s, p) == i


# --- against PyTorch's real shapes -----------------------------------------------------------

def torch_shape(fn):
    try:
        return fn().shape[-1]
    except RuntimeError:
        return None


def ours(fn):
    try:
        return fn()
    except UsageError:
        return None


dims = dict(i=st.integers(1, 12), k=st.integers(1, 6), s=st.integers(1, 4), p=st.integers(0, 4), d=st.integers(1, 3))


@settings(max_examples=150, deadline=None)
@given(**dims)
def test_conv_output_is_torch_shape(i, k, s, p, d):
    x, w = torch.zeros(1, 1, 1, i), torch.zeros(1, 1, 1, k)
    assert ours(lambda: conv_output(i, k, s, p, d)) == torch_shape(
        lambda: F.conv2d(x, w, stride=(1, s), padding=(0, p), dilation=(1, d)))


@settings(max_examples=150, deadline=None)
@given(op=st.integers(0, 3), **dims)
def test_conv_transpose_output_is_torch_shape(i, k, s, p, d, op):
    x, w = torch.zeros(1, 1, 1, i), torch.zeros(1, 1, 1, k)
    t = torch_shape(lambda: F.conv_transpose2d(x, w, stride=(1, s), padding=(0, p), output_padding=(0, op),
                                               dilation=(1, d)))
    if t == 0:
        t = None  # torch returns an empty tensor; we refuse an output of size 0
    assert ours(lambda: conv_transpose_output(i, k, s, p, op, d)) == t


@settings(max_examples=200, deadline=None)
@given(ceil=st.booleans(), avg=st.booleans(), **dims)
def test_pool_output_is_torch_shape(i, k, s, p, d, ceil, avg):
    x = torch.zeros(1, 1, 1, i)
    if avg:
        d = 1
        t = torch_shape(lambda: F.avg_pool2d(x, (1, k), (1, s), (0, p), ceil_mode=ceil))
    else:
        t = torch_shape(lambda: F.max_pool2d(x, (1, k), (1, s), (0, p), (1, d), ceil_mode=ceil))
    assert ours(lambda: pool_output(i, k, s, p, d, ceil)) == t


def test_ceil_mode_window_may_hang_over_the_end():
    """The bug fixed in pool_output: with ceil_mode PyTorch accepts a kernel larger than the padded input."""
    assert pool_output(3, 4, 4, 0, 1, True) == 1 == F.max_pool2d(torch.zeros(1, 1, 3, 3), 4, 4, ceil_mode=True).shape[-1]
    assert pool_output(8, 2, 3, 1, 1, True) == 3  # the last window would start in the padding: dropped
    with pytest.raises(UsageError):
        pool_output(3, 4, 4, 0, 1, False)


# --- 'same' ------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("k,d", [(1, 1), (3, 1), (5, 1), (2, 1), (4, 1), (3, 2), (4, 3), (2, 2)])
def test_same_pad_matches_torch_values(k, d):
    """F.pad with our (begin, end) then padding=0 equals torch's padding='same', value for value."""
    g = torch.Generator().manual_seed(k * 10 + d)
    x, w = torch.randn(1, 2, 9, 11, generator=g), torch.randn(3, 2, k, k, generator=g)
    (t, b), (l, r) = resolve_padding("same", kernel=k, dilation=d)
    assert (t, b) == same_pad(k, 1, d)
    assert t + b == d * (k - 1) and b - t in (0, 1)  # the extra pixel at the end
    want = F.conv2d(x, w, padding="same", dilation=d)
    got = F.conv2d(F.pad(x, (l, r, t, b)), w, dilation=d)
    assert got.shape == want.shape == (1, 3, 9, 11)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("i,k,s,d", [(224, 3, 2, 1), (7, 3, 2, 1), (8, 3, 2, 1), (9, 4, 2, 1), (10, 5, 3, 1),
                                     (32, 2, 2, 1), (15, 3, 2, 2), (5, 1, 4, 1)])
def test_same_pad_stride_gives_ceil(i, k, s, d):
    """TensorFlow's SAME: o = ceil(i/s), checked on torch with the padding applied by hand."""
    pb, pe = same_pad(k, s, d, i)
    o = -(-i // s)
    assert conv_output(i, k, s, (pb, pe), d) == o
    y = F.conv2d(F.pad(torch.zeros(1, 1, i, i), (pb, pe, pb, pe)), torch.zeros(1, 1, k, k), stride=s, dilation=d)
    assert y.shape[-2:] == (o, o)
    assert pb + pe == max((o - 1) * s + d * (k - 1) + 1 - i, 0) and pe - pb in (0, 1)


def test_same_pad_with_stride_needs_input():
    with pytest.raises(UsageError, match="input size"):
        same_pad(3, 2)


# --- padding forms and parsing ------------------------------------------------------------------

def test_resolve_padding_forms():
    assert resolve_padding(1, kernel=3) == ((1, 1), (1, 1))
    assert resolve_padding((1, 2), kernel=3) == ((1, 1), (2, 2))
    assert resolve_padding((0, 1, 2, 3), kernel=3) == ((0, 1), (2, 3))
    assert resolve_padding("valid", kernel=3) == ((0, 0), (0, 0))
    assert resolve_padding("same", kernel=(3, 4)) == ((1, 1), (1, 2))
    for bad in ((1, 2, 3), "half", -1):
        with pytest.raises(UsageError):
            resolve_padding(bad, kernel=3)


def test_parse_size():
    assert parse_size("224") == (224,)
    assert parse_size("224x160") == (224, 160)
    for bad in ("", "x", "3x4x5", "abc", "3.5"):
        with pytest.raises(UsageError):
            parse_size(bad)


@pytest.mark.parametrize("call", [
    lambda: conv_output(5, 3, 0), lambda: conv_output(0, 3), lambda: conv_output(5, 0),
    lambda: conv_output(5, 3, 1, -1), lambda: conv_output(3, 5), lambda: conv_output(5, 3, 1, 0, 0),
    lambda: conv_transpose_output(3, 3, 2, 0, 2), lambda: conv_transpose_output(3, 3, 1, 0, 1, 1),
    lambda: conv_transpose_output(1, 3, 1, 3), lambda: pool_output(5, 3, 1, 2),
])
def test_impossible_parameters(call):
    with pytest.raises(UsageError):
        call()


# --- the explanation text agrees with the arithmetic -------------------------------------------

def last_number(text: str) -> int:
    return int(re.findall(r"= (-?\d+)$", text)[0])


@settings(max_examples=150, deadline=None)
@given(pb=st.integers(0, 3), pe=st.integers(0, 3), op=st.integers(0, 2), ceil=st.booleans(), **dims)
def test_explained_steps_end_in_the_size(i, k, s, p, d, pb, pe, op, ceil):
    for fn in (lambda: explain.conv(i, k, s, (pb, pe), d),
               lambda: explain.conv_transpose(i, k, s, (pb, pb), op, d),
               lambda: explain.pool(i, k, s, min(p, k // 2), d, ceil)):
        try:
            f = fn()
        except UsageError:
            continue
        assert last_number(f.substituted) == f.value
        # every '= n' step is the value of the expression before it (the arithmetic shown is right)
        steps = f.substituted.split(" = ")[1:]
        for a, b in zip(steps, steps[1:]):
            assert evaluate(a) == evaluate(b), f.substituted


def evaluate(expr: str) -> int:
    """Evaluate a step like 'floor(31/2) + 1' or '(32 - 1)*2 - 2*1 + 3 + 0' (integers only)."""
    py = expr.replace("floor(", "_fl(").replace("ceil(", "_ce(").replace("/", ",")
    return eval(py, {"_fl": lambda a, b: a // b, "_ce": lambda a, b: -(-a // b)})


@settings(max_examples=150, deadline=None)
@given(k=st.integers(1, 6), s=st.integers(1, 4), p=st.integers(0, 3), d=st.integers(1, 2), op=st.integers(0, 1))
def test_symbolic_formulas_hold_for_every_input(k, s, p, d, op):
    """o(i) as printed equals the arithmetic for i over a range."""
    sym = explain.conv_symbolic(k, s, (p, p), d)
    expr = sym.substituted.split(" = ")[-1].replace("o = ", "")
    for i in range(sym.min_input, 40):
        assert eval_in_i(expr, i) == conv_output(i, k, s, p, d), (sym, i)
    if op < max(s, d):
        sym = explain.conv_transpose_symbolic(k, s, (p, p), op, d)
        expr = sym.substituted.split(" = ")[-1]
        for i in range(sym.min_input, 40):
            assert eval_in_i(expr, i) == conv_transpose_output(i, k, s, p, op, d), (sym, i)


def eval_in_i(expr: str, i: int) -> int:
    """'floor((i + 1)/2)', '2i - 1', 'i' at a given i."""
    py = re.sub(r"(\d)i", r"\1*i", expr).replace("floor(", "_fl(").replace("ceil(", "_ce(").replace("/", ",")
    return eval(py, {"_fl": lambda a, b: a // b, "_ce": lambda a, b: -(-a // b), "i": i})


def test_symbolic_lecture_examples():
    assert explain.conv_symbolic(2, 2).substituted == "o = floor((i - 2)/2) + 1 = floor(i/2)"
    assert explain.conv_transpose_symbolic(2, 2).substituted == "o = 2(i - 1) + 2 = 2i"
    assert explain.conv_symbolic(3, 1, (1, 1)).substituted == "o = (i - 1) + 1 = i"
    assert "halves" in explain.conv_symbolic(2, 2).summary
    assert "doubles" in explain.conv_transpose_symbolic(2, 2).summary
