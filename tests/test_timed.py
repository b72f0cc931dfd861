"""Training on one's own data with only --data: the run is planned, stops by elapsed time with validation
counted, saves its plan, resumes, and its models segment (and export) at the scale they were trained at."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeClock, cli  # tests/ is on sys.path under pytest
from PIL import Image

import cvtool_backends as registry
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.inference import segment_logits
from cvtool.model.meta import ModelMeta
from cvtool.model.spec import ModelSpec, init_params
from cvtool.train.config import TrainConfig
from cvtool.train.loop import STOP_SIGNAL, STOP_TIME, train


def train_timed(cfg, make_trainer, out_dir, **kw):
    return train(cfg, make_trainer, out_dir, planned_run=True, **kw)


def make_set(root: Path, n: int = 6, hw=(40, 56), seed: int = 0) -> Path:
    """n grayscale images with a bright disc (class 1) on a noisy background; masks 0/1 as PNG."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    H, W = hw
    yy, xx = np.mgrid[:H, :W]
    for i in range(n):
        cy, cx, r = rng.integers(10, H - 10), rng.integers(10, W - 10), rng.integers(5, 9)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        img = np.clip(60 + 120 * m + rng.normal(0, 15, (H, W)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"im{i}.png")
        Image.fromarray(m).save(root / "masks" / f"im{i}.png")
    return root


def trainer_factory(name="torch"):
    be = registry.get(name, "cpu")
    return lambda spec, params, optim, weights, sd, dice: be.trainer(spec, params, optim=optim, class_weights=weights,
                                                                     seed=sd, dice=dice)


@pytest.fixture(scope="module")
def timed_run(tmp_path_factory):

    tmp = tmp_path_factory.mktemp("timed")
    data = make_set(tmp / "data")
    cfg = TrainConfig(data=str(data), time_budget=20.0)
    events = []
    small = {"crop": 32, "batch_size": 4, "width": 8}  # cheap steps; the clock is the test's: ~30 steps in 20 s
    res = train_timed(cfg, trainer_factory(), tmp / "run", **FakeClock(0.2).start(), cache_dir=tmp / "cache",
                      overrides=small, on_event=lambda k, d: events.append((k, d)))
    return tmp, res, events


def test_a_time_driven_run_stops_by_time_and_counts_validation(timed_run):
    tmp, res, events = timed_run
    assert res["status"] == STOP_TIME and res["stop_reason"] == "time"
    assert res["validations"] >= 1 and res["steps"] > 0
    # the budget counts validation: the clock passed training and validation both
    assert res["seconds"] >= res["train_seconds"] + res["val_seconds"]
    assert res["val_seconds"] > 0
    assert 0 <= res["data_wait_share"] <= 1
    assert [k for k, _ in events if k == "epoch"] == ["epoch"] * res["validations"]
    kinds = [k for k, _ in events]
    assert kinds.index("fingerprint") < kinds.index("plan") < kinds.index("start")
    # each validation is announced just before it runs (the bar says so meanwhile), with its images and seconds
    assert [kinds[i - 1] for i, k in enumerate(kinds) if k == "epoch"] == ["validating"] * res["validations"]
    announced = [d for k, d in events if k == "validating"]
    assert all(d["images"] > 0 and d["expected_s"] > 0 for d in announced)


def test_a_time_driven_run_saves_its_plan_and_fingerprint(timed_run):
    tmp, res, _ = timed_run
    doc = json.loads((tmp / "run" / "plan.json").read_text())
    assert doc["plan"] == res["plan"] and doc["fingerprint"]["n_train"] + doc["fingerprint"]["n_val"] == 6
    ck = ckpt_io.load(tmp / "run" / "best.safetensors")
    assert ck.train_state["plan"]["crop"] == res["plan"]["crop"]
    assert ck.meta.scale == res["plan"]["scale"]
    rows = (tmp / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + res["validations"]
    import csv

    best = max(float(r["mean_iou"]) for r in csv.DictReader(rows))
    assert res["best_mean_iou"] == pytest.approx(best)


def test_a_time_driven_run_keeps_a_loss_curve_between_its_few_validations(timed_run):
    from PIL import Image

    tmp, res, events = timed_run
    rows = (tmp / "run" / "train_loss.csv").read_text().split()
    assert rows[0] == "step,seconds,loss"
    trace = [[float(v) for v in r.split(",")] for r in rows[1:]]
    steps = [t[0] for t in trace]
    assert len(trace) >= min(res["steps"], 10) > res["validations"]  # far more points than validations
    assert all(a < b for a, b in zip(steps, steps[1:])) and steps[-1] <= res["steps"]
    assert all(a[1] <= b[1] for a, b in zip(trace, trace[1:]))  # seconds go forward
    # each point is the mean loss of the steps since the previous point, as the step events reported them
    losses = [d["loss"] for k, d in events if k == "step"]
    a, b = int(steps[0]), int(steps[1])
    assert trace[1][2] == pytest.approx(np.mean(losses[a:b]), rel=1e-9)
    ck = ckpt_io.load(tmp / "run" / "last.safetensors")
    assert [t[0] for t in ck.train_state["run"]["trace"]] == steps  # saved with the run: a resume continues it
    with Image.open(tmp / "run" / "curves.png") as im:
        assert im.size[0] > 600


def test_curves_plot_the_trace_and_every_validation(tmp_path, monkeypatch):
    """What curves.png draws, caught on its way to matplotlib: the loss trace at its steps, the validation loss,
    mIoU and per-class IoU at the validations' steps (a picture's pixels could not say this)."""
    from cvtool.train.records import write_curves

    drawn = {}
    monkeypatch.setattr("cvtool.plot.line_chart", lambda path, xs, *panels, **kw: drawn.update(xs=xs, panels=panels,
                                                                                                kw=kw))
    trace = [[2, 1.0, 0.9], [4, 2.0, 0.7], [6, 3.0, 0.5]]
    history = [{"step": 3, "val_loss": 0.8, "mean_iou": 0.4, "pixel_accuracy": 0.7, "iou_a": 0.3, "iou_b": 0.5},
               {"step": 6, "val_loss": 0.6, "mean_iou": 0.6, "pixel_accuracy": 0.8, "iou_a": 0.5, "iou_b": 0.7}]
    write_curves(tmp_path, history, trace)
    losses, val, per_class = drawn["panels"]
    assert drawn["xs"] == [3, 6] and losses == {"train loss": ([2, 4, 6], [0.9, 0.7, 0.5]), "val loss": ([3, 6], [0.8, 0.6])}
    assert val == {"val mIoU": [0.4, 0.6], "pixel acc": [0.7, 0.8]} and per_class == {"a": [0.3, 0.5], "b": [0.5, 0.7]}


def test_the_loss_trace_stays_bounded_and_keeps_its_mean():
    from cvtool.train.records import TRACE_POINTS, trace_add

    trace = []
    for k in range(1, 10_001):
        trace_add(trace, k, k / 10, float(k % 2))  # losses alternate 0, 1
        assert len(trace) <= 2 * TRACE_POINTS
    assert len(trace) >= TRACE_POINTS and trace[-1][0] == 10_000
    assert all(a[0] < b[0] for a, b in zip(trace, trace[1:]))
    assert np.mean([t[2] for t in trace]) == pytest.approx(0.5, abs=0.01)


def test_six_pairs_are_enough(timed_run):
    _, res, _ = timed_run  # 5 train / 1 val: today's epoch rule refused this ("smaller than one batch")
    assert res["fingerprint"]["n_train"] == 5 and res["plan"]["batch_size"] >= 2


def test_interrupted_timed_run_resumes_on_its_plan_and_a_new_time_is_used_or_refused(tmp_path):
    from cvtool.errors import UsageError

    data = make_set(tmp_path / "data", seed=1)
    cfg = TrainConfig(data=str(data), time_budget=15.0)
    small = {"crop": 32, "batch_size": 4, "width": 8}
    count = {"n": 0}

    def stop_after_three():
        count["n"] += 1
        return count["n"] > 3

    res = train_timed(cfg, trainer_factory(), tmp_path / "run", **FakeClock(0.25).start(), should_stop=stop_after_three,
                      overrides=small)
    assert res["status"] == STOP_SIGNAL and res["step"] == 3
    ck = ckpt_io.load(tmp_path / "run" / "last.safetensors")
    assert ck.train_state["run"]["step"] == 3 and ck.optim_state
    res2 = train_timed(TrainConfig(data=str(data), time_budget=15.0), trainer_factory(), tmp_path / "run",
                       **FakeClock(0.25).start(), resume=ck)
    # within the budget, but for one step and the few reads after it of this coarse test clock (0.25 s a read)
    assert res2["status"] == STOP_TIME and res2["steps"] > 3 and res2["seconds"] <= 15.0 + 8 * 0.25
    replanned = ("val_s", "val_at", "val_fraction", "steps", "reasons")  # what the first validation may replan
    assert {k: v for k, v in res2["plan"].items() if k not in replanned} == \
        {k: v for k, v in ck.train_state["plan"].items() if k not in replanned}  # the same plan, not a new one
    done = ckpt_io.load(tmp_path / "run" / "last.safetensors")
    with pytest.raises(UsageError, match="has used .* of its 15 s budget"):  # the same --time: nothing left
        train_timed(TrainConfig(data=str(data), time_budget=15.0), trainer_factory(), tmp_path / "run",
                    **FakeClock(0.25).start(), resume=done)
    notes = []
    res3 = train_timed(TrainConfig(data=str(data), time_budget=30.0), trainer_factory(), tmp_path / "run",
                       **FakeClock(0.25).start(), resume=done, on_event=lambda k, d: notes.append(d) if k == "note" else 0)
    assert res3["plan"]["budget"] == 30.0 and res3["steps"] > res2["steps"] and 15.0 < res3["seconds"] <= 30.0 + 8 * 0.25
    assert any("30 s" in n["text"] and "was 15 s" in n["text"] for n in notes)  # the new budget is said, and used


def test_a_final_validation_that_would_overrun_the_share_runs_on_fewer_images(tmp_path, monkeypatch):
    """msrc_v2 at 300 s: two validations planned to fill the 10% share, the first ~1.3x its estimate (inside the
    replan's slack): the final one alone would overrun the share. The replan then scales val_fraction down; the rest
    validate an evenly spaced subset of the images validated so far, and the best so far is scored on that subset."""
    import cvtool.train.plan_budget as pb
    from cvtool.train.prepare import val_subset

    real = pb.replan_after_validation

    def share_nearly_spent(p, measured_s, *, spent_val_s, **kw):  # as if half a validation were left of the share
        q = real(p, measured_s, spent_val_s=pb.VAL_SHARE * p.budget - measured_s / 2, **kw)
        calls.append((p.val_fraction, q))
        return q

    calls: list = []
    monkeypatch.setattr(pb, "replan_after_validation", share_nearly_spent)
    data = make_set(tmp_path / "data", n=12, seed=2)
    events: list = []
    res = train_timed(TrainConfig(data=str(data), time_budget=40.0, val_split=0.5), trainer_factory(),
                      tmp_path / "run", **FakeClock(0.2).start(), cache_dir=tmp_path / "cache",
                      overrides={"crop": 32, "batch_size": 4, "width": 8}, on_event=lambda k, d: events.append((k, d)))
    (before, q), = calls
    assert q is not None and q.val_fraction == pytest.approx(before / 2)
    shown = [d["images"] for k, d in events if k == "validating"]
    assert len(shown) >= 2 and shown[0] == len(val_subset(6, before)) >= 2  # the fake clock's estimate: some of 6
    assert set(shown[1:]) == {len(val_subset(shown[0], q.val_fraction / before))} and shown[1] < shown[0]
    assert json.loads((tmp_path / "run" / "plan.json").read_text())["plan"]["val_fraction"] == q.val_fraction
    assert any(f"validate {shown[1]} of them" in d["text"] for k, d in events if k == "note")
    rows = [d for k, d in events if k == "epoch"]
    later = max(r["mean_iou"] for r in rows[1:])
    # the best is a later validation's mIoU, or the first one's on the 3 images (which then stays the best checkpoint)
    ck = ckpt_io.load(tmp_path / "run" / "best.safetensors")
    if res["best_mean_iou"] != later:
        assert res["best_mean_iou"] > later and ck.train_state["run"]["step"] == rows[0]["step"]


def test_cli_plan_prints_and_exits(tmp_path, monkeypatch, capsys):
    data = make_set(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "train", "--data", str(data), "--plan", "--img-size", "64", "--time", "60")
    assert code == 0, err
    assert "Plan for a 60 s budget" in out and "set by you" in out
    assert "Fingerprint" in err  # the fingerprint table goes to stderr, the plan to stdout
    assert not (tmp_path / "runs" / "train").exists()  # nothing trained, no run folder
    code, out, err = cli(capsys, "train", "--data", str(data), "--plan", "--json")
    doc = json.loads(out)
    assert doc["status"] == "plan" and doc["plan"]["budget"] == 300 and doc["plan"]["steps"] > 0
    assert doc["fingerprint"]["channels"] == 1 and doc["fingerprint"]["cached"]  # the first call cached it


def test_cli_refuses_a_bad_augment_and_plan_without_data(tmp_path, capsys):
    code, out, err = cli(capsys, "train", "--data", str(tmp_path), "--augment", "wild")
    assert code == 2 and "unknown --augment" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(capsys, "train", "--plan")
    assert code == 2 and "--plan needs --data" in err
    code, out, err = cli(capsys, "train", "--data", str(tmp_path), "--scale", "0")
    assert code == 2 and "--scale" in err


@pytest.mark.slow
def test_numpy_backend_plans_and_trains_by_time_without_torch(tmp_path):
    data = make_set(tmp_path / "data", seed=2)
    code = ("import sys, json; from cvtool.cli import main; sys.argv = ['cvtool', 'train', '--data', sys.argv[1], "
            "'--time', '30', '--backend', 'numpy', '--json', '--out', sys.argv[2]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)")
    p = subprocess.run([sys.executable, "-c", code, str(data), str(tmp_path / "run")], capture_output=True, text=True,
                       cwd=tmp_path, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(p.stdout)
    assert doc["status"] == STOP_TIME and doc["config"]["backend"] == "numpy" and doc["steps"] > 0
    assert doc["plan"]["step_s"] > 0  # measured on the NumPy trainer itself
    assert p.stderr.strip().endswith("NO-TORCH")


def _scaled_checkpoint(tmp_path, scale, tta="flip"):
    spec = ModelSpec(in_channels=1, num_classes=3, width=4, depth=2)
    meta = ModelMeta(["a", "b", "c"], [[0, 0, 0], [255, 0, 0], [0, 255, 0]], [0.5], [0.25], scale=scale, tta=tta)
    ck = ckpt_io.Checkpoint(spec, init_params(spec, 3), meta)
    return ckpt_io.save(ck, tmp_path / "m.safetensors"), spec, ck


def test_segment_runs_a_model_at_its_scale(tmp_path, capsys):
    path, spec, ck = _scaled_checkpoint(tmp_path, 0.5)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 50), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "x.png")
    code, out, err = cli(capsys, "segment", str(tmp_path / "x.png"), "--model", str(path), "--backend", "numpy",
                         "--out", str(tmp_path / "seg"), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["scale"] == 0.5 and doc["tta"] == "flip" and doc["images"][0]["size"] == [37, 50]
    got = np.asarray(Image.open(doc["images"][0]["mask"]))
    run = registry.get("numpy", "cpu").runner(spec, ck.params)
    want = segment_logits(run, img, spec, ck.meta.mean, ck.meta.std, scale=0.5, tta="flip").argmax(0)
    assert got.shape == (37, 50) and np.array_equal(got, want)
    plain = segment_logits(run, img, spec, ck.meta.mean, ck.meta.std, scale=0.5).argmax(0)
    assert not np.array_equal(plain, want)  # the mirror pass is really averaged in
    # an export carries the scale, and ONNX Runtime segments the same
    code, out, err = cli(capsys, "export", str(path), "-o", str(tmp_path / "m.onnx"))
    assert code == 0, err
    code, out, err = cli(capsys, "segment", str(tmp_path / "x.png"), "--model", str(tmp_path / "m.onnx"), "--backend",
                         "ort", "--out", str(tmp_path / "seg2"), "--json")
    assert code == 0, err
    doc2 = json.loads(out)
    assert doc2["scale"] == 0.5 and doc2["tta"] == "flip"
    got2 = np.asarray(Image.open(doc2["images"][0]["mask"]))
    assert (got2 == want).mean() >= 0.999


def test_segment_logits_at_scale_one_is_the_plain_prediction():
    spec = ModelSpec(in_channels=1, num_classes=2, width=4, depth=2)
    run = registry.get("numpy", "cpu").runner(spec, init_params(spec, 0))
    img = np.random.default_rng(1).integers(0, 256, (16, 24), dtype=np.uint8)
    x = ((img / 255.0 - 0.5) / 0.25).astype(np.float32)[None, None]
    assert np.allclose(segment_logits(run, img, spec, [0.5], [0.25]), run(x)[0], atol=1e-5)


def test_one_all_reduce_a_turn_agrees_on_the_stop_code_and_the_clock():
    """turn_agreed packs (code, clock) into one int: the max is the largest code, or the slowest clock when none stops."""
    from cvtool.train.ranks import CODE_SHIFT, turn_agreed

    class TwoRanks:  # this rank's value against another rank's (code, clock), as the all-reduce's max would see it
        def __init__(self, other):
            self.other = other

        def max_over_ranks(self, v: int) -> int:
            code, clock = self.other
            return max(v, code << CODE_SHIFT | int(np.ceil(clock * 1000)))

    assert turn_agreed(TwoRanks((0, 12.3456)), 2)(0, 10.0) == (0, 12.346)  # nobody stops: the slowest clock, to the ms
    assert turn_agreed(TwoRanks((0, 9.0)), 2)(0, 10.0) == (0, 10.0)
    assert turn_agreed(TwoRanks((0, 99.0)), 2)(1, 10.0)[0] == 1  # a signal here, a later clock there: stop
    assert turn_agreed(TwoRanks((1, 99.0)), 2)(2, 10.0)[0] == 2  # a failed loss outranks a signal
    assert turn_agreed(TwoRanks((2, 1.0)), 2)(0, 10.0)[0] == 2
    assert turn_agreed(None, 1)(0, 7.25) == (0, 7.25)  # one process: no all-reduce, the clock as read


def test_an_unwritable_out_fails_at_once_with_one_line(tmp_path, capsys):
    data = make_set(tmp_path / "data")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, out, err = cli(capsys, "train", "--data", str(data), "--time", "60", "--out", str(blocker / "run"))
    assert code == 2 and "cannot create" in err and "Not a directory" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(capsys, "train", "--data", str(data), "--epochs", "1", "-b", "2", "--out", str(blocker / "run"))
    assert code == 2 and "cannot create" in err and "Traceback" not in err
    assert blocker.read_text() == "not a folder"  # nothing the user had is touched


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["time", "epochs"])
def test_ranks_agree_when_one_ranks_loss_diverges(tmp_path, mode):
    """Two ranks in threads, agreeing through a barrier (as torch's all-reduce would): rank 1's loss explodes at its
    3rd step; both stop after that same step, rank 1 with its own line, rank 0 with one that points to it, and
    neither is left waiting for the other. Time-driven and epoch-driven alike (one loop: cvtool.train.loop)."""
    import threading

    from cvtool.errors import TrainingDiverged

    data = make_set(tmp_path / "data", n=8)
    barrier, vals = threading.Barrier(2, timeout=120), [0, 0]
    steps = [0, 0]

    class Rank:  # the torch trainer, plus max_over_ranks; rank 1's run reports an exploded loss at its step 3
        def __init__(self, inner, rank):
            self.inner, self.rank = inner, rank

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def max_over_ranks(self, v: int) -> int:
            vals[self.rank] = v
            barrier.wait()
            m = max(vals)
            barrier.wait()
            return m

        def step(self, x, y, lr):
            loss = self.inner.step(x, y, lr)
            if lr != 1e-6:  # not the plan's step-time probe (cvtool.train.prepare._measure steps at 1e-6)
                steps[self.rank] += 1
                if self.rank == 1 and steps[1] == 3:
                    return 1e9
            return loss

    def factory(rank):
        make = trainer_factory()
        return lambda *a: Rank(make(*a), rank)

    errors = [None, None]

    def run(rank):
        from cvtool.train.loop import train

        try:
            if mode == "time":
                train_timed(TrainConfig(data=str(data), time_budget=60.0), factory(rank), tmp_path / f"run{rank}",
                            **FakeClock(0.25).start(), cache_dir=tmp_path / f"cache{rank}", rank=rank, world=2)
            else:  # 8 images, 2 for validation: 3 each, one batch of 2 per rank and epoch
                cfg = TrainConfig(data=str(data), epochs=6, batch_size=2, img_size=32, width=4, depth=1)
                train(cfg, factory(rank), tmp_path / f"run{rank}", rank=rank, world=2)
        except BaseException as e:  # noqa: BLE001 - what each rank ended with
            errors[rank] = e

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    assert not any(t.is_alive() for t in threads), "a rank was left waiting"
    assert all(isinstance(e, TrainingDiverged) for e in errors), errors
    assert "training diverged at step 3 (loss 1e+09" in str(errors[1])
    assert str(errors[0]).startswith("training stopped at step 3: the loss of another rank's batch")
    assert steps == [3, 3]
    assert not (tmp_path / "run1").exists()  # rank 1 writes nothing


@pytest.mark.slow
def test_elastic_warp_is_off_by_default_and_the_flag_reaches_the_crops(tmp_path, monkeypatch, capsys):

    import cvtool.data.augment as A

    data = make_set(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "train", "--data", str(data), "--plan", "--json")
    assert code == 0 and json.loads(out)["plan"]["elastic"] == 0
    code, out, err = cli(capsys, "train", "--data", str(data), "--plan", "--json", "--elastic", "6")
    plan = json.loads(out)["plan"]
    assert plan["elastic"] == 6 and "elastic" in plan["given"]
    for bad in ("-1", "100"):
        code, out, err = cli(capsys, "train", "--data", str(data), "--plan", "--elastic", bad)
        assert code == 2 and "--elastic" in err and len(err.strip().splitlines()) == 1
    code, out, err = cli(capsys, "train", "--elastic", "5", "--epochs", "1")
    assert code == 2 and "--elastic needs --data" in err
    seen, real = [], A.sample_batch  # the augmentation each training batch was drawn with

    def spy(*a, **k):
        seen.append(a[4])
        return real(*a, **k)

    monkeypatch.setattr(A, "sample_batch", spy)
    train_timed(TrainConfig(data=str(data), time_budget=30.0), trainer_factory(), tmp_path / "run",
                **FakeClock(0.25).start(), overrides={"elastic": 6.0}, should_stop=lambda: bool(seen))
    assert seen and all(a.elastic == 6.0 for a in seen) and seen[0].p_geom > 0


@pytest.mark.slow
def test_a_real_time_budget_holds_on_the_wall_clock(tmp_path):
    """The one real --time run (the rest use an injected clock): the process, start-up and imports included, ends
    within budget x 1.05 + 5 s, and trained."""
    import time

    data = make_set(tmp_path / "data")
    budget = 30
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "cvtool", "train", "--data", str(data), "--time", str(budget), "--json",
                        "--out", str(tmp_path / "run")], capture_output=True, text=True, timeout=budget * 6)
    wall = time.perf_counter() - t
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(r.stdout)
    assert doc["status"] == STOP_TIME and doc["steps"] > 0 and doc["validations"] >= 1
    assert wall <= budget * 1.05 + 5, f"{wall:.1f} s for a {budget} s budget"


def test_a_planned_checkpoint_at_a_scale_is_not_resumed_by_epochs(tmp_path, capsys):
    """--epochs resumes on images at their own size; a plan's checkpoint trained on images resampled x0.5 would then
    train on other pixels than it validates on: one line, exit 2, nothing written."""
    from dataclasses import asdict

    spec = ModelSpec(in_channels=1, num_classes=2, width=4, depth=2)
    meta = ModelMeta(["bg", "fg"], [[0, 0, 0], [255, 255, 255]], [0.5], [0.25], scale=0.5)
    state = {"config": asdict(TrainConfig(data=str(make_set(tmp_path / "data")))), "plan": {"scale": 0.5}}
    ck = ckpt_io.save(ckpt_io.Checkpoint(spec, init_params(spec, 0), meta, train_state=state), tmp_path / "last.safetensors")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = cli(capsys, "train", "--resume", str(ck), "--epochs", "1")
    assert code == 2 and "resampled x0.5" in err and "without --epochs" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
