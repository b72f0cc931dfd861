"""Every built-in backend, and a plug-in registered through the entry-point lookup, against the contract that
backends/base.py declares: the operations, the abilities (Runs, Trains, Gradients: present exactly when the
capabilities say so), the optional hooks (when present, with the declared signature), and the networks a
backend builds (Runner, Trainer and the trainers' hooks). A backend whose framework is missing is skipped.

Compatible signature: every call the declaration allows works on the implementation: the same names in
the same positions, keyword-only parameters accepted by name, a default wherever the declaration has one,
and any extra parameter of the implementation optional.
"""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint
from inspect import Parameter

import numpy as np
import pytest

import cvtool_backends as registry
from cvtool.errors import CvtoolError
from cvtool.model.spec import ModelSpec, init_params
from cvtool.train.optim import OptimConfig
from cvtool_backends import base

POSITIONAL = (Parameter.POSITIONAL_ONLY, Parameter.POSITIONAL_OR_KEYWORD)
BACKEND_HOOKS = ("gemm", "peak_memory", "set_threads", "load_onnx", "free_memory", "precision_runner")
TRAINER_HOOKS = ("max_over_ranks", "sync_buffers")
assert set(BACKEND_HOOKS + TRAINER_HOOKS) == set(base.HOOKS)  # a new hook is checked here too


def methods(proto) -> list[str]:
    """The methods a Protocol declares (not its data members, not typing's own)."""
    return [n for n, v in vars(proto).items() if (not n.startswith("_") or n == "__call__")
            and (inspect.isfunction(v) or isinstance(v, classmethod))]


def params_of(owner, name: str) -> list[Parameter]:
    """The parameters a caller passes to owner.name: without self (on a class too) or cls."""
    sig = list(inspect.signature(getattr(owner, name)).parameters.values())
    unbound = inspect.isclass(owner) and inspect.isfunction(inspect.getattr_static(owner, name))
    return sig[1:] if unbound else sig


def mismatches(declared: list[Parameter], impl: list[Parameter]) -> list[str]:
    """Why a call the declaration allows could fail on the implementation ([] when none can)."""
    found = {p.name: p for p in impl}
    kinds = {p.kind for p in impl}
    any_pos, any_kw = Parameter.VAR_POSITIONAL in kinds, Parameter.VAR_KEYWORD in kinds
    pos = [p.name for p in impl if p.kind in POSITIONAL]
    out, used = [], set()
    for i, d in enumerate(q for q in declared if q.kind in POSITIONAL):
        if i < len(pos) and pos[i] == d.name:
            if d.default is not Parameter.empty and found[d.name].default is Parameter.empty:
                out.append(f"{d.name!r} needs a default")
        elif not (i >= len(pos) and any_pos and (any_kw or d.kind == Parameter.POSITIONAL_ONLY)):
            out.append(f"parameter {i + 1} must be {d.name!r}")  # *args and **kwargs take it, by place or name
        used.add(d.name)
    for d in (q for q in declared if q.kind == Parameter.KEYWORD_ONLY):
        p = found.get(d.name)
        if p is None or p.kind not in (Parameter.KEYWORD_ONLY, Parameter.POSITIONAL_OR_KEYWORD):
            if not any_kw:
                out.append(f"keyword {d.name!r} missing")
        elif d.default is not Parameter.empty and p.default is Parameter.empty:
            out.append(f"{d.name!r} needs a default")
        used.add(d.name)
    for var, has in ((Parameter.VAR_POSITIONAL, any_pos), (Parameter.VAR_KEYWORD, any_kw)):
        if any(d.kind == var for d in declared) and not has:
            out.append(f"needs {'*args' if var == Parameter.VAR_POSITIONAL else '**kwargs'}")
    out += [f"extra parameter {p.name!r} needs a default" for p in impl
            if p.name not in used and p.kind not in (Parameter.VAR_POSITIONAL, Parameter.VAR_KEYWORD)
            and p.default is Parameter.empty]
    return out


def check(owner, proto, names=None) -> list[str]:
    """Problems of owner (a class or an object) against proto's methods, or only `names` of them."""
    out = []
    for n in names or methods(proto):
        if not callable(getattr(owner, n, None)):
            out.append(f"{n}: missing")
        else:
            out += [f"{n}: {m}" for m in mismatches(params_of(proto, n), params_of(owner, n))]
    return out


def present(owner, hooks) -> list[str]:
    return [h for h in hooks if callable(getattr(owner, h, None))]


# --- a plug-in, found the way plug-ins are: an entry point of the group cvtool.backends --------------------

def _forward(op: str):
    """A plug-in's operation that hands its arguments to the reference backend."""
    def run(self, x, *args, **kwargs):
        return getattr(registry.get(registry.REFERENCE), op)(x, *args, **kwargs)
    return run


class Plugin:
    """A third-party backend as small as the contract allows: its operations forwarded to the reference, no
    networks (and says so), one optional hook."""

    name = "tiny"
    capabilities = base.Capabilities(extra={"networks": False, "cpu_only": True})

    def __init__(self, device: str = "cpu"):
        self.device, self.threads = "cpu", 1

    @classmethod
    def status(cls) -> base.Status:
        return base.Status(name=cls.name, available=True, version="0.1", devices=("cpu",))

    conv2d, conv_transpose2d, max_pool2d, avg_pool2d = map(_forward, base.OPS[:4])
    relu, sigmoid, tanh = map(_forward, base.OPS[4:])

    def set_threads(self, n: int) -> None:
        self.threads = n


@pytest.fixture(autouse=True)
def plugin(monkeypatch):
    ep = EntryPoint(name="tiny", value=f"{__name__}:Plugin", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "_plugins", lambda: {"tiny": ep})


NAMES = [*registry.BUILTIN, "tiny"]


def backend_class(name: str):
    try:
        return registry.backend_class(name)
    except ImportError as e:
        pytest.skip(f"backend {name!r}: its framework is missing ({e})")


# --- the classes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_backend_class_meets_the_contract(name):
    cls = backend_class(name)
    caps = cls.capabilities
    assert cls.name == name and isinstance(caps, base.Capabilities)
    assert check(cls, base.Backend) == []
    assert (check(cls, base.Trains) == []) == caps.train == bool(present(cls, ["trainer"]))
    assert (check(cls, base.Gradients) == []) == caps.backward == bool(present(cls, ["gradients"]))
    if present(cls, ["runner"]):
        assert caps.extra.get("networks", True) and check(cls, base.Runs) == []
    for h in present(cls, BACKEND_HOOKS):
        assert check(cls, base.HOOKS[h]) == [], h
    declared = {n for p in (base.Backend, base.Runs, base.Trains, base.Gradients) for n in methods(p)}
    public = {n for n, v in vars(cls).items() if not n.startswith("_") and (callable(v) or isinstance(v, classmethod))}
    assert public <= declared | set(BACKEND_HOOKS)  # a method the contract does not name is a hook no one finds


@pytest.mark.parametrize("name", NAMES)
def test_networks_meet_the_contract(name):
    cls = backend_class(name)
    if not cls.status().available:
        pytest.skip(f"backend {name!r} is not available: {cls.status().reason}")
    be = registry.get(name, "cpu")
    assert isinstance(be, base.Backend)
    spec = ModelSpec(in_channels=1, num_classes=2, width=2, depth=1)
    params = init_params(spec, 0)
    x = np.zeros((1, 1, 4, 4), np.float32)
    if isinstance(be, base.Runs):
        run = be.runner(spec, params)
        assert isinstance(run, base.Runner) and check(run, base.Runner) == []
        assert run(x).shape == (1, 2, 4, 4)
        if isinstance(run, base.RunnerInfo):
            assert all(isinstance(p, str) for p in run.providers) and isinstance(run.threads, int)
    if isinstance(be, base.Trains):
        tr = be.trainer(spec, params, optim=OptimConfig(), class_weights=None, seed=0)
        assert isinstance(tr, base.Trainer) and check(tr, base.Trainer) == []
        for h in present(tr, TRAINER_HOOKS):
            assert check(tr, base.HOOKS[h]) == [], h
        assert tr.predict(x).shape == (1, 2, 4, 4)


# --- the checker and the helper ----------------------------------------------------------------------------

def test_a_wrong_signature_is_caught():
    class Bad:
        def conv2d(self, x, weight, b=None, *, stride=1, padding=0, dilation=1):  # w renamed, no groups
            ...

        def set_threads(self, n, m):  # one more required parameter than declared
            ...

        def gemm(self, *args, **kwargs):  # takes anything
            ...

    assert check(Bad, base.Backend, ["conv2d"]) == [
        "conv2d: parameter 2 must be 'w'", "conv2d: keyword 'groups' missing", "conv2d: extra parameter 'weight' needs a default"]
    assert check(Bad, base.SetThreads) == ["set_threads: extra parameter 'm' needs a default"]
    assert check(Bad, base.Gemm) == [] and check(Bad, base.PeakMemory) == ["peak_memory: missing"]


def test_hook_returns_the_bound_method_or_none_and_refuses_undeclared_names():
    be = Plugin()
    assert base.hook(be, "set_threads") == be.set_threads and base.hook(be, "gemm") is None
    with pytest.raises(CvtoolError, match="not an optional hook") as e:
        base.hook(be, "set_thread")
    assert "set_threads" in e.value.hint
