"""cvtool.model.spec: the default U-Net's size and work worked out by hand, names and shapes equal to torch's
state_dict of the built SpecNet, and initial weights fixed by the seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvtool.errors import UsageError
from cvtool.model.spec import ModelSpec, init_params, total_flops
from cvtool_backends.torch_backend.model import SpecNet, build, export_params


def double_conv(cin: int, c: int) -> int:
    """Two 3x3 convs without bias (BN follows) + two BatchNorms (gamma, beta)."""
    return 9 * cin * c + 9 * c * c + 2 * 2 * c


def test_default_spec_has_482788_parameters():
    # widths 16, 32, 64 down, 128 at the bottom; up: tconv 2x2 (+bias), concat, double conv; head 1x1 -> 4 classes
    by_hand = (double_conv(3, 16) + double_conv(16, 32) + double_conv(32, 64)  # 2800 + 13952 + 55552
               + double_conv(64, 128)  # 221696
               + (128 * 64 * 4 + 64) + double_conv(128, 64)  # 32832 + 110848
               + (64 * 32 * 4 + 32) + double_conv(64, 32)  # 8224 + 27776
               + (32 * 16 * 4 + 16) + double_conv(32, 16)  # 2064 + 6976
               + (16 * 4 + 4))  # 68
    assert by_hand == 482_788
    spec = ModelSpec()
    assert spec.num_params() == 482_788
    assert sum(p.numel() for p in SpecNet(spec).parameters()) == 482_788  # torch counts the same


def test_default_spec_does_4_65_gflop_of_conv_work_at_256():
    # multiply-adds per output pixel of each level, times the pixels at that level; FLOPs = 2 x MACs
    macs = (256 * 256 * (9 * 3 * 16 + 9 * 16 * 16 + 9 * 32 * 16 + 9 * 16 * 16 + 16 * 4)  # enc0, dec0, head
            + 128 * 128 * (9 * 16 * 32 + 9 * 32 * 32 + 9 * 64 * 32 + 9 * 32 * 32 + 32 * 16 * 4)  # enc1, dec1, up0 (input 128^2)
            + 64 * 64 * (9 * 32 * 64 + 9 * 64 * 64 + 9 * 128 * 64 + 9 * 64 * 64 + 64 * 32 * 4)  # enc2, dec2, up1
            + 32 * 32 * (9 * 64 * 128 + 9 * 128 * 128 + 128 * 64 * 4))  # mid, up2
    assert 2 * macs == 4_645_191_680
    assert total_flops(ModelSpec(), (256, 256)) == 4_645_191_680


@pytest.mark.parametrize("kw", [dict(), dict(norm="none", activation="tanh", width=4, depth=2),
                                dict(in_channels=1, num_classes=2, width=3, depth=0)])
def test_names_shapes_and_order_equal_torch_state_dict(kw):
    spec = ModelSpec(**kw)
    sd = {k: tuple(v.shape) for k, v in SpecNet(spec).state_dict().items() if not k.endswith("num_batches_tracked")}
    assert list(sd.items()) == list(spec.param_shapes().items())
    p = init_params(spec, seed=1)
    assert {k: v.shape for k, v in p.items()} == spec.param_shapes()
    back = export_params(build(spec, p, torch.device("cpu")))  # through torch and back, unchanged
    assert list(back) == list(p)
    for k in p:
        np.testing.assert_array_equal(back[k], p[k], err_msg=k)


def test_init_is_fixed_by_the_seed():
    spec = ModelSpec(width=4, depth=2)
    a, b, c = init_params(spec, 7), init_params(spec, 7), init_params(spec, 8)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert a[k].dtype == np.float32
    assert not np.array_equal(a["enc0.conv1.weight"], c["enc0.conv1.weight"])
    assert not np.array_equal(a["head.weight"], c["head.weight"])


def test_init_values():
    spec = ModelSpec(width=32, depth=1)
    p = init_params(spec, 0)
    w = p["enc0.conv2.weight"]  # (32, 32, 3, 3): He normal, std sqrt(2 / (32 * 9)) = 0.0833
    assert w.std() == pytest.approx(np.sqrt(2 / 288), rel=0.05) and abs(w.mean()) < 0.005
    assert p["up0.weight"].std() == pytest.approx(np.sqrt(2 / 64), rel=0.1)  # fan-in of a 2x2/2 tconv: its in-channels
    for name in ("enc0.bn1.weight", "enc0.bn1.running_var"):
        np.testing.assert_array_equal(p[name], 1.0)
    for name in ("enc0.bn1.bias", "enc0.bn1.running_mean", "up0.bias", "head.bias"):
        np.testing.assert_array_equal(p[name], 0.0)
    tanh = init_params(ModelSpec(width=32, depth=1, activation="tanh"), 0)["enc0.conv2.weight"]
    assert tanh.std() == pytest.approx(np.sqrt(1 / 288), rel=0.05)  # Xavier-like gain 1


@pytest.mark.parametrize("kw,words", [(dict(activation="gelu"), "activation"), (dict(norm="layer"), "norm"),
                                      (dict(depth=7), "depth"), (dict(num_classes=1), "2 classes"),
                                      (dict(width=0), "width")])
def test_bad_spec(kw, words):
    with pytest.raises(UsageError, match=words):
        ModelSpec(**kw)


def test_trace_rejects_sizes_the_net_cannot_take():
    with pytest.raises(UsageError, match="divisible by 8"):
        total_flops(ModelSpec(), (100, 96))
