"""The NumPy reference layers against three independent oracles: hand-worked lecture cases,
centred finite differences (float64), and torch.nn.functional + autograd."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cvtool.arithmetic import conv_transpose2d_output, effective_kernel, resolve_padding
from cvtool.convcalc.gradcheck import numeric_grad
from cvtool.errors import DataError, UsageError
from cvtool_backends.numpy_fast import Backend
from cvtool_backends.numpy_fast import layers as L

RNG = np.random.default_rng(1234)
HYP = settings(max_examples=25, deadline=None)


def t(a, grad: bool = True) -> torch.Tensor:
    return torch.tensor(a, requires_grad=grad)


def close(a, b, tol: float = 1e-10) -> None:
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else b
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


numgrad = numeric_grad  # centred finite differences (cvtool.convcalc.gradcheck)


def gradcheck(forward, backward, arrays: list[np.ndarray], tol: float = 1e-6) -> None:
    """backward(dout, cache) against finite differences of sum(forward(*arrays) * dout)."""
    out, cache = forward(*arrays)
    dout = RNG.standard_normal(out.shape)
    grads = backward(dout, cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for a, g in zip(arrays, grads):
        num = numgrad(lambda: float((forward(*arrays)[0] * dout).sum()), a)
        np.testing.assert_allclose(g, num, rtol=tol, atol=tol)


# --- literal lecture cases -----------------------------------------------------------------------

def test_conv_lecture_case():
    x = np.array([[4, 5, 8, 7], [1, 8, 8, 8], [3, 6, 6, 4], [6, 5, 7, 8]], float)[None, None]
    k = np.array([[1, 4, 1], [1, 4, 3], [3, 3, 1]], float)[None, None]
    out, _ = L.conv2d_forward(x, k, None)
    np.testing.assert_array_equal(out[0, 0], [[122, 148], [126, 134]])


def test_max_pool_lecture_case():
    x = np.array([[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]], float)[None, None]
    out, cache = L.max_pool2d_forward(x, kernel=2, stride=2)
    np.testing.assert_array_equal(out[0, 0], [[6, 8], [3, 4]])
    dx = L.max_pool2d_backward(np.ones_like(out), cache)  # the gradient goes to each argmax
    np.testing.assert_array_equal(dx[0, 0], [[0, 0, 0, 0], [0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 1]])


# Transposed conv of x = [[1, 2], [3, 4]] with k = [[1, 0], [2, 1]]: each input pixel stamps
# x[a, b] * k at (a*s - p, b*s - p), and overlapping stamps add up.
TCONV_X = np.array([[1, 2], [3, 4]], float)
TCONV_K = np.array([[1, 0], [2, 1]], float)
TCONV_CASES = [
    # stride 1: stamps overlap; centre 1*1 + 2*2 + 3*0 + 4*1 = 9
    (1, 0, [[1, 2, 0], [5, 9, 2], [6, 11, 4]]),
    # stride 2: four separate 2x2 stamps
    (2, 0, [[1, 0, 2, 0], [2, 1, 4, 2], [3, 0, 4, 0], [6, 3, 8, 4]]),
    # stride 2, padding 1: the 4x4 above with its border cropped
    (2, 1, [[1, 4], [0, 4]]),
]


@pytest.mark.parametrize("stride, padding, expected", TCONV_CASES)
def test_conv_transpose_hand_cases(stride, padding, expected):
    out, _ = L.conv_transpose2d_forward(TCONV_X[None, None], TCONV_K[None, None], None, stride=stride, padding=padding)
    np.testing.assert_array_equal(out[0, 0], expected)


def test_max_pool_ties_go_to_first_in_window_order():
    x = np.array([[3, 3], [3, 1]], float)[None, None]
    out, cache = L.max_pool2d_forward(x, kernel=2)
    dx = L.max_pool2d_backward(np.ones_like(out), cache)
    np.testing.assert_array_equal(dx[0, 0], [[1, 0], [0, 0]])


# --- finite differences (float64) ----------------------------------------------------------------

CONV_CASES = [  # (C, F, KH, KW, stride, padding, dilation, groups)
    (3, 4, 3, 3, 1, 1, 1, 1),
    (4, 6, 3, 2, 2, (1, 0), 1, 2),
    (2, 3, 2, 3, (1, 2), (0, 1, 2, 0), (2, 1), 1),
    (4, 4, 3, 3, 1, "same", 2, 4),
    (3, 2, 1, 1, 3, 0, 1, 1),
]


@pytest.mark.parametrize("C, F_, KH, KW, stride, padding, dilation, groups", CONV_CASES)
def test_conv2d_gradcheck(C, F_, KH, KW, stride, padding, dilation, groups):
    x = RNG.standard_normal((2, C, 6, 5))
    w = RNG.standard_normal((F_, C // groups, KH, KW))
    b = RNG.standard_normal(F_)
    gradcheck(lambda x, w, b: L.conv2d_forward(x, w, b, stride=stride, padding=padding, dilation=dilation,
                                               groups=groups), L.conv2d_backward, [x, w, b])


TCONV_GRAD_CASES = [  # (C_in, C_out, K, stride, padding, output_padding, dilation, groups)
    (3, 2, 3, 1, 0, 0, 1, 1),
    (4, 6, 2, 2, 0, 0, 1, 2),
    (2, 3, 3, 2, 1, 1, 1, 1),
    (2, 2, 3, (3, 2), (0, 1, 1, 2), (2, 1), (1, 2), 2),
]


@pytest.mark.parametrize("Cin, Cout, K, stride, padding, output_padding, dilation, groups", TCONV_GRAD_CASES)
def test_conv_transpose2d_gradcheck(Cin, Cout, K, stride, padding, output_padding, dilation, groups):
    x = RNG.standard_normal((2, Cin, 4, 3))
    w = RNG.standard_normal((Cin, Cout // groups, K, K))
    b = RNG.standard_normal(Cout)
    gradcheck(lambda x, w, b: L.conv_transpose2d_forward(x, w, b, stride=stride, padding=padding,
                                                         output_padding=output_padding, dilation=dilation,
                                                         groups=groups), L.conv_transpose2d_backward, [x, w, b])


POOL_CASES = [  # (kernel, stride, padding, dilation, ceil_mode)
    (2, None, 0, 1, False),
    (3, 2, 1, 1, True),
    ((3, 2), (2, 1), (1, 0), (1, 2), False),
    (2, 3, 1, 1, True),
]


@pytest.mark.parametrize("kernel, stride, padding, dilation, ceil_mode", POOL_CASES)
def test_max_pool_gradcheck(kernel, stride, padding, dilation, ceil_mode):
    x = RNG.permutation(2 * 3 * 7 * 6).reshape(2, 3, 7, 6) * 0.01  # distinct values: no ties within h
    gradcheck(lambda x: L.max_pool2d_forward(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                                             ceil_mode=ceil_mode), L.max_pool2d_backward, [x])


@pytest.mark.parametrize("kernel, stride, padding, _, ceil_mode", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_gradcheck(kernel, stride, padding, _, ceil_mode, count_include_pad):
    x = RNG.standard_normal((2, 3, 7, 6))
    gradcheck(lambda x: L.avg_pool2d_forward(x, kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                                             count_include_pad=count_include_pad), L.avg_pool2d_backward, [x])


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation_gradcheck(name):
    x = RNG.standard_normal((2, 3, 4, 4))
    x[np.abs(x) < 1e-3] = 0.5  # away from relu's kink
    gradcheck(getattr(L, f"{name}_forward"), getattr(L, f"{name}_backward"), [x])


@pytest.mark.parametrize("training", [True, False])
def test_batchnorm_gradcheck(training):
    x = RNG.standard_normal((3, 4, 3, 2)) * 2 + 1
    gamma, beta = RNG.standard_normal(4), RNG.standard_normal(4)
    rm, rv = RNG.standard_normal(4), RNG.uniform(0.5, 2, 4)
    stats = (None, None) if training else (rm, rv)
    gradcheck(lambda x, g, b: L.batchnorm2d_forward(x, g, b, *stats, training=training), L.batchnorm2d_backward,
              [x, gamma, beta])


def test_cross_entropy_gradcheck():
    logits = RNG.standard_normal((2, 4, 3, 3))
    labels = RNG.integers(0, 4, (2, 3, 3))
    labels[0, 1, :] = 255
    weight = RNG.uniform(0.5, 2, 4)
    _, dlogits = L.softmax_cross_entropy(logits, labels, weight=weight)
    num = numgrad(lambda: L.softmax_cross_entropy(logits, labels, weight=weight)[0], logits)
    np.testing.assert_allclose(dlogits, num, rtol=1e-6, atol=1e-8)
    assert np.all(dlogits[0, :, 1, :] == 0)  # ignored pixels get no gradient


def test_soft_dice_gradcheck_and_torch():
    """Soft Dice against finite differences, against the torch trainer's soft_dice under autograd, and by hand:
    a confident right answer scores 0, a confident wrong one on one class of two 1 - (1/2)(1/3 + 1/3)."""
    from cvtool_backends.torch_backend.model import soft_dice as torch_dice

    logits = RNG.standard_normal((2, 4, 3, 5))
    labels = RNG.integers(0, 4, (2, 3, 5))
    labels[1, 2, :] = 255
    loss, dlogits = L.soft_dice(logits, labels)
    num = numgrad(lambda: L.soft_dice(logits, labels)[0], logits)
    np.testing.assert_allclose(dlogits, num, rtol=1e-6, atol=1e-9)
    assert np.all(dlogits[1, :, 2, :] == 0)  # ignored pixels get no gradient
    zt = t(logits)
    lt = torch_dice(zt, torch.tensor(labels))
    lt.backward()
    close(np.array(loss), lt)
    close(dlogits, zt.grad)
    y = np.array([[[0, 1]]])  # one image, two pixels, two classes
    right = np.where(np.arange(2)[None, :, None, None] == y[:, None], 50.0, -50.0)
    assert L.soft_dice(right, y)[0] < 1e-12
    # all wrong: I_k = 0, P_k = G_k = 1 per class: D_k = (0 + 1) / (2 + 1)
    assert abs(L.soft_dice(-right, y)[0] - (1 - 1 / 3)) < 1e-12


# --- against torch: fixed cases and hypothesis over random valid parameters ----------------------

def torch_conv2d(x, w, b, *, stride, padding, dilation, groups):
    """torch oracle for any padding form: resolve it, pad explicitly (torch's own padding is symmetric)."""
    (top, bottom), (left, right) = resolve_padding(padding, kernel=w.shape[2:], stride=stride, dilation=dilation,
                                                   input_size=x.shape[2:])
    return F.conv2d(F.pad(x, (left, right, top, bottom)), w, b, stride=stride, dilation=dilation, groups=groups)


def check_vs_torch(forward, backward, torch_forward, x, w, b, **kw):
    """Output and all three gradients of one of our conv layers against torch + autograd."""
    out, cache = forward(x, w, b, **kw)
    xt, wt, bt = t(x), t(w), t(b) if b is not None else None
    yt = torch_forward(xt, wt, bt, **kw)
    close(out, yt)
    dout = RNG.standard_normal(out.shape)
    yt.backward(torch.tensor(dout))
    dx, dw, db = backward(dout, cache)
    close(dx, xt.grad)
    close(dw, wt.grad)
    if b is None:
        assert db is None
    else:
        close(db, bt.grad)


@pytest.mark.parametrize("stride", [1, 2])
def test_conv_in_many_column_blocks(monkeypatch, stride):
    """Tiny blocks (256 columns, or one image when strided) give the same answers as one block."""
    import cvtool_backends.numpy_fast.conv as conv

    monkeypatch.setattr(conv, "BLOCK_BYTES", 1)
    x, w, b = RNG.standard_normal((3, 4, 11, 13)), RNG.standard_normal((6, 2, 3, 2)), RNG.standard_normal(6)
    kw = dict(stride=stride, padding=(1, 0, 2, 1), dilation=(1, 2), groups=2)
    assert len(conv._blocks(conv.conv_geom(x.shape, w.shape, **kw), x.dtype)) == 3
    check_vs_torch(L.conv2d_forward, L.conv2d_backward, torch_conv2d, x, w, b, **kw)
    x = RNG.standard_normal((3, 6, 7, 8))
    check_vs_torch(L.conv_transpose2d_forward, L.conv_transpose2d_backward, F.conv_transpose2d, x, w, b[:4],
                   stride=stride, padding=1, dilation=2, groups=2)


def test_stride1_input_grad_by_scatter_when_padding_outreaches_the_kernel(monkeypatch):
    """Padding wider than the kernel's reach cannot be a convolution of dout (a negative pad): dx then
    comes from the scatter-add adjoint, whose blocks overlap by the tail (run per worker, last deferred)."""
    import cvtool_backends.numpy_fast.conv as conv

    monkeypatch.setattr(conv, "BLOCK_BYTES", 1)
    x, w, b = RNG.standard_normal((2, 3, 9, 30)), RNG.standard_normal((4, 3, 3, 3)), RNG.standard_normal(4)
    g = conv.conv_geom(x.shape, w.shape, padding=3)
    assert g.top > g.KH - 1 and len(conv._blocks(g, x.dtype)) >= 4
    check_vs_torch(L.conv2d_forward, L.conv2d_backward, torch_conv2d, x, w, b, stride=1, padding=3, dilation=1,
                   groups=1)


@pytest.mark.parametrize("N,C,F_,H,W", [(1, 5, 3, 4, 6), (3, 2, 7, 5, 1)])
def test_tiled_stride_equals_kernel_paths(N, C, F_, H, W):
    """The 2x2 stride-2 transposed conv of the decoder (one product per block of rows, then
    depth-to-space) and its adjoint, the strided conv, against torch."""
    x, w, b = RNG.standard_normal((N, C, H, W)), RNG.standard_normal((C, F_, 2, 2)), RNG.standard_normal(F_)
    check_vs_torch(L.conv_transpose2d_forward, L.conv_transpose2d_backward, F.conv_transpose2d, x, w, b, stride=2)
    x2 = RNG.standard_normal((N, F_, 2 * H, 2 * W))
    check_vs_torch(L.conv2d_forward, L.conv2d_backward, torch_conv2d, x2, w, RNG.standard_normal(C), stride=2,
                   padding=0, dilation=1, groups=1)


def test_conv1x1_fast_path():
    x, w, b = RNG.standard_normal((3, 6, 5, 700)), RNG.standard_normal((4, 6, 1, 1)), RNG.standard_normal(4)
    check_vs_torch(L.conv2d_forward, L.conv2d_backward, torch_conv2d, x, w, b, stride=1, padding=0, dilation=1,
                   groups=1)


@pytest.mark.parametrize("C", [3, 16, 40])  # im2col gather, stacked rows, one product per kernel row
def test_conv2d_relu_is_relu_of_conv2d(C):
    x, w, b = RNG.standard_normal((2, C, 12, 10)), RNG.standard_normal((C + 1, C, 3, 3)), RNG.standard_normal(C + 1)
    ref = F.relu(torch_conv2d(t(x, False), t(w, False), t(b, False), stride=1, padding=1, dilation=1, groups=1))
    close(L.conv2d_relu(x, w, b, padding=1), ref)


def test_max_pool_in_many_plane_blocks_keeps_torch_ties_and_nans(monkeypatch):
    import cvtool_backends.numpy_fast.pool as pool

    monkeypatch.setattr(pool, "PLANE_BYTES", 1)  # one (n, c) plane a block
    x = RNG.integers(-2, 3, (2, 3, 6, 8)).astype(float)  # many ties
    x[0, 1, 0, :2] = np.nan  # two NaNs in one window: torch sends the gradient to the last
    x[1, 2, 3, 5] = np.nan
    out, cache = L.max_pool2d_forward(x, kernel=2)
    xt = t(x)
    yt = F.max_pool2d(xt, 2)
    np.testing.assert_array_equal(np.isnan(out), torch.isnan(yt).numpy())
    close(np.nan_to_num(out, nan=7), torch.nan_to_num(yt, nan=7))
    dout = RNG.standard_normal(out.shape)
    yt.backward(torch.tensor(dout))
    close(L.max_pool2d_backward(dout, cache), xt.grad)
    assert L.max_pool2d_forward(x, kernel=2, cache=False)[1] is None


def test_map_runs_runs_each_block_once_in_order_and_defers_run_ends():
    from cvtool_backends.numpy_fast import parallel

    blocks = [(i, i + 1) for i in range(7)]
    seen = []
    out = parallel.map_runs(lambda a, b: seen.append(a) or a * 10, blocks, defer_last=True)
    assert out == [a * 10 for a, _ in blocks] and sorted(seen) == list(range(7))
    n = parallel.workers()
    if n > 1:  # the last block of every run but the final one runs after the parallel phase
        ends = [i1 - 1 for _, i1 in parallel.split(7, n)[:-1]]
        assert seen[-len(ends):] == ends
    assert parallel.split(7, 3) == [(0, 2), (2, 4), (4, 7)] and parallel.split(2, 5) == [(0, 1), (1, 2)]


def test_held_keeps_blas_on_one_thread_and_restores_it():
    from cvtool_backends.numpy_fast import parallel

    blas = parallel._openblas()
    if blas is None:
        pytest.skip("NumPy's BLAS here cannot be told its thread count")
    before = int(blas[0]())
    with parallel.held():
        with parallel.held():
            assert int(blas[0]()) == 1 and parallel.blas_threads() == before
        assert int(blas[0]()) == 1
    assert int(blas[0]()) == before


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("kw", [dict(padding=1), dict(padding=(2, 0, 1, 3), dilation=(2, 1)), dict(padding=0, groups=2),
                                dict(padding="same", dilation=2)])
def test_gathers_from_the_unpadded_input_equal_the_padded_buffers(kw, full):
    """_rows reading x directly (padding as it copies) == _rows over the zero-padded buffer, for every block of
    whole rows, blocks spanning images and the buffer's tail included, in every column a real output reads (where a
    shift wraps into the next row the buffer gives that row's start, the direct copy zeros: garbage columns only)."""
    import cvtool_backends.numpy_fast.conv as conv

    x, w = RNG.standard_normal((3, 4, 7, 9)), RNG.standard_normal((6, 4 // kw.get("groups", 1), 3, 3))
    g = conv.conv_geom(x.shape, w.shape, **kw)
    buf, src = conv._pad(x, g), conv.Unpadded(x)
    reach = 0 if full else (g.KH - 1) * conv._reach(g)
    for rows in (1, 2, 5, g.Hb + 1):  # block lengths in grid rows
        for m0 in range(0, g.M, rows * g.Wb):
            n = min(rows * g.Wb, g.M - m0) + reach
            real = np.arange(n) % g.Wb < g.OW  # blocks start on a row: column t serves output column t mod Wb
            np.testing.assert_array_equal(conv._rows(src, g, m0, n, full)[..., real],
                                          conv._rows(buf, g, m0, n, full)[..., real])


def test_blocks_are_longer_than_the_reach_of_a_window(monkeypatch):
    """Blocks run in runs, one per worker, each run's last block deferred: the writes of block k reach into block k+1
    by the tail only, so every block but the last must be at least the tail long."""
    import cvtool_backends.numpy_fast.conv as conv

    monkeypatch.setattr(conv, "BLOCK_BYTES", 1)
    g = conv.conv_geom((2, 1, 5, 700), (1, 1, 3, 3), padding=1)
    blocks = conv._blocks(g, np.float32)
    assert len(blocks) > 2 and all(m1 - m0 >= conv._tail(g) for m0, m1 in blocks[:-1])


def test_blas_threads_are_restored():
    from cvtool_backends.numpy_fast.parallel import blas_threads

    before = blas_threads()
    x, w = RNG.standard_normal((4, 16, 96, 96)), RNG.standard_normal((16, 16, 3, 3))
    out, cache = L.conv2d_forward(x, w, None, padding=1)  # several blocks
    L.conv2d_backward(out, cache)
    assert blas_threads() == before


def _conv_sum(seed: int) -> float:
    rng = np.random.default_rng(seed)
    out, cache = L.conv2d_forward(rng.standard_normal((4, 16, 96, 96)), rng.standard_normal((16, 16, 3, 3)), None,
                                  padding=1)
    return float(L.conv2d_backward(out, cache)[1].sum())


def test_conv_in_a_forked_child_after_the_pool_ran():
    import multiprocessing

    expected = _conv_sum(0)  # the parent's pool has run
    with multiprocessing.get_context("fork").Pool(1) as pool:
        assert pool.apply_async(_conv_sum, (0,)).get(timeout=60) == expected


def test_conv2d_same_padding_matches_torch_same():
    x, w = RNG.standard_normal((1, 2, 7, 6)), RNG.standard_normal((3, 2, 4, 3))  # even kernel: uneven split
    out, _ = L.conv2d_forward(x, w, None, padding="same", dilation=2)
    close(out, F.conv2d(t(x), t(w), padding="same", dilation=2))
    assert out.shape[2:] == x.shape[2:]


@st.composite
def conv_params(draw, transpose: bool = False):
    G = draw(st.integers(1, 3))
    Cg, Fg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    small = st.integers(0, 2)
    if transpose:  # torch's transposed conv takes symmetric padding only
        padding = draw(st.one_of(small, st.tuples(small, small)))
    else:
        padding = draw(st.one_of(small, st.tuples(small, small), st.tuples(small, small, small, small),
                                 st.just("same")))
    if padding == "same":
        stride = (1, 1)
    (top, bottom), (left, right) = resolve_padding(padding, kernel=(KH, KW), stride=stride, dilation=dilation)
    # conv: the smallest input that leaves one output pixel; transposed conv: checked by the test
    lo_h = 1 if transpose else max(1, effective_kernel(KH, dilation[0]) - top - bottom)
    lo_w = 1 if transpose else max(1, effective_kernel(KW, dilation[1]) - left - right)
    H, W = draw(st.integers(lo_h, lo_h + 6)), draw(st.integers(lo_w, lo_w + 6))
    return dict(N=draw(st.integers(1, 2)), G=G, Cg=Cg, Fg=Fg, KH=KH, KW=KW, H=H, W=W, stride=stride,
                dilation=dilation, padding=padding, bias=draw(st.booleans()))


@HYP
@given(conv_params())
def test_conv2d_vs_torch_property(p):
    x = RNG.standard_normal((p["N"], p["G"] * p["Cg"], p["H"], p["W"]))
    w = RNG.standard_normal((p["G"] * p["Fg"], p["Cg"], p["KH"], p["KW"]))
    b = RNG.standard_normal(p["G"] * p["Fg"]) if p["bias"] else None
    check_vs_torch(L.conv2d_forward, L.conv2d_backward, torch_conv2d, x, w, b,
                   stride=p["stride"], padding=p["padding"], dilation=p["dilation"], groups=p["G"])


@HYP
@given(conv_params(transpose=True), st.data())
def test_conv_transpose2d_vs_torch_property(p, data):
    (sh, sw), (dh, dw) = p["stride"], p["dilation"]
    op = (data.draw(st.integers(0, max(sh, dh) - 1)), data.draw(st.integers(0, max(sw, dw) - 1)))
    pad = p["padding"]
    try:  # padding may crop away everything
        conv_transpose2d_output((p["H"], p["W"]), (p["KH"], p["KW"]), p["stride"], pad, op, p["dilation"])
    except UsageError:
        assume(False)
    x = RNG.standard_normal((p["N"], p["G"] * p["Cg"], p["H"], p["W"]))
    w = RNG.standard_normal((p["G"] * p["Cg"], p["Fg"], p["KH"], p["KW"]))
    b = RNG.standard_normal(p["G"] * p["Fg"]) if p["bias"] else None
    check_vs_torch(L.conv_transpose2d_forward, L.conv_transpose2d_backward, F.conv_transpose2d, x, w, b,
                   stride=p["stride"], padding=pad, output_padding=op, dilation=p["dilation"], groups=p["G"])


def test_conv_transpose2d_asymmetric_padding_is_a_crop():
    """torch has no asymmetric padding for transposed conv: it is the padding-0 output, cropped."""
    x, w = RNG.standard_normal((2, 3, 4, 5)), RNG.standard_normal((3, 2, 3, 3))
    out, _ = L.conv_transpose2d_forward(x, w, None, stride=2, padding=(1, 0, 2, 1))
    full = F.conv_transpose2d(t(x), t(w), stride=2)
    close(out, full[:, :, 1:full.shape[2], 2:full.shape[3] - 1])


@st.composite
def pool_params(draw, dilated: bool = True):
    KH, KW = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, KH // 2)), draw(st.integers(0, KW // 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilated else (1, 1)
    H = draw(st.integers(max(1, effective_kernel(KH, dilation[0]) - 2 * padding[0]), 9))
    W = draw(st.integers(max(1, effective_kernel(KW, dilation[1]) - 2 * padding[1]), 9))
    return dict(shape=(draw(st.integers(1, 2)), draw(st.integers(1, 3)), H, W), kernel=(KH, KW), stride=stride,
                padding=padding, dilation=dilation, ceil_mode=draw(st.booleans()))


@HYP
@given(pool_params())
def test_max_pool_vs_torch_property(p):
    x = RNG.integers(-4, 5, p.pop("shape")).astype(float)  # small integers: many ties
    out, cache = L.max_pool2d_forward(x, **p)
    assume(np.isfinite(out).all())  # a window all padding: torch sends its gradient out of bounds
    xt = t(x)
    yt = F.max_pool2d(xt, p["kernel"], p["stride"], p["padding"], p["dilation"], ceil_mode=p["ceil_mode"])
    close(out, yt)
    dout = RNG.standard_normal(out.shape)
    yt.backward(torch.tensor(dout))
    close(L.max_pool2d_backward(dout, cache), xt.grad)


@HYP
@given(pool_params(dilated=False), st.booleans())
def test_avg_pool_vs_torch_property(p, count_include_pad):
    x = RNG.standard_normal(p.pop("shape"))
    del p["dilation"]
    out, cache = L.avg_pool2d_forward(x, count_include_pad=count_include_pad, **p)
    xt = t(x)
    yt = F.avg_pool2d(xt, p["kernel"], p["stride"], p["padding"], ceil_mode=p["ceil_mode"],
                      count_include_pad=count_include_pad)
    close(out, yt)
    dout = RNG.standard_normal(out.shape)
    yt.backward(torch.tensor(dout))
    close(L.avg_pool2d_backward(dout, cache), xt.grad)


def test_avg_pool_ceil_mode_divisors():
    """A window hanging over input + padding: torch divides by its size clipped there. 3x3 kernel,
    stride 2, padding 1 on a 4x4 of ones: per dimension windows start at -1, 1, 3, and hold 2/3, 3/3
    and (one input row + one padding row; row 5 is past input + padding) 1/2."""
    x = np.ones((1, 1, 4, 4))
    out, _ = L.avg_pool2d_forward(x, kernel=3, stride=2, padding=1, ceil_mode=True)
    close(out, F.avg_pool2d(t(x), 3, 2, 1, ceil_mode=True))
    np.testing.assert_allclose(out[0, 0], [[4 / 9, 2 / 3, 1 / 3], [2 / 3, 1, 1 / 2], [1 / 3, 1 / 2, 1 / 4]])


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activations_vs_torch(name):
    x = RNG.standard_normal((2, 3, 4, 5)) * 4
    x[0, 0, 0, :3] = [0.0, 40.0, -800.0]  # relu's kink (torch: gradient 0), saturation, overflow of exp(-x)
    out, cache = getattr(L, f"{name}_forward")(x)
    xt = t(x)
    yt = getattr(torch, name)(xt)
    close(out, yt)
    dout = RNG.standard_normal(x.shape)
    yt.backward(torch.tensor(dout))
    close(getattr(L, f"{name}_backward")(dout, cache), xt.grad)


def test_batchnorm_vs_torch_training_then_eval():
    C = 3
    bn = torch.nn.BatchNorm2d(C, momentum=0.2, eps=1e-4).double()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(RNG.standard_normal(C)))
        bn.bias.copy_(torch.tensor(RNG.standard_normal(C)))
    gamma, beta = bn.weight.detach().numpy().copy(), bn.bias.detach().numpy().copy()
    rm, rv = np.zeros(C), np.ones(C)
    for step in range(3):  # running statistics accumulate over several batches
        x = RNG.standard_normal((4, C, 5, 3)) * (step + 1) + step
        out, cache = L.batchnorm2d_forward(x, gamma, beta, rm, rv, training=True, momentum=0.2, eps=1e-4)
        xt = t(x)
        yt = bn.train()(xt)
        close(out, yt)
        dout = RNG.standard_normal(x.shape)
        bn.zero_grad()
        yt.backward(torch.tensor(dout))
        dx, dgamma, dbeta = L.batchnorm2d_backward(dout, cache)
        close(dx, xt.grad)
        close(dgamma, bn.weight.grad)
        close(dbeta, bn.bias.grad)
        close(rm, bn.running_mean)
        close(rv, bn.running_var)  # the unbiased variance goes into the running estimate
    x = RNG.standard_normal((2, C, 4, 4))
    out, cache = L.batchnorm2d_forward(x, gamma, beta, rm, rv, training=False, eps=1e-4)
    xt = t(x)
    yt = bn.eval()(xt)
    close(out, yt)
    dout = RNG.standard_normal(x.shape)
    yt.backward(torch.tensor(dout))
    close(L.batchnorm2d_backward(dout, cache)[0], xt.grad)
    close(rm, bn.running_mean)  # evaluation leaves the running statistics alone


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_vs_torch(weighted):
    logits = RNG.standard_normal((2, 5, 4, 3)) * 3
    labels = RNG.integers(0, 5, (2, 4, 3))
    labels[1, :2] = 255
    weight = RNG.uniform(0.1, 3, 5) if weighted else None
    loss, dlogits = L.softmax_cross_entropy(logits, labels, weight=weight, ignore_index=255)
    lt = t(logits)
    ref = F.cross_entropy(lt, torch.tensor(labels), weight=None if weight is None else torch.tensor(weight),
                          ignore_index=255)
    ref.backward()
    assert abs(loss - ref.item()) < 1e-12
    close(dlogits, lt.grad)


def test_cross_entropy_all_ignored_is_nan_with_zero_gradient():
    loss, dlogits = L.softmax_cross_entropy(np.zeros((1, 2, 2, 2)), np.full((1, 2, 2), 255))
    assert np.isnan(loss) and not dlogits.any()


def test_cross_entropy_rejects_bad_labels():
    with pytest.raises(DataError, match="out of range"):
        L.softmax_cross_entropy(np.zeros((1, 2, 2, 2)), np.full((1, 2, 2), 7))


# --- dtypes, errors, the Backend class -----------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(dtype):
    x = RNG.standard_normal((2, 4, 6, 6)).astype(dtype)
    w = RNG.standard_normal((4, 2, 3, 3)).astype(dtype)
    b = np.zeros(4, dtype)
    out, cache = L.conv2d_forward(x, w, b, padding=1, groups=2)
    assert out.dtype == dtype and all(g.dtype == dtype for g in L.conv2d_backward(out, cache))
    out, cache = L.conv_transpose2d_forward(x, w, b[:2], stride=2)
    assert out.dtype == dtype and all(g.dtype == dtype for g in L.conv_transpose2d_backward(out, cache))
    for fwd, bwd in [(L.max_pool2d_forward, L.max_pool2d_backward), (L.avg_pool2d_forward, L.avg_pool2d_backward)]:
        out, cache = fwd(x, kernel=2)
        assert out.dtype == dtype and bwd(out, cache).dtype == dtype
    if dtype == np.float32:  # float32 agrees with torch to float32 precision
        y = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1, groups=2).numpy()
        np.testing.assert_allclose(L.conv2d_forward(x, w, None, padding=1, groups=2)[0], y, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("call", [
    lambda: L.conv2d_forward(np.zeros((1, 3, 5, 5)), np.zeros((4, 2, 3, 3)), None),  # channels do not match
    lambda: L.conv2d_forward(np.zeros((1, 4, 5, 5)), np.zeros((3, 2, 3, 3)), None, groups=2),  # F % groups
    lambda: L.conv2d_forward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)), None),  # kernel too large
    lambda: L.conv2d_forward(np.zeros((5, 5)), np.zeros((1, 1, 3, 3)), None),  # not NCHW
    lambda: L.conv_transpose2d_forward(np.zeros((1, 2, 3, 3)), np.zeros((3, 1, 2, 2)), None),
    lambda: L.conv_transpose2d_forward(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 2, 2)), None, padding="same"),
    lambda: L.max_pool2d_forward(np.zeros((1, 1, 4, 4)), kernel=2, padding=2),  # padding > kernel / 2
    lambda: L.conv2d_forward(np.zeros((1, 2, 5, 5)), np.zeros((4, 2, 3, 3)), np.zeros(3)),  # bias size
    lambda: L.conv_transpose2d_forward(np.zeros((1, 2, 5, 5)), np.zeros((2, 3, 3, 3)), np.zeros(2)),
])
def test_impossible_parameters_raise_usage_error(call):
    with pytest.raises(UsageError):
        call()


def test_backend_class():
    from cvtool_backends.base import Backend as Protocol

    be = Backend()
    assert isinstance(be, Protocol) and be.name == "numpy" and be.device == "cpu"
    assert be.capabilities.backward and be.capabilities.train and be.capabilities.float64
    st_ = Backend.status()
    assert st_.available and st_.devices == ("cpu",) and st_.version == np.__version__
    assert st_.threads is None or st_.threads >= 1
    x = RNG.standard_normal((1, 2, 6, 6)).astype(np.float32)
    w = RNG.standard_normal((2, 2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(be.conv2d(x, w, padding="same"), L.conv2d_forward(x, w, None, padding="same")[0])
    assert be.conv_transpose2d(x, w, stride=2).shape == (1, 2, 13, 13)
    assert be.max_pool2d(x, kernel=2).shape == (1, 2, 3, 3)
    assert be.avg_pool2d(x, kernel=3, stride=1, padding=1).shape == (1, 2, 6, 6)
    np.testing.assert_array_equal(be.relu(x), np.maximum(x, 0))
    close(be.sigmoid(x), 1 / (1 + np.exp(-x)), 1e-6)
    close(be.tanh(x), np.tanh(x))


def test_backend_refuses_cuda():
    from cvtool.errors import BackendUnavailable

    with pytest.raises(BackendUnavailable):
        Backend(device="cuda")


def test_importing_the_backend_does_not_import_torch():
    code = "import sys, cvtool_backends.numpy_fast as m; m.Backend.status(); print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
