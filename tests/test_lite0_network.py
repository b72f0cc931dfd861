"""The whole lite0 network (EfficientNet-Lite0 encoder + U-Net decoder) on every backend, as the U-Net's tests hold
the U-Net: hand-written backward = autograd in float64, NumPy and torch training steps alike in float32, inference
on numpy, torch and the ONNX export (ORT and ONNX's ReferenceEvaluator) against the float64 reference.

Slow: the encoder has 2.96M parameters and 1152-channel depthwise layers whatever the decoder's width."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_data_cli import cli  # tests/ is on sys.path under pytest
from test_numpy_network import assert_running_stats_equal, autograd_and_numpy, batch, random_params, rel_err, torch_net

import cvtool_backends as registry
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.meta import ModelMeta
from cvtool.model.spec import ModelSpec
from cvtool.train.optim import OptimConfig
from cvtool_backends.numpy_fast.model import NumpyRunner, NumpyTrainer
from cvtool_backends.torch_backend.model import TorchRunner, TorchTrainer

pytestmark = pytest.mark.slow
SMALL = dict(encoder="lite0", depth=5, width=2)  # the decoder's widths 16/8/4/3/2; the encoder is always whole


def test_network_gradients_equal_autograd():
    spec = ModelSpec(**SMALL, in_channels=1, num_classes=3)
    # the smallest input: 1x1 at stride 32 (BatchNorm sees N = 2 values there)
    net, tr, grads = autograd_and_numpy(spec, random_params(spec, seed=3), *batch(spec, N=2, HW=32))
    ref = {k: prm.grad.numpy() for k, prm in net.named_parameters()}
    scale = max(np.abs(g).max() for g in ref.values())
    for k, g in ref.items():
        if np.abs(g).max() < 1e-12 * scale:  # a bias whose every path is batch-normalised: 0 up to rounding
            assert np.abs(grads[k]).max() < 1e-12 * scale, k
        else:
            assert rel_err(grads[k], g) < 1e-6, k
    assert_running_stats_equal(tr, net, 1e-10)  # 16 blocks deep, 2 values a channel at stride 32


@pytest.mark.parametrize("frozen_bn", [False, True])
def test_trainer_steps_equal_torch(frozen_bn):
    """Both trainers alike, the encoder's BatchNorm on batch statistics or (--frozen-bn) on its running ones: those
    then stay as loaded on both, the decoder's move."""
    spec = ModelSpec(**SMALL, in_channels=3, num_classes=3)
    p = random_params(spec, seed=5, dtype=np.float32)
    x, y, w = batch(spec, N=2, HW=64, dtype=np.float32)  # 32 x 32: BatchNorm at stride 32 sees 2 values, too few
    # for float32 (x_hat = +-1 flips with rounding)
    # SGD with momentum, not Adam: the biases whose every path is batch-normalised have gradients that are rounding
    # noise (1e-16), which Adam scales to full steps of either sign, on each backend its own
    cfg = OptimConfig("momentum", frozen_bn=frozen_bn)
    nt = NumpyTrainer(spec, p, optim=cfg, class_weights=w, dice=0.5)
    tt = TorchTrainer(spec, p, device="cpu", optim=cfg, class_weights=w, amp=False, dice=0.5)
    for _ in range(2):
        ln, lt = nt.step(x, y, 1e-2), tt.step(x, y, 1e-2)
        assert abs(ln - lt) <= 1e-5 * abs(lt)
    pn, pt = nt.params(), tt.params()
    assert list(pn) == list(pt)
    worst = max(pt, key=lambda k: rel_err(pn[k], pt[k]))
    assert rel_err(pn[worst], pt[worst]) < 1e-4, worst
    assert rel_err(nt.predict(x), tt.predict(x)) < 1e-4
    stats = [k for k in p if k.endswith(".running_mean")]
    enc, dec = [k for k in stats if k.startswith("enc.")], [k for k in stats if not k.startswith("enc.")]
    assert len(enc) == 48 and dec  # lite0: a stem and 16 blocks (the first without an expansion conv)
    for both in (pn, pt):
        assert all(np.array_equal(both[k], p[k]) == frozen_bn for k in enc)
        assert not any(np.array_equal(both[k], p[k]) for k in dec)
        assert not np.array_equal(both["enc.b5.bn1.weight"], p["enc.b5.bn1.weight"])  # the affine still trains


def test_runners_equal_the_float64_reference():
    spec = ModelSpec(**SMALL, in_channels=3, num_classes=4)
    p = random_params(spec, seed=11, dtype=np.float32)
    x, _, _ = batch(spec, N=2, HW=64, dtype=np.float32)
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    ref = registry.get("numpy", "cpu").runner(spec, p64, dtype=np.float64)(x.astype(np.float64))
    with torch.no_grad():
        autograd_ref = torch_net(spec, p64).eval()(torch.from_numpy(x.astype(np.float64))).numpy()
    assert rel_err(ref, autograd_ref) < 1e-12
    assert rel_err(NumpyRunner(spec, p)(x), ref) < 1e-5
    assert rel_err(TorchRunner(spec, p, device="cpu")(x), ref) < 1e-5


def test_export_is_verified_on_every_backend(tmp_path, capsys):
    """A lite0 checkpoint exported: ORT, torch and numpy run it at the verify shapes and agree with the float64
    reference; the file carries the weights (it runs with the package's file nowhere in sight) and the
    normalisation of the checkpoint."""
    spec = ModelSpec(**SMALL, in_channels=3, num_classes=2)
    meta = ModelMeta(["bg", "fg"], [[0, 0, 0], [255, 0, 0]], [127 / 255] * 3, [128 / 255] * 3)
    path = ckpt_io.save(ckpt_io.Checkpoint(spec, random_params(spec, seed=2, dtype=np.float32), meta),
                        tmp_path / "lite0.safetensors")
    code, stdout, err = cli(capsys, "export", str(path), "-o", str(tmp_path / "lite0.onnx"), "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["passed"] and {r["backend"] for r in doc["verify"]} >= {"numpy", "torch", "ort cpu"}
    assert all(r["ok"] and r["max_rel"] < 1e-5 for r in doc["verify"])
    import onnx

    from cvtool_backends.onnx_format.export import read_meta, to_params

    m = onnx.load(str(tmp_path / "lite0.onnx"))
    assert read_meta(m)["normalization"] == {"mean": meta.mean, "std": meta.std}
    got_spec, params, _ = to_params(m)
    assert got_spec == spec and params.keys() == ckpt_io.load(path).params.keys()
    assert {n.op_type for n in m.graph.node} >= {"Conv", "Clip", "Add", "ConvTranspose", "Concat"}
    assert any(a.name == "group" and a.i == 1152 for n in m.graph.node for a in n.attribute)
