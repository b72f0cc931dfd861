"""cvtool.model.checkpoint: safetensors + JSON metadata. Round trips, clear DataErrors for bad files, atomic writes,
and one checkpoint giving the same logits on every backend's runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import load_backend  # tests/ is on sys.path under pytest
from safetensors.numpy import save_file
from test_train import maker, one_torch_thread, tiny  # noqa: F401  (one_torch_thread: autouse here too)

from cvtool.errors import DataError, WriteError
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.meta import ModelMeta
from cvtool.model.spec import ModelSpec, init_params
from cvtool.train.loop import train


def make_ckpt(**kw) -> ckpt_io.Checkpoint:
    spec = ModelSpec(in_channels=3, num_classes=3, width=4, depth=1)
    params = init_params(spec, 3)
    rng = np.random.default_rng(0)
    optim = {f"{slot}.{k}": rng.standard_normal(v.shape).astype(np.float32)
             for k, v in params.items() if not k.endswith(("running_mean", "running_var")) for slot in ("exp_avg", "exp_avg_sq")}
    state = {"run": {"epoch": 2, "batch": 3, "step": 11, "elapsed": 1.5, "best_miou": 0.25, "history": [{"epoch": 1}],
                     "loss_sum": 2.5},
             "config": {"epochs": 4, "lr": 0.01, "optimizer": "adam", "seed": 5}, "optim_step": 11,
             "class_weights": [0.5, 1.0, 2.0], "rng": {"bit_generator": "PCG64", "state": 2**100 + 7}}
    meta = ModelMeta(["bg", "cat", "dog"], [[0, 0, 0], [128, 0, 0], [0, 128, 0]], [0.5, 0.25, 0.125], [0.2, 0.3, 0.4])
    base = dict(spec=spec, params=params, meta=meta, train_state=state, optim_state=optim)
    return ckpt_io.Checkpoint(**{**base, **kw})


def test_round_trip_keeps_everything(tmp_path):
    ck = make_ckpt()
    path = ckpt_io.save(ck, tmp_path / "m.safetensors")
    back = ckpt_io.load(path)
    assert back.spec == ck.spec and back.path == path
    assert back.meta == ck.meta  # classes, colours, normalisation, preprocessing
    assert back.train_state == ck.train_state  # run state, config, optimiser step, RNG state (a 101-bit int)
    for a, b in ((ck.params, back.params), (ck.optim_state, back.optim_state)):
        assert set(a) == set(b)
        for k in a:
            assert b[k].dtype == np.float32
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    meta = ckpt_io.read_meta(path)
    assert meta["format"] == "cvtool-checkpoint/1" and meta["spec"] == ck.spec.to_dict()
    assert not (set(tmp_path.iterdir()) - {path})  # no temp file left beside it


def test_a_file_other_tools_can_read(tmp_path):
    """Plain safetensors: parameters by torch name, optimiser slots under optim., metadata one JSON string."""
    from safetensors import safe_open

    path = ckpt_io.save(make_ckpt(), tmp_path / "m.safetensors")
    with safe_open(str(path), framework="numpy") as f:
        keys = set(f.keys())
        meta = f.metadata()
    assert "enc0.conv1.weight" in keys and "optim.exp_avg.enc0.conv1.weight" in keys
    assert json.loads(meta["cvtool"])["classes"] == ["bg", "cat", "dog"]


# --- bad files: one clear DataError ------------------------------------------------------------

def saved(tmp_path) -> Path:
    return ckpt_io.save(make_ckpt(), tmp_path / "good.safetensors")


@pytest.mark.parametrize("case,words", [
    ("missing", "does not exist"),
    ("folder", "is a folder"),
    ("garbage", "not a readable safetensors"),
    ("empty", "not a readable safetensors"),
    ("truncated", "not a readable safetensors"),
    ("foreign", "not a cvtool checkpoint"),
    ("bad json", "metadata is corrupt"),
    ("other format", "format"),
    ("no spec", "spec"),
    ("bad spec", "activation"),
    ("wrong shape", "enc0.conv1.weight"),
    ("missing param", "missing"),
])
def test_bad_checkpoints_raise_one_clear_data_error(tmp_path, case, words):
    p = tmp_path / "x.safetensors"
    good = saved(tmp_path)
    meta = ckpt_io.read_meta(good)
    tensors = dict(make_ckpt().params)
    if case == "missing":
        p = tmp_path / "nope.safetensors"
    elif case == "folder":
        p = tmp_path
    elif case == "garbage":
        p.write_bytes(b"\x00\x01 not a safetensors file at all" * 10)
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "truncated":
        p.write_bytes(good.read_bytes()[:-100])
    elif case == "foreign":
        save_file(tensors, str(p))  # a safetensors file without our metadata
    elif case == "bad json":
        save_file(tensors, str(p), metadata={"cvtool": "{not json"})
    elif case == "other format":
        save_file(tensors, str(p), metadata={"cvtool": json.dumps({**meta, "format": "someone-else/3"})})
    elif case == "no spec":
        save_file(tensors, str(p), metadata={"cvtool": json.dumps({k: v for k, v in meta.items() if k != "spec"})})
    elif case == "bad spec":
        save_file(tensors, str(p), metadata={"cvtool": json.dumps({**meta, "spec": {**meta["spec"], "activation": "gelu"}})})
    elif case == "wrong shape":
        save_file({**tensors, "enc0.conv1.weight": np.zeros((4, 3, 5, 5), np.float32)}, str(p),
                  metadata={"cvtool": json.dumps(meta)})
    elif case == "missing param":
        save_file({k: v for k, v in tensors.items() if k != "head.bias"}, str(p), metadata={"cvtool": json.dumps(meta)})
    with pytest.raises(DataError) as e:
        ckpt_io.load(p)
    msg = str(e.value)
    assert words in msg and "\n" not in msg


def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import safetensors.numpy

    target = tmp_path / "last.safetensors"
    old = ckpt_io.save(make_ckpt(), target).read_bytes()

    def half_then_fail(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", half_then_fail)
    with pytest.raises(WriteError, match=f"cannot write {target}: disk full"):  # one line naming it, exit 2
        ckpt_io.save(make_ckpt(meta=ModelMeta(["a"] * 3, [[0, 0, 0]] * 3, [0.0] * 3, [1.0] * 3)), target)
    with pytest.raises(WriteError):
        ckpt_io.save(make_ckpt(), tmp_path / "new.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.safetensors"]  # no temp files, no new.safetensors
    assert target.read_bytes() == old  # the previous checkpoint is intact
    monkeypatch.undo()
    assert ckpt_io.load(target).meta.mean == [0.5, 0.25, 0.125]


# --- one checkpoint, every runner ---------------------------------------------------------------

@pytest.mark.parametrize("trained_on", ["torch", "numpy"])
def test_a_trained_checkpoint_gives_the_same_logits_on_every_runner(trained_on, tmp_path):
    train(tiny(epochs=1), maker(trained_on), tmp_path)
    ck = ckpt_io.load(tmp_path / "best.safetensors")
    x = np.random.default_rng(1).standard_normal((2, ck.spec.in_channels, 16, 24)).astype(np.float32)
    ref = load_backend("numpy").runner(ck.spec, ck.params, dtype=np.float64)(x.astype(np.float64))
    assert ref.shape == (2, ck.spec.num_classes, 16, 24)
    for name in ("numpy", "torch", "ort"):
        got = load_backend(name).runner(ck.spec, ck.params)(x)
        err = np.abs(got - ref).max() / np.abs(ref).max()
        assert err < 1e-4, f"{name}: relative error {err:.2e}"
