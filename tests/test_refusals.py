"""Inputs that used to end in the wrong exit: a backend declining a size is a skip, not FAILED; 300 classes are
refused when train opens the data, not after training; a --time too short for one step and a validation is
refused with the minimum; and exit 70 is kept for bugs, with a message that asks for a report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, load_backend
from PIL import Image
from test_plan import MEMBRANE

from cvtool import __version__
from cvtool.convcalc import verify
from cvtool.convcalc.chain import make_layer
from cvtool.errors import UsageError
from cvtool.train.plan import END_SLACK, RESERVE, UNTIMED_VAL_MARGIN, propose
from cvtool.train.plan_budget import fill_budget, minimum_budget


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------- a backend that declines is a skip

def test_verify_naive_declining_a_large_size_is_a_skip_with_its_reason(capsys):
    code, out, err = cli(capsys, "convcalc", "-i", "730", "-k", "3", "--verify", "--backend", "numpy,naive", "--json")
    doc = json.loads(out)
    rows = {r["backend"]: r for r in doc["results"]}
    assert code == 0 and doc["ok"] is True  # was: FAILED, exit 1
    assert rows["naive"]["ok"] is None and "too many" in rows["naive"]["skipped"] and "naive" in rows["naive"]["skipped"]
    assert rows["numpy"]["ok"] is True and rows["numpy"]["skipped"] is None


class Declines:
    device = "cpu"

    def conv2d(self, *a, **k):
        raise UsageError("this backend takes at most 16 x 16")


class Breaks:
    device = "cpu"

    def conv2d(self, *a, **k):
        raise RuntimeError("a real failure")


def test_a_decline_is_skipped_and_a_crash_still_fails():
    c = verify.case(make_layer("conv", (3,), None, 1, (1,), (0,)), (8, 8), seed=0)
    ref = load_backend("numpy")
    doc = verify.verify_doc(c, ref, {"numpy": ref, "small": Declines()}, "cpu")
    small = next(r for r in doc["results"] if r["backend"] == "small")
    assert doc["ok"] is True and small["skipped"] == "this backend takes at most 16 x 16" and small["ok"] is None
    doc = verify.verify_doc(c, ref, {"numpy": ref, "broken": Breaks()}, "cpu")
    broken = next(r for r in doc["results"] if r["backend"] == "broken")
    assert doc["ok"] is False and broken["ok"] is False and "a real failure" in broken["error"]


# ---------------------------------------------------------------- more classes than a mask holds

def classes_300(root: Path) -> Path:
    """6 RGB images 24 x 24 with 16-bit masks holding classes 0..299, named in classes.json."""
    rng = np.random.default_rng(0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray((np.arange(24 * 24).reshape(24, 24) % 300).astype(np.uint16)).save(root / "masks" / f"{i}.png")
    (root / "classes.json").write_text(json.dumps({"classes": [f"c{k}" for k in range(300)]}))
    return root


@pytest.mark.parametrize("mode", [["--epochs", "1", "--batch-size", "2", "--img-size", "16", "--width", "4", "--depth",
                                   "1"], ["--time", "30"]], ids=["epochs", "timed"])
def test_300_classes_are_refused_when_train_opens_the_data(capsys, tmp_path, monkeypatch, mode):
    data = classes_300(tmp_path / "k300")
    monkeypatch.chdir(tmp_path)
    events = []
    from cvtool.cli.train_view import ProgressUI

    real = ProgressUI.event
    monkeypatch.setattr(ProgressUI, "event", lambda self, kind, d: (events.append(kind), real(self, kind, d)))
    code, _, err = cli(capsys, "train", "--data", str(data), "--backend", "numpy", "--workers", "1",
                       "--out", str(tmp_path / "run"), *mode)
    line = one_line(err)
    assert code == 2 and "300 classes" in line and "at most 255" in line, err
    assert "start" not in events and "loading" not in events  # before any image was loaded or step taken
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


# ---------------------------------------------------------------- a budget too short for one step

def test_a_budget_below_one_step_and_a_validation_is_refused_with_the_minimum():
    need = minimum_budget(step_s=0.1, val_s=2.0, setup_s=10.0)
    assert need == pytest.approx((10.0 + 0.1 + UNTIMED_VAL_MARGIN * 2.0 + END_SLACK) / (1 - RESERVE))
    at_floor = propose(MEMBRANE, budget=5, overrides={"crop": 96})  # the user's crop: nothing left to shrink
    with pytest.raises(UsageError) as e:
        fill_budget(at_floor, step_s=0.1, val_s=2.0, setup_s=10.0)
    assert f"the minimum here is {math.ceil(need)} s" in e.value.message and "--time 5 s" in e.value.message
    assert fill_budget(propose(MEMBRANE, budget=need + 0.01, overrides={"crop": 96}), step_s=0.1, val_s=2.0,
                       setup_s=10.0).steps >= 1
    shrinkable = fill_budget(propose(MEMBRANE, budget=5), step_s=0.1, val_s=2.0, setup_s=10.0)
    assert shrinkable.steps == 0  # no refusal yet: the caller shrinks the crop and measures again first


def test_a_budget_spent_before_the_data_is_read_is_refused_at_once(capsys, tmp_path, monkeypatch):
    """A process that took 10 s to start (a slow disk, a busy machine): --time 0.5 is over before the data is read."""
    from test_train_cli import write_dataset

    data = write_dataset(tmp_path / "d", 6, 16)
    monkeypatch.setattr("cvtool.cli.train.process_age", lambda: 10.0)
    monkeypatch.setattr("cvtool.data.open_datasets", lambda *a, **k: pytest.fail("the data was opened"))
    code, _, err = cli(capsys, "train", "--data", str(data), "--time", "0.5", "--backend", "numpy",
                       "--out", str(tmp_path / "run"))
    line = one_line(err)
    assert code == 2 and "--time 0.5 s is spent before the data is read" in line, line
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_train_with_a_few_seconds_writes_no_model(tmp_path):
    """A real process: refused either at once or by the plan with the minimum; never an untrained model, exit 0."""
    import subprocess
    import sys

    from test_train_cli import write_dataset

    data = write_dataset(tmp_path / "d", 12, 32)
    p = subprocess.run([sys.executable, "-m", "cvtool", "train", "--data", str(data), "--time", "4", "--backend",
                        "numpy", "--workers", "1", "--out", str(tmp_path / "run")], capture_output=True, text=True,
                       timeout=300)
    last = p.stderr.strip().splitlines()[-1]
    if p.returncode == 0:  # a fast machine: 4 s hold a few steps; what is written has trained, never step 0
        from cvtool.model import checkpoint as ckpt_io

        assert ckpt_io.load(tmp_path / "run" / "best.safetensors").train_state["run"]["step"] >= 1
        return
    assert p.returncode == 2 and ("the minimum here is" in last or "spent before the data is read" in last), p.stderr
    assert not (tmp_path / "run" / "best.safetensors").exists() and not (tmp_path / "run" / "last.safetensors").exists()


# ---------------------------------------------------------------- exit 70: bugs only, and asked to be reported

def test_a_bug_is_exit_70_and_asks_for_a_report_with_command_and_version(capsys, monkeypatch):
    def boom(*a, **k):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr("cvtool.cli.convcalc.command.output_doc", boom)
    code, _, err = cli(capsys, "convcalc", "-i", "5", "-k", "3")
    line = one_line(err)
    assert code == 70 and line.startswith("error: internal error: ZeroDivisionError: division by zero. ")
    assert f"This is a bug in cvtool {__version__}: please report it with the command (cvtool convcalc -i 5 -k 3)" in line
    assert "CVTOOL_DEBUG=1" in line and "second line" not in line
