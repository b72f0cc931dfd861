"""The `naive` backend (the lecture's loops): its backward rules against finite differences and torch autograd,
and the fast `numpy` layers against it on small shapes that take each of their fast paths, without torch."""

import numpy as np
import pytest

import cvtool_backends as registry
from cvtool.convcalc.gradcheck import numeric_grad
from cvtool_backends.numpy_fast import layers as fast
from cvtool_backends.numpy_loops import conv as nconv
from cvtool_backends.numpy_loops import layers as nlayers
from cvtool_backends.numpy_loops import pool as npool

RNG = np.random.default_rng(0)


def r(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


def test_lecture_stamp_example():
    """Transposed convolution as stamps: a 2x2 input, kernel of ones, stride 2 -> each pixel fills its own 2x2."""
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    y, _ = nconv.conv_transpose2d_forward(x, np.ones((1, 1, 2, 2)), stride=2)
    assert y[0, 0].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    y, _ = nconv.conv_transpose2d_forward(x, np.ones((1, 1, 2, 2)), stride=1)  # stamps overlap and add
    assert y[0, 0].tolist() == [[1, 3, 2], [4, 10, 6], [3, 7, 4]]


@pytest.mark.parametrize("kw", [dict(stride=1, padding=1), dict(stride=2, padding=(0, 1, 1, 0), dilation=1),
                                dict(stride=1, padding=2, dilation=2), dict(stride=1, padding=1, groups=2)])
def test_conv2d_backward_matches_finite_differences(kw):
    x, w, b = r(1, 2, 5, 4), r(2, 2 // kw.get("groups", 1), 3, 3), r(2)
    y, cache = nconv.conv2d_forward(x, w, b, **kw)
    dy = r(*y.shape)
    dx, dw, db = nconv.conv2d_backward(dy, cache)
    loss = lambda: float((nconv.conv2d_forward(x, w, b, **kw)[0] * dy).sum())  # noqa: E731
    for got, wrt in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(got, numeric_grad(loss, wrt), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kw", [dict(stride=2), dict(stride=2, padding=1, output_padding=1), dict(stride=1, padding=1),
                                dict(stride=2, padding=1, dilation=2, groups=2)])
def test_conv_transpose2d_backward_matches_finite_differences(kw):
    g = kw.get("groups", 1)
    x, w, b = r(1, 2, 3, 4), r(2, 2 // g, 3, 3), r(2)  # 2 channels in, 2 out
    y, cache = nconv.conv_transpose2d_forward(x, w, b, **kw)
    dy = r(*y.shape)
    dx, dw, db = nconv.conv_transpose2d_backward(dy, cache)
    loss = lambda: float((nconv.conv_transpose2d_forward(x, w, b, **kw)[0] * dy).sum())  # noqa: E731
    for got, wrt in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(got, numeric_grad(loss, wrt), rtol=1e-6, atol=1e-7)


def test_pool_and_activation_backward_match_finite_differences():
    x = r(1, 2, 5, 5)
    for fwd, bwd, kw in ((npool.max_pool2d_forward, npool.max_pool2d_backward, dict(kernel=2, stride=2, ceil_mode=True)),
                         (npool.avg_pool2d_forward, npool.avg_pool2d_backward, dict(kernel=3, stride=2, padding=1))):
        y, cache = fwd(x, **kw)
        dy = r(*y.shape)
        loss = lambda: float((fwd(x, **kw)[0] * dy).sum())  # noqa: E731
        np.testing.assert_allclose(bwd(dy, cache), numeric_grad(loss, x), rtol=1e-6, atol=1e-7)
    for name in ("relu", "sigmoid", "tanh"):
        f, b = getattr(nlayers, f"{name}_forward"), getattr(nlayers, f"{name}_backward")
        x = r(3, 4) + 0.01  # away from relu's kink
        y, c = f(x)
        dy = r(3, 4)
        np.testing.assert_allclose(b(dy, c), numeric_grad(lambda: float((f(x)[0] * dy).sum()), x), rtol=1e-6, atol=1e-8)


def test_max_pool_routes_the_gradient_to_the_winner():
    x = np.array([[[[1.0, 9.0], [3.0, 4.0]]]])
    y, cache = npool.max_pool2d_forward(x, kernel=2)
    assert y.item() == 9 and npool.max_pool2d_backward(np.array([[[[5.0]]]]), cache)[0, 0].tolist() == [[0, 5], [0, 0]]


def test_batchnorm_and_cross_entropy_backward_match_finite_differences():
    x, gamma, beta = r(2, 3, 2, 3), r(3), r(3)
    y, cache, _ = nlayers.batchnorm2d_forward(x, gamma, beta, np.zeros(3), np.ones(3), training=True)
    dy = r(*y.shape)
    f = lambda: float((nlayers.batchnorm2d_forward(x, gamma, beta, np.zeros(3), np.ones(3), training=True)[0] * dy).sum())  # noqa: E731
    dx, dg, db = nlayers.batchnorm2d_backward(dy, cache)
    for got, wrt in ((dx, x), (dg, gamma), (db, beta)):
        np.testing.assert_allclose(got, numeric_grad(f, wrt), rtol=1e-5, atol=1e-7)
    z = r(2, 3, 2, 2)
    y_lab = np.array([[[0, 2], [255, 1]], [[1, 1], [0, 255]]])
    w = np.array([1.0, 2.0, 0.5])
    loss, grad = nlayers.softmax_cross_entropy(z, y_lab, weight=w)
    np.testing.assert_allclose(grad, numeric_grad(lambda: nlayers.softmax_cross_entropy(z, y_lab, weight=w)[0], z),
                               rtol=1e-6, atol=1e-8)


# --- the fast NumPy layers against the loops, torch-free ------------------------------------------

CONVS = {  # (C, F, k, stride, padding, dilation, groups): shapes that take numpy_fast's different paths
    "1x1": (4, 6, 1, 1, 0, 1, 1), "rgb-im2col": (3, 8, 3, 1, 1, 1, 1), "few-outputs": (16, 16, 3, 1, 1, 1, 1),
    "per-kernel-row": (8, 40, 3, 1, 1, 1, 1), "strided": (4, 6, 3, 2, 1, 1, 1), "tiled-2x2-s2": (4, 6, 2, 2, 0, 1, 1),
    "dilated": (4, 6, 3, 1, 2, 2, 1), "grouped": (4, 6, 3, 1, 1, 1, 2), "asymmetric": (4, 6, 3, 1, (0, 1, 2, 0), 1, 1),
    "5x5-valid": (2, 3, 5, 1, 0, 1, 1), "many-blocks": (16, 16, 3, 1, 1, 1, 1, 40),  # 40x40: work split in blocks
}


@pytest.mark.parametrize("name", list(CONVS))
def test_fast_conv2d_equals_the_loops(name):
    C, F, k, s, p, d, g, *side = CONVS[name]
    H, W = (side[0], side[0]) if side else (12, 10)
    x, w, b = r(2, C, H, W, dtype=np.float32), r(F, C // g, k, k, dtype=np.float32), r(F, dtype=np.float32)
    kw = dict(stride=s, padding=p, dilation=d, groups=g)
    want, cache = nconv.conv2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
    got, fcache = fast.conv2d_forward(x, w, b, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    dy = r(*want.shape, dtype=np.float32)
    for a, e in zip(fast.conv2d_backward(dy, fcache), nconv.conv2d_backward(dy.astype(np.float64), cache)):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)
    # the fused inference path (conv + ReLU in the copy out of the product)
    np.testing.assert_allclose(fast.conv2d_relu(x, w, b, **kw), np.maximum(want, 0), rtol=1e-5, atol=1e-5)


TCONVS = {"tiled-2x2-s2": (4, 6, 2, 2, 0, 0, 1, 1), "k3-s2-op1": (4, 6, 3, 2, 1, 1, 1, 1), "k4-s2-p1": (4, 6, 4, 2, 1, 0, 1, 1),
          "k3-s1": (4, 6, 3, 1, 1, 0, 1, 1), "grouped": (4, 6, 3, 2, 1, 0, 1, 2), "dilated": (2, 3, 3, 1, 0, 0, 2, 1)}


@pytest.mark.parametrize("name", list(TCONVS))
def test_fast_conv_transpose2d_equals_the_loops(name):
    C, F, k, s, p, op, d, g = TCONVS[name]
    x, w, b = r(2, C, 6, 5, dtype=np.float32), r(C, F // g, k, k, dtype=np.float32), r(F, dtype=np.float32)
    kw = dict(stride=s, padding=p, output_padding=op, dilation=d, groups=g)
    want, cache = nconv.conv_transpose2d_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), **kw)
    got, fcache = fast.conv_transpose2d_forward(x, w, b, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    dy = r(*want.shape, dtype=np.float32)
    for a, e in zip(fast.conv_transpose2d_backward(dy, fcache), nconv.conv_transpose2d_backward(dy.astype(np.float64), cache)):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kw", [dict(kernel=2, stride=2), dict(kernel=3, stride=2, padding=1, ceil_mode=True),
                                dict(kernel=3, stride=1, padding=1), dict(kernel=(2, 3), stride=(2, 1))])
def test_fast_pooling_equals_the_loops(kw):
    x = r(2, 3, 9, 8)
    want, c = npool.max_pool2d_forward(x, **kw)
    got, fc = fast.max_pool2d_forward(x, **kw)
    np.testing.assert_array_equal(got, want)
    dy = r(*want.shape)
    np.testing.assert_allclose(fast.max_pool2d_backward(dy, fc), npool.max_pool2d_backward(dy, c), atol=1e-12)
    for inc in (True, False):
        want, c = npool.avg_pool2d_forward(x, count_include_pad=inc, **kw)
        got, fc = fast.avg_pool2d_forward(x, count_include_pad=inc, **kw)
        np.testing.assert_allclose(got, want, atol=1e-12)
        np.testing.assert_allclose(fast.avg_pool2d_backward(dy, fc), npool.avg_pool2d_backward(dy, c), atol=1e-12)


def test_fast_batchnorm_and_loss_equal_the_loops():
    x, gamma, beta = r(3, 4, 5, 6), r(4), r(4)
    rm, rv = r(4), np.abs(r(4)) + 0.5
    want, c, (wm, wv) = nlayers.batchnorm2d_forward(x, gamma, beta, rm, rv, training=True)
    fm, fv = rm.copy(), rv.copy()
    got, fc = fast.batchnorm2d_forward(x, gamma, beta, fm, fv, training=True)  # running stats in place
    np.testing.assert_allclose(got, want, atol=1e-10)
    np.testing.assert_allclose(fm, wm, atol=1e-12)
    np.testing.assert_allclose(fv, wv, atol=1e-12)
    dy = r(*x.shape)
    for a, e in zip(fast.batchnorm2d_backward(dy, fc), nlayers.batchnorm2d_backward(dy, c)):
        np.testing.assert_allclose(a, e, atol=1e-10)
    ev, _, _ = nlayers.batchnorm2d_forward(x, gamma, beta, rm, rv, training=False)
    np.testing.assert_allclose(fast.batchnorm2d_forward(x, gamma, beta, rm.copy(), rv.copy(), training=False)[0], ev,
                               atol=1e-10)
    z = r(2, 3, 4, 4)
    lab = RNG.integers(0, 3, (2, 4, 4))
    lab[0, 0, :2] = 255
    w = np.array([0.5, 1.0, 2.0])
    lw, gw = nlayers.softmax_cross_entropy(z, lab, weight=w)
    lf, gf = fast.softmax_cross_entropy(z, lab, weight=w)
    assert lf == pytest.approx(lw, rel=1e-12)
    np.testing.assert_allclose(gf, gw, atol=1e-12)


def test_naive_is_a_registered_backend_of_operations_only():
    st = registry.status("naive")
    assert st.available and st.devices == ("cpu",)
    be = registry.get("naive", "cpu")
    assert be.capabilities.backward and not be.capabilities.train and not hasattr(be, "runner")
    from cvtool.errors import UsageError

    with pytest.raises(UsageError, match="too many"):
        be.conv2d(np.zeros((64, 16, 256, 256), np.float32), np.zeros((16, 16, 3, 3), np.float32), padding=1)


@pytest.mark.slow
def test_convcalc_verify_and_bench_op_include_naive(capsys):
    import json

    from cvtool.cli import main

    with pytest.raises(SystemExit) as e:
        main(["convcalc", "-i", "7", "-k", "3", "-s", "2", "-p", "1", "--verify", "--backend", "numpy,naive", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert e.value.code in (0, None)
    by = {row["backend"]: row for row in doc["results"]}
    assert by["naive"]["ok"] and 0 < by["naive"]["max_rel_err"] < 1e-5
    with pytest.raises(SystemExit) as e:
        main(["bench", "--op", "conv2d", "-k", "3", "-p", "1", "--sizes", "16", "--batch-sizes", "1", "--min-time",
              "0.01", "--backend", "numpy,naive", "--json"])
    doc = json.loads(capsys.readouterr().out)
    rows = {row["backend"]: row["status"] for row in doc["rows"]}
    assert e.value.code in (0, None) and rows["naive"] == "pass" and rows["numpy"] == "pass"
    with pytest.raises(SystemExit) as e:
        main(["bench", "--op", "conv2d", "-k", "3", "-p", "1", "--sizes", "160", "--batch-sizes", "16", "--min-time",
              "0.01", "--backend", "naive", "--json"])
    doc = json.loads(capsys.readouterr().out)
    naive = [row for row in doc["rows"] if row["backend"] == "naive"][0]
    assert naive["status"] == "unavailable" and "too large" in naive["reason"]
