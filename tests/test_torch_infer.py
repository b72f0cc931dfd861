"""torch's inference net (backends/torch_backend/infer.py: BatchNorm folded, Conv+ReLU and the skip
concatenations fused) against the training module in eval mode (model.SpecNet), which runs every layer
as written. Oracle in float64: SpecNet on the same parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvtool.model.fuse import fuse_relu
from cvtool.model.spec import Concat, ModelSpec, init_params
from cvtool_backends.torch_backend.infer import FrozenNet, channels
from cvtool_backends.torch_backend.model import TorchRunner, build


def params_off_defaults(spec: ModelSpec, seed: int) -> dict[str, np.ndarray]:
    """init_params with biases, BN affine and running stats moved off 0 / 1, so a dropped term shows."""
    rng = np.random.default_rng(seed)
    p = init_params(spec, seed)
    for k, v in p.items():
        if k.endswith("running_var"):
            p[k] = (rng.random(v.shape) + 0.5).astype(np.float32)
        elif k.endswith(("bias", "running_mean")) or (k.endswith("weight") and v.ndim == 1):
            p[k] = (rng.standard_normal(v.shape) * 0.3 + (1.0 if k.endswith("weight") else 0.0)).astype(np.float32)
    return p


def reference(spec, p, x: np.ndarray) -> np.ndarray:
    net = build(spec, {k: v.astype(np.float64) for k, v in p.items()}, torch.device("cpu")).double().eval()
    with torch.no_grad():
        return net(torch.from_numpy(x.astype(np.float64))).numpy()


@pytest.mark.parametrize("kw", [dict(), dict(depth=4, width=8), dict(activation="tanh"), dict(activation="sigmoid"),
                                dict(norm="none"), dict(in_channels=1, num_classes=2, depth=1)])
@pytest.mark.parametrize("fused", [True, False])
def test_frozen_net_equals_the_training_module(kw, fused):
    spec = ModelSpec(**{"in_channels": 3, "num_classes": 4, "width": 6, "depth": 2, **kw})
    p = params_off_defaults(spec, seed=3)
    x = np.random.default_rng(0).standard_normal((2, spec.in_channels, 48, 32)).astype(np.float32)
    net = FrozenNet(spec, p, torch.device("cpu"))
    net.fused = net.fused and fused  # both paths: oneDNN post-ops, and F.conv2d + in-place ReLU
    got = net(torch.from_numpy(x)).numpy()
    ref = reference(spec, p, x)
    assert got.shape == ref.shape == (2, spec.num_classes, 48, 32)
    assert np.abs(got - ref).max() <= 1e-4 * max(np.abs(ref).max(), 1.0)


def test_no_concatenation_is_built_for_the_skips():
    """Every U-Net skip Concat feeds one conv: its weight is split instead, and the node is never computed."""
    spec = ModelSpec(width=4, depth=3)
    net = FrozenNet(spec, params_off_defaults(spec, 0), torch.device("cpu"))
    concats = [n.name for n in net.nodes if isinstance(n.layer, Concat)]
    assert len(concats) == 3 and set(concats) == net.cat_free
    for name, parts in net.split.items():  # the split weights together are the original one
        C = channels(net.nodes, spec.in_channels)
        assert sum(C[s] for s in parts) == net.w[f"{name}.weight"].shape[1]
        torch.testing.assert_close(torch.cat([net.w[f"{name}.weight.{i}"] for i in range(len(parts))], 1),
                                   net.w[f"{name}.weight"])


def test_relu_pairs_and_batchnorm_are_rewritten():
    spec = ModelSpec(width=4, depth=2)
    net = FrozenNet(spec, params_off_defaults(spec, 0), torch.device("cpu"))
    kinds = [type(n.layer).__name__ for n in net.nodes]
    assert "BatchNorm2d" not in kinds and "Activation" not in kinds and "ConvReLU" in kinds
    assert len(fuse_relu(spec.graph())) == len(spec.graph())  # a ReLU after BatchNorm fuses only once BN is folded


def test_runner_returns_numpy_float32():
    spec = ModelSpec(width=4, depth=2)
    p = params_off_defaults(spec, 1)
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    y = TorchRunner(spec, p, "cpu")(x)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32
    assert np.abs(y - reference(spec, p, x)).max() < 1e-4 * max(np.abs(y).max(), 1.0)


def test_cuda_inference_keeps_ieee_float32_convolutions():
    """cuDNN's default TF32 convolutions (~1e-3) would fail the float64 cross-check on every GPU: the runner turns
    them off before it builds the net on CUDA (checked here on the flag, which exists without a GPU too)."""
    from cvtool_backends.torch_backend.model import full_fp32_convolutions

    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is None or not hasattr(conv, "fp32_precision"):
        pytest.skip("this torch has only the legacy allow_tf32 flag")
    before = conv.fp32_precision
    try:
        conv.fp32_precision = "tf32"
        full_fp32_convolutions()
        assert conv.fp32_precision == "ieee"
    finally:
        conv.fp32_precision = before
