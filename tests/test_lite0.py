"""The lite0 encoder's layers and graph: depthwise convolution with TF "SAME" pads, ReLU6 and the residual Add,
each backward against finite differences and torch; the graph's size, strides and receptive field worked out by
hand; names and shapes equal to torch's state_dict; an old spec (no `encoder`) still a U-Net.

Oracles: cvtool.convcalc.gradcheck (central differences), torch.nn.functional, the naive loops, and literals
(EfficientNet-Lite0's published 4,652,008 parameters; the receptive field summed block by block)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cvtool.convcalc.gradcheck import numeric_grad
from cvtool.errors import UsageError
from cvtool.model import lite0, pretrained
from cvtool.model.inference import halo
from cvtool.model.spec import ModelSpec, init_params, trace
from cvtool_backends.numpy_fast import layers as fast
from cvtool_backends.numpy_loops import conv as nconv
from cvtool_backends.numpy_loops import layers as nlayers
from cvtool_backends.torch_backend.model import SpecNet, build, export_params

RNG = np.random.default_rng(0)
LITE0 = dict(encoder="lite0", depth=5)


def r(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


# --- the layers ------------------------------------------------------------------------------------

# the depthwise convolutions of the encoder: TF "SAME" at stride 2 pads one more at the bottom/right
DEPTHWISE = [dict(k=3, stride=2, padding=(0, 1, 0, 1)), dict(k=5, stride=2, padding=(1, 2, 1, 2)),
             dict(k=3, stride=1, padding=1), dict(k=5, stride=1, padding=2)]


@pytest.mark.parametrize("case", DEPTHWISE, ids=lambda c: f"k{c['k']}s{c['stride']}")
def test_depthwise_same_conv_backward_matches_finite_differences_and_torch(case):
    C, k = 3, case["k"]
    x, w = r(2, C, 6, 6), r(C, 1, k, k)
    kw = dict(stride=case["stride"], padding=case["padding"], groups=C)
    y, cache = fast.conv2d_forward(x, w, None, **kw)
    assert y.shape == (2, C, 6 // case["stride"], 6 // case["stride"])  # SAME: ceil(in / stride)
    dy = r(*y.shape)
    dx, dw, _ = fast.conv2d_backward(dy, cache)
    loss = lambda: float((fast.conv2d_forward(x, w, None, **kw)[0] * dy).sum())  # noqa: E731
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, numeric_grad(loss, w), rtol=1e-6, atol=1e-8)
    # torch: pad explicitly (left, right, top, bottom), then a valid depthwise conv
    p = kw["padding"] if isinstance(kw["padding"], tuple) else (kw["padding"],) * 4
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = F.conv2d(F.pad(xt, (p[2], p[3], p[0], p[1])), wt, stride=kw["stride"], groups=C)
    (yt * torch.from_numpy(dy)).sum().backward()
    for got, ref in ((y, yt.detach()), (dx, xt.grad), (dw, wt.grad)):
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-10, atol=1e-12)
    # and the lecture's loops
    np.testing.assert_allclose(nconv.conv2d_forward(x, w, None, **kw)[0], y, rtol=1e-12, atol=1e-12)


def test_depthwise_path_equals_torch_on_any_geometry():
    """backends/numpy_fast/depthwise.py (taken for groups = C = F) on strides, dilations, pads of every form, biases
    and odd sizes, forward and backward, and the inference conv2d_relu: all as torch's grouped F.conv2d."""
    from cvtool.arithmetic import conv2d_output, resolve_padding

    rng = np.random.default_rng(5)
    for case in range(18):
        C, H, W, KH, KW = (int(v) for v in (rng.integers(2, 5), rng.integers(1, 9), rng.integers(1, 9),
                                             rng.integers(1, 4), rng.integers(1, 4)))
        stride, dilation = tuple(rng.integers(1, 3, 2)), tuple(rng.integers(1, 3, 2))
        padding = [tuple(int(v) for v in rng.integers(0, 3, 4)), int(rng.integers(0, 3)), "same"][case % 3]
        try:
            conv2d_output((H, W), (KH, KW), stride, padding, dilation)
        except UsageError:
            continue
        x, w, b = r(2, C, H, W), r(C, 1, KH, KW), (r(C) if case % 2 else None)
        kw = dict(stride=stride, padding=padding, dilation=dilation, groups=C)
        y, cache = fast.conv2d_forward(x, w, b, **kw)
        dy = r(*y.shape)
        dx, dw, db = fast.conv2d_backward(dy, cache)
        (pt, pb), (pl, pr) = resolve_padding(padding, kernel=(KH, KW), stride=stride, dilation=dilation,
                                               input_size=(H, W))
        xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        bt = None if b is None else torch.tensor(b, requires_grad=True)
        yt = F.conv2d(F.pad(xt, (pl, pr, pt, pb)), wt, bt, stride, 0, dilation, C)
        (yt * torch.from_numpy(dy)).sum().backward()
        for got, ref in ((y, yt.detach()), (dx, xt.grad), (dw, wt.grad)) + (((db, bt.grad),) if b is not None else ()):
            np.testing.assert_allclose(got, ref.numpy(), rtol=1e-10, atol=1e-12, err_msg=str((case, kw)))
        np.testing.assert_allclose(fast.conv2d_relu(x, w, b, **kw), np.maximum(y, 0), rtol=1e-12, atol=1e-12)


def test_relu6_and_add_backward_match_finite_differences_on_both_numpy_backends():
    x = np.array([-1.0, 0.5, 3.0, 5.9, 6.5, 8.0])  # below, inside and above (0, 6), away from the kinks
    dy = r(6)
    for lib in (fast, nlayers):
        y, cache = lib.relu6_forward(x)
        np.testing.assert_array_equal(y, [0, 0.5, 3.0, 5.9, 6, 6])
        dx = lib.relu6_backward(dy, cache)
        np.testing.assert_allclose(dx, numeric_grad(lambda: float((lib.relu6_forward(x)[0] * dy).sum()), x),
                                   rtol=1e-6, atol=1e-8)
    xt = torch.tensor(np.array([0.0, 6.0, 3.0]), requires_grad=True)  # torch's gradient at the kinks: 0
    F.relu6(xt).sum().backward()
    np.testing.assert_array_equal(fast.relu6_backward(np.ones(3), fast.relu6_forward(xt.detach().numpy())[1]),
                                  xt.grad.numpy())
    a, b = r(2, 3), r(2, 3)
    y, cache = nlayers.add_forward(a, b)
    np.testing.assert_array_equal(y, a + b)
    da, db = nlayers.add_backward(dy[:6].reshape(2, 3), cache)
    loss = lambda: float((nlayers.add_forward(a, b)[0] * dy[:6].reshape(2, 3)).sum())  # noqa: E731
    np.testing.assert_allclose(da, numeric_grad(loss, a), rtol=1e-6)
    np.testing.assert_allclose(db, numeric_grad(loss, b), rtol=1e-6)


def test_same_pads_are_tensorflows():
    # TF: out = ceil(in / s), pad_total = max((out - 1) * s + k - in, 0), the smaller half first
    for k, s in ((1, 1), (3, 1), (3, 2), (5, 1), (5, 2)):
        for size in (32, 64, 96):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            assert lite0.same_pads(k, s) == (total // 2, total - total // 2) * 2


# --- the graph -------------------------------------------------------------------------------------

def test_the_encoder_has_efficientnet_lite0s_published_size():
    # 4,652,008 parameters in all (EfficientNet-Lite0); of them the classifier's conv head 320 -> 1280 with its
    # BatchNorm, and _fc 1280 -> 1000, are not in the segmentation net
    shapes = pretrained.encoder_shapes(3, head=True)
    assert sum(int(np.prod(s)) for k, s in shapes.items() if "running" not in k) == 4_652_008
    enc = sum(int(np.prod(s)) for k, s in pretrained.encoder_shapes(3).items() if "running" not in k)
    assert enc == 4_652_008 - (320 * 1280 + 2 * 1280) - (1280 * 1000 + 1000)
    assert [b.number for b in lite0.blocks() if b.residual] == [2, 4, 6, 7, 9, 10, 12, 13, 14]


def test_strides_and_receptive_field_by_hand():
    rows = {t.name: t for t in trace(ModelSpec(**LITE0), (256, 256))}
    for name, jump, C in (("enc.b0.bn2", 2, 16), ("enc.b2.add", 4, 24), ("enc.b4.add", 8, 40),
                          ("enc.b10.add", 16, 112), ("enc.b15.bn2", 32, 320)):
        assert (rows[name].jump, rows[name].out_shape) == (jump, (C, 256 // jump, 256 // jump)), name
    # each kxk conv adds (k - 1) x the stride before it: stem 2x1; b0 2x2; b1 2x2 (then x2); b2 2x4; b3 4x4 (x2);
    # b4 4x8; b5 2x8 (x2); b6, b7 2x16; b8-b10 4x16; b11 4x16 (x2); b12-b14 4x32; b15 2x32
    rf = 1 + 2 + 4 + 4 + 8 + 16 + 32 + 16 + 2 * 32 + 3 * 64 + 64 + 3 * 128 + 64
    assert rows["enc.b15.bn2"].rf == rf == 851
    assert rows["head"].out_shape == (4, 256, 256) and rows["head"].jump == 1
    assert halo(ModelSpec(**LITE0)) >= (rf - 1) // 2  # tiles keep at least half the field on each side


@pytest.mark.parametrize("kw", [dict(LITE0), dict(LITE0, in_channels=1, num_classes=2, width=4, norm="none")])
def test_names_shapes_and_order_equal_torch_state_dict(kw):
    spec = ModelSpec(**kw)
    sd = {k: tuple(v.shape) for k, v in SpecNet(spec).state_dict().items() if not k.endswith("num_batches_tracked")}
    assert list(sd.items()) == list(spec.param_shapes().items())
    p = init_params(spec, seed=1)
    back = export_params(build(spec, p, torch.device("cpu")))
    assert list(back) == list(p) and all(np.array_equal(back[k], p[k]) for k in p)
    assert p["enc.b3.dw.weight"].shape == (144, 1, 5, 5)  # depthwise: one input channel per filter


def test_spec_fields_and_old_files():
    assert ModelSpec.from_dict({k: v for k, v in ModelSpec().to_dict().items() if k != "encoder"}).encoder == "unet"
    assert ModelSpec(**LITE0).multiple == 32
    with pytest.raises(UsageError, match="depth must be 5"):
        ModelSpec(encoder="lite0")
    with pytest.raises(UsageError, match="unknown encoder"):
        ModelSpec(encoder="resnet")
    assert lite0.decoder_widths(16) == (128, 64, 32, 24, 16)


@pytest.mark.slow
@pytest.mark.parametrize("fused", [True, False])
def test_frozen_torch_net_equals_the_training_module(fused):
    """infer.FrozenNet (BN folded, asymmetric pads by F.pad, grouped convs through oneDNN's post-op primitive or
    F.conv2d, the path CUDA takes) = SpecNet in eval mode in float64."""
    from test_torch_infer import params_off_defaults, reference

    from cvtool_backends.torch_backend.infer import FrozenNet

    spec = ModelSpec(**LITE0, width=2, num_classes=3)
    p = params_off_defaults(spec, seed=3)
    x = r(1, 3, 64, 32, dtype=np.float32)
    net = FrozenNet(spec, p, torch.device("cpu"))
    net.fused = net.fused and fused
    got, ref = net(torch.from_numpy(x)).numpy(), reference(spec, p, x)
    assert got.shape == ref.shape == (1, 3, 64, 32)
    assert np.abs(got - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1.0)
