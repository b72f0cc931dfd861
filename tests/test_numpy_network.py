"""The whole U-Net on the NumPy reference backend (backends/numpy_fast/model.py) against torch.

Oracle: the same spec built as a torch SpecNet (cvtool_backends.torch_backend.model) with autograd and
torch.optim. Gradients are compared in float64 (hand-written backward vs autograd, to ~1e-12);
training steps and inference in float32 (TorchTrainer with amp=False: no bf16 autocast; TorchRunner).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import cvtool_backends as registry
from cvtool.errors import UsageError
from cvtool.model.spec import ModelSpec, init_params
from cvtool.train.optim import OptimConfig
from cvtool_backends.base import Runner, Trainer
from cvtool_backends.numpy_fast.model import NumpyRunner, NumpyTrainer, backward, forward
from cvtool_backends.torch_backend.model import TorchRunner, TorchTrainer, build


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """max |a - b| / max |b|: the error relative to the tensor's scale (cvtool.compare's definition)."""
    from cvtool.compare import compare

    agree = compare(np.asarray(a, np.float64), np.asarray(b, np.float64))
    assert agree.max_rel is not None, agree.reason
    return agree.max_rel


def random_params(spec: ModelSpec, seed: int, dtype=np.float64) -> dict[str, np.ndarray]:
    """init_params, then every bias, BN gamma/beta and running stat moved off its special value
    (0 or 1), so that a term dropped in forward or backward cannot hide behind it."""
    rng = np.random.default_rng(seed)
    p = init_params(spec, seed, dtype)
    for k, v in p.items():
        if k.endswith("running_var") or k.endswith("bn1.weight") or k.endswith("bn2.weight"):
            p[k] = rng.uniform(0.5, 1.5, v.shape).astype(dtype)
        elif v.ndim == 1:  # conv biases, BN beta, running means
            p[k] = rng.normal(0, 0.3, v.shape).astype(dtype)
    return p


def batch(spec: ModelSpec, N: int = 2, HW: int = 16, seed: int = 1, dtype=np.float64):
    """Random input, labels with an ignored (255) stripe, and class weights."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, spec.in_channels, HW, HW)).astype(dtype)
    y = rng.integers(0, spec.num_classes, (N, HW, HW))
    y[0, :3] = 255
    y[-1, :, -2:] = 255
    w = rng.uniform(0.5, 2.0, spec.num_classes).astype(np.float32)
    return x, y, w


def torch_net(spec: ModelSpec, params: dict[str, np.ndarray]):
    """SpecNet in float64 holding exactly `params` (build() goes through float32)."""
    net = build(spec, params, torch.device("cpu")).double()
    net.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in params.items()}, strict=False)
    return net


# --- gradients of the whole network: hand-written backward vs autograd (float64) ------------------

CASES = [("batch", "relu"), ("batch", "tanh"), ("batch", "sigmoid"), ("none", "relu"), ("none", "tanh"),
         ("none", "sigmoid")]


def autograd_and_numpy(spec: ModelSpec, p: dict[str, np.ndarray], x, y, w):
    """One training-mode forward and backward of the class-weighted cross-entropy in float64, twice: torch
    autograd (the net, its gradients in .grad) and the hand-written rules -> (net, NumpyTrainer, grads)."""
    net = torch_net(spec, p).train()
    loss_t = F.cross_entropy(net(torch.from_numpy(x)), torch.from_numpy(y), weight=torch.from_numpy(w).double(),
                             ignore_index=255)
    loss_t.backward()
    tr = NumpyTrainer(spec, p, optim=OptimConfig(), class_weights=w, dtype=np.float64)
    loss, grads = tr.loss_and_grads(x, y)
    assert abs(loss - loss_t.item()) <= 1e-12 * abs(loss_t.item())
    assert sorted(grads) == sorted(k for k, _ in net.named_parameters())
    return net, tr, grads


def assert_running_stats_equal(tr: NumpyTrainer, net, tol: float) -> None:
    """BN running statistics after the training-mode forward (momentum, unbiased variance) alike."""
    sd = net.state_dict()
    for k in tr.p:
        if "running" in k:
            assert rel_err(tr.p[k], sd[k].numpy()) < tol, k


@pytest.mark.parametrize("norm,act", CASES)
def test_network_gradients_equal_autograd(norm, act):
    spec = ModelSpec(in_channels=3, num_classes=3, width=4, depth=2, activation=act, norm=norm)
    p = random_params(spec, seed=3)
    net, tr, grads = autograd_and_numpy(spec, p, *batch(spec))
    errs = {k: rel_err(grads[k], prm.grad.numpy()) for k, prm in net.named_parameters()}
    worst = max(errs, key=errs.get)
    assert errs[worst] < 1e-6, f"{worst}: relative error {errs[worst]:.2e}"
    assert_running_stats_equal(tr, net, 1e-12)
    assert (norm == "batch") == any("running" in k for k in p)


@pytest.mark.parametrize("depth", [0, 1])
def test_forward_backward_free_everything(depth):
    """backward consumes the tape: every cache is released, one gradient per parameter; the
    caller's input is never overwritten (the in-place ReLU only touches the net's own tensors)."""
    spec = ModelSpec(in_channels=1, num_classes=2, width=2, depth=depth, norm="none")
    p = init_params(spec, 0, np.float64)
    x, _, _ = batch(spec, HW=8)
    x0 = x.copy()
    logits, tape = forward(spec.graph(), p, x, training=True)
    grads = backward(np.ones_like(logits), tape)
    assert tape.caches == {}
    assert set(grads) == {k for k in p if "running" not in k}
    np.testing.assert_array_equal(x, x0)
    # an eval-mode forward keeps no tape
    assert forward(spec.graph(), p, x, training=False, keep=False)[1] is None


# --- training steps: NumpyTrainer vs TorchTrainer (float32) ----------------------------------------

OPTIMS = [OptimConfig("sgd"), OptimConfig("momentum", weight_decay=1e-3), OptimConfig("adam", weight_decay=1e-3)]
LRS = {"sgd": 0.1, "momentum": 0.05, "adam": 1e-2}


@pytest.mark.parametrize("cfg", OPTIMS, ids=lambda c: c.name)
def test_trainer_steps_equal_torch(cfg):
    spec = ModelSpec(in_channels=3, num_classes=3, width=4, depth=2)
    p = random_params(spec, seed=5, dtype=np.float32)
    x, y, w = batch(spec, dtype=np.float32)
    lr = LRS[cfg.name]
    dice = 0.5 if cfg.name == "adam" else 0.0  # cross-entropy + soft Dice, as `cvtool train` trains by default
    nt = NumpyTrainer(spec, p, optim=cfg, class_weights=w, dice=dice)
    tt = TorchTrainer(spec, p, device="cpu", optim=cfg, class_weights=w, amp=False, dice=dice)  # float32, no bf16
    for _ in range(3):
        ln, lt = nt.step(x, y, lr), tt.step(x, y, lr)
        assert abs(ln - lt) <= 1e-5 * abs(lt)
    pn, pt = nt.params(), tt.params()
    assert list(pn) == list(pt)  # same names, same (state_dict) order
    for k in pt:
        assert pn[k].dtype == np.float32
        assert rel_err(pn[k], pt[k]) < 1e-4, k
    sn, stepn = nt.optim_state()
    st, stept = tt.optim_state()
    assert sorted(sn) == sorted(st) and stepn == stept
    assert len(sn) == {"sgd": 0, "momentum": 1, "adam": 2}[cfg.name] * len(nt.names)
    for k in st:
        assert rel_err(sn[k], st[k]) < 1e-3, k
    assert rel_err(nt.predict(x), tt.predict(x)) < 1e-4  # eval mode with the updated running stats


def test_resume_from_optim_state():
    """A trainer rebuilt from params() + optim_state() takes the same next step as the original."""
    spec = ModelSpec(in_channels=3, num_classes=3, width=4, depth=1)
    p = random_params(spec, seed=7, dtype=np.float32)
    x, y, w = batch(spec, dtype=np.float32)
    cfg = OptimConfig("adam")
    a = NumpyTrainer(spec, p, optim=cfg, class_weights=w)
    for _ in range(2):
        a.step(x, y, 1e-2)
    b = NumpyTrainer(spec, a.params(), optim=cfg, class_weights=w)
    b.load_optim_state(*a.optim_state())
    assert a.step(x, y, 1e-2) == b.step(x, y, 1e-2)
    for k, v in a.params().items():
        np.testing.assert_array_equal(b.params()[k], v, err_msg=k)
    assert b.optim_state()[1] == 3
    with pytest.raises(UsageError):
        b.load_optim_state({"exp_avg.nope.weight": np.zeros(1)}, 1)


# --- inference ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["batch", "none"])
def test_runner_equals_torch(norm):
    spec = ModelSpec(in_channels=3, num_classes=4, width=4, depth=2, norm=norm)
    p = random_params(spec, seed=11, dtype=np.float32)
    x, _, _ = batch(spec, N=3, HW=24, dtype=np.float32)
    out = NumpyRunner(spec, p)(x)
    ref = TorchRunner(spec, p, device="cpu")(x)
    assert out.dtype == np.float32 and rel_err(out, ref) < 1e-5
    # float64: the reference runner (cvtool export compares against it) agrees with torch in double
    x64 = x.astype(np.float64)
    p64 = {k: v.astype(np.float64) for k, v in p.items()}
    out64 = registry.get("numpy", "cpu").runner(spec, p64, dtype=np.float64)(x64)
    with torch.no_grad():
        ref64 = torch_net(spec, p64).eval()(torch.from_numpy(x64)).numpy()
    assert out64.dtype == np.float64 and rel_err(out64, ref64) < 1e-12


def test_backend_methods():
    be = registry.get("numpy", "cpu")
    spec = ModelSpec(in_channels=1, num_classes=2, width=2, depth=1)
    p = init_params(spec)
    tr = be.trainer(spec, p, optim=OptimConfig())
    assert isinstance(tr, NumpyTrainer) and isinstance(tr, Trainer)
    assert isinstance(be.runner(spec, p), Runner)
    with pytest.raises(UsageError, match="one process"):
        be.trainer(spec, p, optim=OptimConfig(), distributed=True)
    with pytest.raises(UsageError):
        be.init_distributed()
    be.finish_distributed()
    be.set_threads(2)
    with pytest.raises(UsageError):
        be.trainer(spec, p, optim=OptimConfig("rmsprop"))


# --- the product paths ---------------------------------------------------------------------------------

def test_numpy_backend_imports_no_torch():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import cvtool_backends as registry
        from cvtool.train.optim import OptimConfig
        from cvtool.model.spec import ModelSpec, init_params
        spec = ModelSpec(in_channels=1, num_classes=2, width=2, depth=1)
        tr = registry.get("numpy", "cpu").trainer(spec, init_params(spec), optim=OptimConfig())
        x = np.zeros((2, 1, 8, 8), np.float32); y = np.zeros((2, 8, 8), np.int64)
        for _ in range(2):
            tr.step(x, y, 1e-3)
        tr.predict(x)
        assert "torch" not in sys.modules, "torch was imported"
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_loss_falls():
    """30 Adam steps on one fixed batch: the net learns 'foreground = bright pixel' and the loss halves."""
    spec = ModelSpec(in_channels=1, num_classes=2, width=4, depth=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 1, 16, 16)).astype(np.float32)
    y = (x[:, 0] > 0.3).astype(np.int64)
    tr = NumpyTrainer(spec, init_params(spec, 0), optim=OptimConfig("adam"))
    losses = [tr.step(x, y, 1e-2) for _ in range(30)]
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses
    assert ((tr.predict(x).argmax(1) == y).mean()) > 0.9
