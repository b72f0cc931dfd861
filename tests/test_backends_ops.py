"""One suite for the layer operations of every backend (numpy, torch, ort; `backend` fixture in conftest).

(a) Literal cases in the style of ONNX's backend tests: small inputs, expected arrays typed in, each
    worked out by hand (the working is in the comments).
(b) Properties over random valid parameters (hypothesis): the output size is cvtool.arithmetic's and
    the one torch really produces; the values match torch.nn.functional run in float64 and ONNX's own
    onnx.reference.ReferenceEvaluator run on the one-node model (backends/onnx_format/graphs.py).
    Every backend is held to the same oracles, so numpy, torch and ort agree with each other too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx.reference import ReferenceEvaluator

from cvtool.arithmetic import conv2d_output, conv_transpose2d_output, is_symmetric, pair, pool2d_output, resolve_padding
from cvtool.errors import UsageError
from cvtool_backends.onnx_format import graphs

PROPERTY = settings(max_examples=25, deadline=None)


def img(rows) -> np.ndarray:
    """A 2-D list -> a (1, 1, H, W) float32 array."""
    return np.asarray(rows, dtype=np.float32)[None, None]


# --- (a) literal cases ----------------------------------------------------------------------------

LECTURE_X = [[4, 5, 8, 7], [1, 8, 8, 8], [3, 6, 6, 4], [6, 5, 7, 8]]
LECTURE_K = [[1, 4, 1], [1, 4, 3], [3, 3, 1]]


def test_lecture_conv(backend, close):
    # top-left: 4*1+5*4+8*1 + 1*1+8*4+8*3 + 3*3+6*3+6*1 = 32 + 57 + 33 = 122 (cross-correlation, no flip)
    y = backend.conv2d(img(LECTURE_X), img(LECTURE_K), stride=1, padding=0)
    close(y, img([[122, 148], [126, 134]]), "lecture conv")


def test_conv_bias_and_channels(backend, close):
    # two input channels summed, then one bias per output channel: out[m] = sum_c x[c] * w[m, c] + b[m]
    X, K = np.array(LECTURE_X, np.float32), np.array(LECTURE_K, np.float32)
    x = np.array([[X, 2 * X]])  # (1, 2, 4, 4)
    w = np.array([[K, 0 * K], [0 * K, K]])  # (2, 2, 3, 3): output 0 sees channel 0 only, output 1 channel 1
    y = backend.conv2d(x, w, np.array([1.0, -1.0], np.float32), stride=1, padding=0)
    close(y, np.array([[[[123, 149], [127, 135]], [[243, 295], [251, 267]]]], np.float32), "bias")


X4 = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]


@pytest.mark.parametrize("kernel, stride, expected", [
    # odd kernel: one zero on every side; each output is the sum of its 3x3 neighbourhood
    (3, 1, [[14, 24, 30, 22], [33, 54, 63, 45], [57, 90, 99, 69], [46, 72, 78, 54]]),
    # even kernel: padding (0, 1) per dimension, the extra pixel at the end (as torch): x[i,j]+x[i,j+1]+x[i+1,j]+x[i+1,j+1]
    (2, 1, [[14, 18, 22, 12], [30, 34, 38, 20], [46, 50, 54, 28], [27, 29, 31, 16]]),
    # stride 2: ceil(4/2) = 2 outputs, total padding (2-1)*2+3-4 = 1 -> (0, 1): rows/cols 0..2 and 2..3+pad
    (3, 2, [[54, 45], [72, 54]]),
])
def test_same_padding(backend, close, kernel, stride, expected):
    y = backend.conv2d(img(X4), np.ones((1, 1, kernel, kernel), np.float32), stride=stride, padding="same")
    close(y, img(expected), f"same k={kernel} s={stride}")


def test_asymmetric_padding(backend, close):
    # (top, bottom, left, right) = (1, 0, 0, 2) with a 1x1 kernel of 1: the input moved into a 5x6 frame of zeros
    y = backend.conv2d(img(X4), np.ones((1, 1, 1, 1), np.float32), stride=1, padding=(1, 0, 0, 2))
    close(y, img([[0, 0, 0, 0, 0, 0]] + [r + [0, 0] for r in X4]), "asymmetric")


POOL_X = [[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]


def test_tconv_crop_reaching_into_the_output_padding(backend, close):
    """Width 1, kernel 1 (w = 2), stride 3, left padding 2, output_padding 2: the full output [2] grows by the
    output padding to [2, 0, 0], then loses 2 columns on the left: [0] (out = (1-1)*3 - 2 - 0 + 1 + 2 = 1).
    Found by hypothesis: ORT used to crop before padding and gave 2 columns."""
    y = backend.conv_transpose2d(img([[1.0]]), np.full((1, 1, 1, 1), 2.0, np.float32), stride=3,
                                 padding=(0, 0, 2, 0), output_padding=(0, 2))
    close(y, img([[0.0]]), "tconv crop into output padding")


def test_max_pool(backend, close):
    close(backend.max_pool2d(img(POOL_X), kernel=2, stride=2), img([[6, 8], [3, 4]]), "max pool")


def test_avg_pool(backend, close):
    # (1+1+5+6)/4, (2+4+7+8)/4 ; (3+2+1+2)/4, (1+0+3+4)/4
    close(backend.avg_pool2d(img(POOL_X), kernel=2, stride=2), img([[3.25, 5.25], [2, 2]]), "avg pool")


X3 = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_pool_ceil_mode(backend, close):
    # 3x3, kernel 2, stride 2: floor gives 1x1, ceil 2x2; the last windows hold 2 or 1 pixels
    close(backend.max_pool2d(img(X3), kernel=2, stride=2, ceil_mode=True), img([[5, 6], [8, 9]]), "max ceil")
    close(backend.max_pool2d(img(X3), kernel=2, stride=2), img([[5]]), "max floor")
    # an average divides by the pixels of its window that lie in the (padded) input: (3+6)/2, (7+8)/2, 9/1
    close(backend.avg_pool2d(img(X3), kernel=2, stride=2, ceil_mode=True), img([[3, 4.5], [7.5, 9]]), "avg ceil")


@pytest.mark.parametrize("count_include_pad, expected", [(True, [[1, 3, 2]]), (False, [[1.5, 3, 4]])])
def test_avg_pool_divisor(backend, close, count_include_pad, expected):
    # one row [1 2 3 4], kernel 1x3, stride 2, padding 1 left and right, ceil: windows start at -1, 1, 3
    #   [-1, 2) = pad,1,2 -> 3/3 (with pad) or 3/2 (without);  [1, 4) = 2,3,4 -> 9/3
    #   [3, 6) = 4,pad,(beyond) -> torch counts the window up to the padded end: 4/2 (with pad) or 4/1 (without)
    y = backend.avg_pool2d(img([[1, 2, 3, 4]]), kernel=(1, 3), stride=(1, 2), padding=(0, 1), ceil_mode=True,
                           count_include_pad=count_include_pad)
    close(y, img(expected), f"avg divisor count_include_pad={count_include_pad}")


XT = [[1, 2], [3, 4]]
WT = [[1, 10], [100, 1000]]  # each digit position shows which input pixel reached an output


@pytest.mark.parametrize("stride, padding, expected", [
    # stride 1: each x[a,b] adds x[a,b]*w at offset (a, b); overlaps sum: centre = 1*1000 + 2*100 + 3*10 + 4*1
    (1, 0, [[1, 12, 20], [103, 1234, 2040], [300, 3400, 4000]]),
    # stride 2: the four copies x[a,b]*w tile a 4x4 output without overlapping
    (2, 0, [[1, 10, 2, 20], [100, 1000, 200, 2000], [3, 30, 4, 40], [300, 3000, 400, 4000]]),
    # padding 1 crops one pixel off every side of the stride-2 result: (2-1)*2 - 2 + 2 = 2
    (2, 1, [[1000, 200], [30, 4]]),
])
def test_conv_transpose(backend, close, stride, padding, expected):
    y = backend.conv_transpose2d(img(XT), img(WT), stride=stride, padding=padding)
    close(y, img(expected), f"conv_transpose s={stride} p={padding}")


def test_conv_transpose_output_padding_past_stride(backend, close):
    # dilation 2 spreads the kernel to taps (0,0)=1 (0,2)=10 (2,0)=100 (2,2)=1000; stride 1 gives 4x4;
    # output_padding 1 (allowed: < dilation, though not < stride; ONNX Runtime alone refuses it) adds a
    # last row and column that no input reaches: they hold the bias 0.5 only.
    y = backend.conv_transpose2d(img(XT), img(WT), np.array([0.5], np.float32), stride=1, padding=0,
                                 output_padding=1, dilation=2)
    full = np.array([[1, 2, 10, 20, 0], [3, 4, 30, 40, 0], [100, 200, 1000, 2000, 0],
                     [300, 400, 3000, 4000, 0], [0, 0, 0, 0, 0]], np.float32)
    close(y, img(full + 0.5), "output_padding >= stride")


ACT_X = np.array([-2.0, -0.5, 0.0, 0.5, 2.0], np.float32)


@pytest.mark.parametrize("op, expected", [
    ("relu", [0, 0, 0, 0.5, 2]),
    ("sigmoid", [0.11920292202211755, 0.3775406687981454, 0.5, 0.6224593312018546, 0.8807970779778823]),
    ("tanh", [-0.9640275800758169, -0.46211715726000974, 0, 0.46211715726000974, 0.9640275800758169]),
])
def test_activations(backend, close, op, expected):
    y = getattr(backend, op)(ACT_X.reshape(1, 1, 1, 5))
    close(y, np.array(expected).reshape(1, 1, 1, 5), op)
    assert getattr(backend, op)(ACT_X).shape == (5,), "activations take any shape"


def test_float64_as_declared(backend):
    """float64 in: a backend that declares float64 keeps it (to ~1e-12); one that does not says so and gives float32."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    y = backend.conv2d(x, w, stride=1, padding=1)
    exact = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
    if backend.capabilities.float64:
        assert y.dtype == np.float64
        np.testing.assert_allclose(y, exact, rtol=1e-12, atol=1e-12)
    else:
        assert y.dtype == np.float32  # not a float64 array holding float32 precision
        np.testing.assert_allclose(y, exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call", [
    lambda b: b.conv2d(np.zeros((1, 3, 5, 5)), np.zeros((2, 2, 3, 3)), stride=1, padding=0),  # 3 channels vs 2
    lambda b: b.conv2d(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)), stride=1, padding=0),  # kernel > input
    lambda b: b.conv2d(np.zeros((5, 5)), np.zeros((1, 1, 3, 3)), stride=1, padding=0),  # not NCHW
    lambda b: b.conv_transpose2d(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), stride=1, output_padding=1),
    lambda b: b.max_pool2d(np.zeros((1, 1, 4, 4)), kernel=2, padding=2),  # padding > kernel/2
], ids=["channels", "kernel-too-big", "not-nchw", "output-padding", "pool-padding"])
def test_impossible_parameters_are_usage_errors(backend, call):
    with pytest.raises(UsageError):
        call(backend)


# --- (b) properties over random parameters --------------------------------------------------------

def rand(seed: int, *shape, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def t64(a):
    return None if a is None else torch.from_numpy(np.asarray(a, np.float64))


def reference(model, **feeds) -> np.ndarray:
    """ONNX's reference implementation of the one-node model, in float64."""
    return ReferenceEvaluator(model).run(None, {k: np.asarray(v, np.float64) for k, v in feeds.items()})[0]


def check(close, y, oracle: np.ndarray, size, what: str, ref: np.ndarray | None = None) -> None:
    """float32 in, float32 out; size = arithmetic's = torch's; values = torch's (and ONNX reference's when given)."""
    assert y.dtype == np.float32, f"{what}: float32 in, {y.dtype} out"
    assert tuple(oracle.shape[2:]) == tuple(size), f"{what}: torch gives {oracle.shape}, arithmetic {size}"
    close(y, oracle, f"{what} vs torch")
    if ref is not None:  # a max-pool window that sees only padding: torch -inf, onnx.reference 0; we follow torch
        close(y, np.where(np.isinf(oracle), oracle, ref), f"{what} vs onnx.reference")


small = st.integers(0, 2)
paddings = st.one_of(small, st.tuples(small, small), st.tuples(small, small, small, small),
                     st.sampled_from(["same", "valid"]))
pairs13 = st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3)))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's note on its own copy
@PROPERTY
@given(g=st.sampled_from([1, 1, 2]), c=st.integers(1, 2), m=st.integers(1, 2), N=st.integers(1, 2),
       H=st.integers(1, 9), W=st.integers(1, 9), KH=st.integers(1, 4), KW=st.integers(1, 4),
       stride=pairs13, padding=paddings, dilation=st.sampled_from([1, 2, (1, 2), (2, 1)]),
       bias=st.booleans(), seed=st.integers(0, 2**31))
def test_conv2d_property(backend, close, g, c, m, N, H, W, KH, KW, stride, padding, dilation, bias, seed):
    C, M = g * c, g * m
    try:
        size = conv2d_output((H, W), (KH, KW), stride, padding, dilation)
    except UsageError:
        assume(False)
    x, w = rand(seed, N, C, H, W), rand(seed + 1, M, c, KH, KW, scale=(c * KH * KW) ** -0.5)
    b = rand(seed + 2, M) if bias else None
    y = backend.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=g)

    (pt, pb), (pl, pr) = resolve_padding(padding, kernel=(KH, KW), stride=stride, dilation=dilation,
                                           input_size=(H, W))
    if padding == "same" and pair(stride) == (1, 1):  # torch's own 'same' checks how arithmetic splits it
        oracle = F.conv2d(t64(x), t64(w), t64(b), 1, "same", dilation, g)
    else:
        oracle = F.conv2d(F.pad(t64(x), (pl, pr, pt, pb)), t64(w), t64(b), stride, 0, dilation, g)
    model = graphs.conv(C=C, M=M, kernel=(KH, KW), strides=pair(stride), pads=(pt, pl, pb, pr),
                        dilations=pair(dilation), group=g, bias=bias, dtype=np.float64)
    ref = reference(model, x=x, w=w, **({"b": b} if bias else {}))
    check(close, y, oracle.numpy(), size, "conv2d", ref)


@PROPERTY
@given(g=st.sampled_from([1, 1, 2]), c=st.integers(1, 2), m=st.integers(1, 2), N=st.integers(1, 2),
       H=st.integers(1, 5), W=st.integers(1, 5), KH=st.integers(1, 3), KW=st.integers(1, 3),
       stride=pairs13, padding=st.one_of(small, st.tuples(small, small), st.tuples(small, small, small, small)),
       dilation=st.sampled_from([1, 2, (1, 2)]), op=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       bias=st.booleans(), seed=st.integers(0, 2**31))
def test_conv_transpose2d_property(backend, close, g, c, m, N, H, W, KH, KW, stride, padding, dilation, op,
                                   bias, seed):
    C, M = g * c, g * m
    try:
        size = conv_transpose2d_output((H, W), (KH, KW), stride, padding, op, dilation)
    except UsageError:
        assume(False)
    x, w = rand(seed, N, C, H, W), rand(seed + 1, C, m, KH, KW, scale=(c * KH * KW) ** -0.5)
    b = rand(seed + 2, M) if bias else None
    y = backend.conv_transpose2d(x, w, b, stride=stride, padding=padding, output_padding=op, dilation=dilation,
                                 groups=g)

    pads = resolve_padding(padding, kernel=(KH, KW))
    (pt, pb), (pl, pr) = pads
    if is_symmetric(pads):  # torch's own padding checks arithmetic's size
        oracle = F.conv_transpose2d(t64(x), t64(w), t64(b), stride, (pt, pl), op, g, dilation).numpy()
    else:  # torch pads both ends alike: crop the unpadded result (the definition of padding here)
        oracle = F.conv_transpose2d(t64(x), t64(w), t64(b), stride, 0, op, g, dilation).numpy()
        assert oracle.shape[2] >= pt + size[0] and oracle.shape[3] >= pl + size[1]
        oracle = oracle[:, :, pt:pt + size[0], pl:pl + size[1]]
    ref = None
    if g == 1 and all(o < s for o, s in zip(op, pair(stride))):  # what onnx.reference implements
        model = graphs.conv_transpose(C=C, M=M, kernel=(KH, KW), strides=pair(stride), pads=(pt, pl, pb, pr),
                                      dilations=pair(dilation), group=1, bias=bias, dtype=np.float64,
                                      output_padding=op)
        ref = reference(model, x=x, w=w, **({"b": b} if bias else {}))
    check(close, y, oracle, size, "conv_transpose2d", ref)


def reference_pools(ceil_mode: bool, P: tuple[int, int]) -> bool:
    """Where onnx.reference (1.23) pools right. With ceil_mode it drops or divides the last window
    differently from its own spec and from torch and ORT (cf. onnx/onnx#4958); and its CommonPool reads
    2-D pads as (top, bottom, left, right) instead of ONNX's [top, left, bottom, right], which only
    matters when the two dimensions are padded differently."""
    return not ceil_mode and P[0] == P[1]


@st.composite
def pool_params(draw, dilations=True):
    K = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    P = (draw(st.integers(0, K[0] // 2)), draw(st.integers(0, K[1] // 2)))
    stride = draw(st.one_of(st.none(), pairs13))
    D = draw(st.sampled_from([(1, 1), (2, 2), (1, 2)])) if dilations else (1, 1)
    return K, stride, P, D


@PROPERTY
@given(p=pool_params(), N=st.integers(1, 2), C=st.integers(1, 3), H=st.integers(1, 9), W=st.integers(1, 9),
       ceil_mode=st.booleans(), seed=st.integers(0, 2**31))
def test_max_pool2d_property(backend, close, p, N, C, H, W, ceil_mode, seed):
    K, stride, P, D = p
    try:
        size = pool2d_output((H, W), K, stride, P, D, ceil_mode)
    except UsageError:
        assume(False)
    x = rand(seed, N, C, H, W)
    y = backend.max_pool2d(x, kernel=K, stride=stride, padding=P, dilation=D, ceil_mode=ceil_mode)
    oracle = F.max_pool2d(t64(x), K, stride, P, D, ceil_mode=ceil_mode).numpy()
    S = pair(K if stride is None else stride)
    ref = None
    if reference_pools(ceil_mode, P):
        ref = reference(graphs.max_pool(kernel=K, strides=S, pads=(P[0], P[1], P[0], P[1]), dilations=D,
                                        ceil_mode=0, dtype=np.float64), x=x)
    check(close, y, oracle, size, "max_pool2d", ref)


@PROPERTY
@given(p=pool_params(dilations=False), N=st.integers(1, 2), C=st.integers(1, 3), H=st.integers(1, 9),
       W=st.integers(1, 9), ceil_mode=st.booleans(), count_include_pad=st.booleans(), seed=st.integers(0, 2**31))
def test_avg_pool2d_property(backend, close, p, N, C, H, W, ceil_mode, count_include_pad, seed):
    K, stride, P, _ = p
    try:
        size = pool2d_output((H, W), K, stride, P, 1, ceil_mode)
    except UsageError:
        assume(False)
    x = rand(seed, N, C, H, W)
    y = backend.avg_pool2d(x, kernel=K, stride=stride, padding=P, ceil_mode=ceil_mode,
                           count_include_pad=count_include_pad)
    oracle = F.avg_pool2d(t64(x), K, stride, P, ceil_mode=ceil_mode, count_include_pad=count_include_pad).numpy()
    S = pair(K if stride is None else stride)
    ref = None
    if reference_pools(ceil_mode, P):
        ref = reference(graphs.avg_pool(kernel=K, strides=S, pads=(P[0], P[1], P[0], P[1]), ceil_mode=0,
                                        count_include_pad=int(count_include_pad), dtype=np.float64), x=x)
    check(close, y, oracle, size, "avg_pool2d", ref)


@PROPERTY
@given(op=st.sampled_from(["relu", "sigmoid", "tanh"]), shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
       seed=st.integers(0, 2**31))
def test_activation_property(backend, close, op, shape, seed):
    x = rand(seed, *shape, scale=4.0)
    y = getattr(backend, op)(x)
    oracle = getattr(torch, op)(t64(x)).numpy()
    ref = reference(graphs.unary(op={"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[op], rank=len(shape),
                                 dtype=np.float64), x=x)
    assert y.shape == tuple(shape) and y.dtype == np.float32
    close(y, oracle, f"{op} vs torch")
    close(y, ref, f"{op} vs onnx.reference")


# --- ORT specifics ----------------------------------------------------------------------------------

def test_ort_reuses_one_session_across_batch_and_image_sizes():
    from cvtool_backends import get
    from cvtool_backends.ort_backend import session

    b = get("ort", "cpu")
    b.conv2d(rand(0, 1, 3, 8, 8), rand(1, 2, 3, 3, 3), stride=1, padding=1)
    before = session.cached.cache_info()
    for N, H, W in [(2, 5, 7), (1, 9, 4)]:  # N, H, W are symbolic in the graph; new weights are inputs
        b.conv2d(rand(N, N, 3, H, W), rand(H, 2, 3, 3, 3), stride=1, padding=1)
    after = session.cached.cache_info()
    assert (after.misses, after.hits) == (before.misses, before.hits + 2)


def test_ort_float64_only_where_declared():
    from cvtool_backends import get

    b = get("ort", "cpu")
    x = np.random.default_rng(0).standard_normal((1, 1, 4, 4))
    assert b.capabilities.extra["float64_ops"] == ("max_pool2d", "relu", "sigmoid", "tanh")
    assert b.max_pool2d(x, kernel=2).dtype == np.float64 and b.tanh(x).dtype == np.float64
    assert b.avg_pool2d(x, kernel=2).dtype == np.float32  # no double AveragePool kernel in ORT's CPU provider
