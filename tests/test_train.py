"""cvtool.train.loop.train in-process, on tiny configs (width 4, depth 1, 16x16, a handful of steps), on the
torch and numpy trainers: the loss falls, an interrupted and resumed run ends with the weights of an
uninterrupted one, the learning rate follows the schedule step by step, and the run's edge cases fail clearly.

Every config below is explicit, so that changing TrainConfig's defaults changes none of these tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FakeClock, load_backend  # tests/ is on sys.path under pytest

from cvtool.data.synth import SynthDataset
from cvtool.errors import UsageError
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.spec import trainable
from cvtool.train.config import TrainConfig
from cvtool.train.loop import train
from cvtool.train.validate import evaluate_images, softmax_ce

TINY = dict(epochs=2, batch_size=2, img_size=16, width=4, depth=1, norm="batch", activation="relu",
            synth_train=8, synth_val=2, synth_size=16, lr=1e-2, optimizer="adam", schedule="poly", warmup=0.1,
            weight_decay=0.0, class_balance=True, dice=1.0, seed=0, time_budget=None)


def tiny(**kw) -> TrainConfig:
    return TrainConfig(**{**TINY, **kw})


def maker(backend: str):
    be = load_backend(backend)
    return lambda spec, params, optim, weights, seed, dice: be.trainer(spec, params, optim=optim,
                                                                       class_weights=weights, seed=seed, dice=dice)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One thread: fast on a busy 2-core machine (no OpenMP spinning) and the same reductions every run."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def stop_after(k: int) -> dict:
    """on_event + should_stop for train(): stop as soon as k steps have been taken (polled after each step)."""
    seen = {"step": 0}

    def on_event(kind: str, d: dict) -> None:
        if kind == "step":
            seen["step"] = d["step"]

    return dict(on_event=on_event, should_stop=lambda: seen["step"] >= k)


def steps_taken(on_event_log: list) -> list[dict]:
    return [d for k, d in on_event_log if k == "step"]


def assert_same_params(a: dict, b: dict, atol: float = 0.0) -> None:
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=0, atol=atol, err_msg=k)


# --- learning ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_loss_falls(backend, tmp_path):
    """12 Adam steps on the same 4 images: the loss must fall clearly (1.45 -> 0.9 here)."""
    log = []
    cfg = tiny(epochs=12, batch_size=4, synth_train=4, synth_val=1, lr=2e-2, schedule="constant", warmup=0.0)
    r = train(cfg, maker(backend), tmp_path, on_event=lambda k, d: log.append((k, d)))
    losses = [d["loss"] for d in steps_taken(log)]
    assert len(losses) == 12 and r["status"] == "done" and r["steps"] == 12
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    cm = np.array(r["confusion"])
    assert len(r["iou"]) == 4 and r["final"]["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum())


def test_torch_cpu_training_is_deterministic_for_a_seed(tmp_path):
    a = train(tiny(epochs=1), maker("torch"), tmp_path / "a")
    b = train(tiny(epochs=1), maker("torch"), tmp_path / "b")
    c = train(tiny(epochs=1, seed=1), maker("torch"), tmp_path / "c")
    pa, pb, pc = (ckpt_io.load(Path(r["out"]) / "last.safetensors").params for r in (a, b, c))
    for k in pa:
        np.testing.assert_array_equal(pa[k], pb[k], err_msg=k)
    assert not np.array_equal(pa["enc0.conv1.weight"], pc["enc0.conv1.weight"])


# --- interrupt and resume ---------------------------------------------------------------------

@pytest.mark.parametrize("backend,optimizer,k", [
    ("torch", "adam", 3),  # mid-epoch (4 steps per epoch)
    ("torch", "momentum", 4),  # on the last step of epoch 1, before its validation
    ("numpy", "adam", 5),  # mid-epoch 2
    ("numpy", "sgd", 3),
])
def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(backend, optimizer, k, tmp_path):
    cfg = dict(optimizer=optimizer)
    make = maker(backend)
    log = []
    a = train(tiny(**cfg), make, tmp_path / "a", on_event=lambda kind, d: log.append((kind, d)))
    losses = [d["loss"] for d in steps_taken(log)]

    b = train(tiny(**cfg), make, tmp_path / "b", **stop_after(k))
    assert b["status"] == "interrupted" and b["step"] == k
    assert (b["epoch"], b["batch"]) == ((0, 4) if k == 4 else divmod(k, 4))  # 4 steps per epoch
    ck = ckpt_io.load(tmp_path / "b" / "last.safetensors")
    assert ck.train_state["run"]["step"] == k and ck.train_state["optim_step"] == (k if optimizer == "adam" else 0)
    slots = {"adam": ("exp_avg", "exp_avg_sq"), "momentum": ("momentum_buffer",), "sgd": ()}[optimizer]
    assert set(ck.optim_state) == {f"{s}.{n}" for s in slots for n in ck.params if trainable(n)}
    for key, v in ck.optim_state.items():
        assert v.shape == ck.params[key.partition(".")[2]].shape

    c = train(tiny(**cfg), make, tmp_path / "b", resume=ck)
    assert c["status"] == "done" and c["steps"] == a["steps"] == 8
    # bit-for-bit, as the README says: weights, optimiser slots and the record equal exactly (atol 0, ==)
    done_a, done_b = (ckpt_io.load(tmp_path / run / "last.safetensors") for run in ("a", "b"))
    assert_same_params(done_a.params, done_b.params)
    assert_same_params(dict(sorted(done_a.optim_state.items())), dict(sorted(done_b.optim_state.items())))
    # the record too: the loss of a resumed epoch counts the steps before the interruption
    ha, hb = (ck.train_state["run"]["history"] for ck in (done_a, done_b))
    assert len(ha) == len(hb) == 2
    assert [row["train_loss"] for row in ha] == pytest.approx([np.mean(losses[:4]), np.mean(losses[4:])], rel=1e-12)
    for ra, rb in zip(ha, hb):
        assert ra.keys() == rb.keys()
        for key in set(ra) - {"seconds", "val_seconds"}:
            assert ra[key] == rb[key], key


def test_a_checkpoint_resumes_on_the_other_backend(tmp_path, monkeypatch):
    """Interrupted on numpy, resumed on torch: ends within float32 noise of a run all on torch (in float32:
    bf16 autocast, which the torch trainer uses on CPUs with native bf16, would differ by ~1e-3)."""
    monkeypatch.setenv("CVTOOL_AMP", "0")
    a = train(tiny(), maker("torch"), tmp_path / "a")
    train(tiny(), maker("numpy"), tmp_path / "b", **stop_after(3))
    train(tiny(), maker("torch"), tmp_path / "b", resume=ckpt_io.load(tmp_path / "b" / "last.safetensors"))
    assert_same_params(ckpt_io.load(Path(a["out"]) / "last.safetensors").params,
                       ckpt_io.load(tmp_path / "b" / "last.safetensors").params, atol=1e-5)


def test_a_finished_run_cannot_resume_without_more_epochs(tmp_path):
    train(tiny(epochs=1), maker("numpy"), tmp_path)
    ck = ckpt_io.load(tmp_path / "last.safetensors")
    with pytest.raises(UsageError, match="finished its 1 epochs"):
        train(tiny(epochs=1), maker("numpy"), tmp_path, resume=ck)
    r = train(tiny(epochs=2), maker("numpy"), tmp_path, resume=ck)  # more epochs: it trains on
    assert r["epochs"] == 2 and r["steps"] == 8


def test_stop_before_the_first_step_still_leaves_a_resumable_checkpoint(tmp_path):
    r = train(tiny(), maker("numpy"), tmp_path, should_stop=lambda: True)
    assert r["status"] == "interrupted" and r["step"] == 0
    ck = ckpt_io.load(tmp_path / "last.safetensors")
    assert ck.train_state["run"]["step"] == 0
    assert train(tiny(), maker("numpy"), tmp_path, resume=ck)["steps"] == 8


# --- schedule in the loop, time budget ----------------------------------------------------------

def test_each_step_gets_the_learning_rate_of_its_place_in_the_run(tmp_path):
    """8 steps, warm-up 0.25 = 2 steps: step k runs at progress k/8."""
    log = []
    train(tiny(lr=1e-3, warmup=0.25, schedule="poly", optimizer="sgd"), maker("numpy"), tmp_path,
          on_event=lambda k, d: log.append((k, d)))
    lrs = np.array([d["lr"] for d in steps_taken(log)]) / 1e-3
    want = [0.5, 1.0] + [(1 - t) ** 0.9 for t in (1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6)] + [0.01]
    np.testing.assert_allclose(lrs, want, rtol=1e-12)


def test_a_seconds_budget_counts_everything_from_t0_and_ends_with_a_validation(tmp_path):
    """--epochs and --time together: the clock decides first. Everything counts from t0 (the process start), so a
    process that started 4 s earlier trains fewer steps; training stops early enough for the final validation."""
    steps = {}
    for before in (0.0, 4.0):
        clock = FakeClock(0.05)
        r = train(tiny(epochs=1000, time_budget=10.0), maker("numpy"), tmp_path / str(before), t0=clock() - before,
                  clock=clock)
        assert r["status"] == "time budget reached" and r["stop_reason"] == "time"
        assert r["validations"] >= 1 and r["final"]["step"] == r["steps"]  # the last step's weights validated
        assert r["seconds"] <= 10.0  # the validation and the save fit within the budget
        run = ckpt_io.load(tmp_path / str(before) / "last.safetensors").train_state["run"]
        assert run["step"] == r["steps"] and run["elapsed"] == pytest.approx(r["seconds"], abs=0.5)
        steps[before] = r["steps"]
    assert 0 < steps[4.0] < steps[0.0] * 0.8


def test_an_epoch_budget_stops_by_steps_whatever_the_clock(tmp_path):
    r = train(tiny(epochs=2), maker("numpy"), tmp_path, clock=FakeClock(100.0))
    assert r["status"] == "done" and r["stop_reason"] == "epochs" and r["steps"] == 8 and r["validations"] == 2


# --- clear failures ------------------------------------------------------------------------------

def test_an_empty_validation_set_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="validation set is empty"):
        train(tiny(synth_val=0), maker("numpy"), tmp_path)


@pytest.mark.parametrize("kw,words", [
    (dict(optimizer="foo"), "optimizer"), (dict(schedule="step"), "schedule"), (dict(img_size=18, depth=2), "divisible"),
    (dict(warmup=1.0), "warmup"), (dict(warmup=-0.1), "warmup"), (dict(lr=0.0), "lr"), (dict(epochs=0), "epochs"),
    (dict(val_split=1.0), "val-split"), (dict(weight_decay=-1.0), "weight-decay"), (dict(depth=7), "depth"),
    (dict(time_budget=-1.0), "time"),
])
def test_bad_config(kw, words, tmp_path):
    with pytest.raises(UsageError, match=words):
        train(tiny(**kw), maker("numpy"), tmp_path)
    assert not any(tmp_path.iterdir())  # nothing written


def test_batch_larger_than_the_training_set(tmp_path):
    with pytest.raises(UsageError, match="smaller than one batch"):
        train(tiny(batch_size=16), maker("numpy"), tmp_path)


# --- validation maths -----------------------------------------------------------------------------

def test_softmax_ce_by_hand():
    logits = np.zeros((1, 2, 1, 3))
    logits[0, 1, 0, 0] = math.log(3)  # p = (1/4, 3/4)
    y = np.array([[[1, 0, 255]]])  # pixel 1: p = (1/2, 1/2); pixel 2 ignored
    assert softmax_ce(logits, y) == pytest.approx((-math.log(3 / 4) + math.log(2)) / 2)
    assert math.isnan(softmax_ce(logits, np.full((1, 1, 3), 255)))


def test_validation_pads_to_the_multiple_crops_back_and_scores_every_labelled_pixel():
    """Uniform logits: loss ln K, every pixel predicted class 0; 18x18 images padded to 20 for depth 2."""
    from cvtool.data.memory import to_hwc_uint8
    from cvtool.model.spec import ModelSpec

    ds = SynthDataset(3, 18, seed=0)
    seen = []

    def predict(x):
        seen.append(x.shape)
        return np.zeros((x.shape[0], 4, *x.shape[2:]), np.float32)

    images = [to_hwc_uint8(ds[i].image) for i in range(3)]
    masks = [ds[i].mask for i in range(3)]
    spec = ModelSpec(in_channels=3, num_classes=4, width=4, depth=2)
    out = evaluate_images(predict, images, masks, spec, [0.0] * 3, [1.0] * 3, 1.0, 4, 255)
    assert seen == [(1, 3, 20, 20)] * 3  # each image whole, as segment runs it
    assert out["loss"] == pytest.approx(math.log(4))
    m = np.stack(masks)
    labelled = m != 255
    assert out["pixel_accuracy"] == pytest.approx((m[labelled] == 0).mean())
    cm = np.array(out["confusion"])
    assert cm[:, 1:].sum() == 0 and cm[:, 0].tolist() == np.bincount(m[labelled], minlength=4).tolist()
    assert evaluate_images(predict, images, masks, spec, [0.0] * 3, [1.0] * 3, 1.0, 4, 255,
                           should_stop=lambda: True) is None  # Ctrl-C between two images stops the validation


def test_dice_is_on_by_default_but_not_for_runs_saved_without_it():
    assert TrainConfig().dice == 1.0
    assert TrainConfig.from_dict({"epochs": 2}).dice == 0.0  # a checkpoint from before the Dice term: its own loss
    assert TrainConfig.from_dict({"epochs": 2, "dice": 0.5}).dice == 0.5
