"""`cvtool train` end to end, on a tiny folder dataset (24 synthetic-shape images 32x32, 18 train / 6 val):
pure --json, sane metrics.csv and curves.png, run folders exp1, exp2, one-line errors, resume rules, a
NumPy run that never imports torch, Ctrl-C/SIGTERM in a real process then --resume to the same weights, and
torchrun with two ranks. Every option that shapes the run is given, so TrainConfig's defaults do not matter.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_train import one_torch_thread  # noqa: F401  (autouse: --workers 1 sets torch's threads in-process)

from cvtool.cli import main
from cvtool.data.synth import SynthDataset
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.spec import trainable

ARGS = ["--epochs", "2", "--batch-size", "2", "--img-size", "16", "--width", "4", "--depth", "1", "--lr", "0.01",
        "--optimizer", "adam", "--schedule", "poly", "--warmup", "0.1", "--weight-decay", "0", "--activation", "relu",
        "--norm", "batch", "--val-split", "0.25", "--seed", "0", "--workers", "1"]
COLUMNS = ["validation", "epoch", "step", "lr", "train_loss", "val_loss", "pixel_accuracy", "mean_iou", "seconds",
           "val_seconds"]


def write_dataset(root: Path, n: int, size: int) -> Path:
    ds = SynthDataset(n, size, seed=0)
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        s = ds[i]
        Image.fromarray((s.image.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(root / "images" / f"{i:02d}.png")
        Image.fromarray(s.mask.astype(np.uint8)).save(root / "masks" / f"{i:02d}.png")
    (root / "classes.json").write_text(json.dumps({"classes": list(ds.classes)}))
    return root


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> str:
    return str(write_dataset(tmp_path_factory.mktemp("shapes"), 24, 32))


@pytest.fixture(scope="module")
def bad_mask(tmp_path_factory) -> str:
    root = write_dataset(tmp_path_factory.mktemp("bad"), 6, 32)
    m = np.zeros((32, 32), np.uint8)
    m[3, 4] = 9  # 4 classes: 9 is none of them
    Image.fromarray(m).save(root / "masks" / "03.png")
    return str(root)


def cvtool(capsys, *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return e.value.code, out, err


def finite(v) -> bool:
    return isinstance(v, float) and np.isfinite(v)


# --- a good run ---------------------------------------------------------------------------------

def test_json_is_pure_and_the_run_folder_is_sane(shapes, tmp_path, capsys):
    code, out, err = cvtool(capsys, "train", "--data", shapes, *ARGS, "--json", "--out", tmp_path / "run")
    assert code == 0 and err == ""
    doc = json.loads(out)  # the whole of stdout is one JSON document
    assert doc["status"] == "done" and doc["epochs"] == 2 and doc["steps"] == 2 * 9
    assert doc["out"] == str(tmp_path / "run") and doc["classes"] == ["background", "circle", "square", "triangle"]
    f = doc["final"]
    assert all(finite(f[k]) for k in ("train_loss", "val_loss", "pixel_accuracy", "mean_iou"))
    cm = np.array(doc["confusion"], np.float64)  # the figures are the confusion matrix's, not merely in [0, 1]
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    assert f["pixel_accuracy"] == pytest.approx(np.trace(cm) / cm.sum()) and len(doc["iou"]) == 4
    assert f["mean_iou"] == pytest.approx(np.nanmean(iou)) and doc["iou"] == pytest.approx(iou.tolist(), nan_ok=True)
    assert np.array(doc["confusion"]).sum() == 6 * 32 * 32  # every validation pixel, at full size
    assert doc["config"]["epochs"] == 2 and doc["config"]["width"] == 4 and doc["config"]["backend"] == "torch"

    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == ["best.safetensors", "curves.png", "last.safetensors", "metrics.csv",
                                                     "train_loss.csv"]
    with open(run / "metrics.csv") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == COLUMNS + [f"iou_{c}" for c in doc["classes"]] and len(rows) == 2  # one per epoch
    assert [int(r["epoch"]) for r in rows] == [1, 2] and [int(r["step"]) for r in rows] == [9, 18]
    assert float(rows[-1]["mean_iou"]) == pytest.approx(f["mean_iou"])
    assert all(0 <= float(r["pixel_accuracy"]) <= 1 and float(r["train_loss"]) > 0 for r in rows)
    with Image.open(run / "curves.png") as im:
        assert im.format == "PNG" and im.width >= 400 and im.height >= 200
        assert len(np.unique(np.asarray(im.convert("RGB")).reshape(-1, 3), axis=0)) > 3  # something is drawn

    best, last = ckpt_io.load(run / "best.safetensors"), ckpt_io.load(run / "last.safetensors")
    assert best.train_state["metrics"]["mean_iou"] == pytest.approx(max(float(r["mean_iou"]) for r in rows))
    assert last.optim_state and not best.optim_state  # only last resumes the optimiser
    assert last.train_state["run"]["epoch"] == 2 and last.meta.classes == doc["classes"]


def test_people_get_progress_a_table_and_next_commands(shapes, tmp_path, capsys):
    code, out, err = cvtool(capsys, "train", "--data", shapes, *ARGS, "--epochs", "1", "--out", tmp_path / "run")
    assert code == 0
    assert "data: folder" in err and "model: U-Net width 4 depth 1" in err and "epoch   1: train loss" in err
    for word in ("Validation, per class", "background", "triangle", "mean IoU", "pixel accuracy", "next:",
                 f"cvtool segment IMAGE --model {tmp_path / 'run'}/best.safetensors", "cvtool export"):
        assert word in out, word


def test_out_auto_increments(shapes, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    outs = []
    for _ in range(2):
        code, out, _ = cvtool(capsys, "train", "--data", shapes, *ARGS, "--epochs", "1", "--json")
        assert code == 0
        outs.append(json.loads(out)["out"])
    assert outs == [str(Path("runs/train/exp1")), str(Path("runs/train/exp2"))]
    assert (tmp_path / "runs/train/exp2/last.safetensors").is_file()


# --- mistakes: exit 2, one line ----------------------------------------------------------------

BAD = [
    (["--optimizer", "foo"], "unknown optimizer"),
    (["--schedule", "step"], "unknown schedule"),
    (["--activation", "gelu"], "activation"),
    (["--img-size", "18", "--depth", "2"], "divisible by 2**depth = 4"),
    (["--backend", "ort"], "cannot train"),
    (["--backend", "tensorflow"], "unknown backend"),
    (["--device", "cuda"], "CUDA"),
    (["--device", "tpu"], "unknown device"),
    (["--data", "BAD_MASK"], "mask values 9"),
    (["--data", "NO_SUCH_FOLDER"], "no such dataset folder"),
    (["--resume", "NO_SUCH_FILE"], "does not exist"),
    (["--batch-size", "64"], "smaller than one batch"),
    (["--epochs", "0"], "--epochs"),
    (["--lr", "-1"], "--lr"),
    (["--warmup", "1.5"], "--warmup"),
    (["--val-split", "1"], "--val-split"),
    (["--dice", "-1"], "--dice"),
    (["--epochs", "x"], "Invalid value"),
    (["--no-such-option"], "No such option"),
]


@pytest.mark.parametrize("extra,words", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_options_exit_2_with_one_line(extra, words, shapes, bad_mask, tmp_path, monkeypatch, capsys):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.chdir(tmp_path)
    subs = {"BAD_MASK": bad_mask, "NO_SUCH_FOLDER": str(tmp_path / "nope"), "NO_SUCH_FILE": str(tmp_path / "x.safetensors")}
    extra = [subs.get(a, a) for a in extra]
    data = [] if "--data" in extra else ["--data", shapes]
    code, out, err = cvtool(capsys, "train", *data, *ARGS, *extra)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert not (tmp_path / "runs").exists()  # nothing written


def test_resume_rules(shapes, tmp_path, capsys):
    code, _, _ = cvtool(capsys, "train", "--data", shapes, *ARGS, "--epochs", "1", "--json", "--out", tmp_path / "r")
    assert code == 0
    for extra, words in ((["--epochs", "1"], "finished its 1 epochs"), (["--width", "8", "--epochs", "2"], "--width cannot change")):
        code, out, err = cvtool(capsys, "train", "--resume", tmp_path / "r", *extra)
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and words in err, err
    code, out, _ = cvtool(capsys, "train", "--resume", tmp_path / "r", "--epochs", "2", "--workers", "1", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["epochs"] == 2 and doc["steps"] == 18 and doc["out"] == str(tmp_path / "r")
    with open(tmp_path / "r" / "metrics.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2"]


# --- real processes -----------------------------------------------------------------------------

def test_numpy_backend_trains_without_importing_torch(shapes, tmp_path):
    probe = ("import json, sys\nfrom cvtool.cli import main\ntry:\n    main(json.loads(sys.argv[1]))\n"
             "except SystemExit as e:\n    code = e.code\n"
             "print(json.dumps([code, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnx', 'onnxruntime'))]),"
             " file=sys.stderr)\n")
    args = ["train", "--backend", "numpy", "--data", shapes, *ARGS, "--epochs", "1", "--json", "--out", str(tmp_path / "n")]
    r = subprocess.run([sys.executable, "-c", probe, json.dumps(args)], capture_output=True, text=True, timeout=120)
    code, heavy = json.loads(r.stderr.strip().splitlines()[-1])
    assert code == 0 and heavy == [], r.stderr
    doc = json.loads(r.stdout)
    assert doc["status"] == "done" and doc["config"]["backend"] == "numpy"
    assert ckpt_io.load(tmp_path / "n" / "last.safetensors").train_state["config"]["backend"] == "numpy"


def cvtool_process(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cvtool", "train", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})


def rows(run: Path) -> int:
    try:
        return len((run / "metrics.csv").read_text().strip().splitlines()) - 1
    except FileNotFoundError:
        return 0


def interrupt_after(p: subprocess.Popen, run: Path, epochs_done: int, sig: int, delay: float) -> tuple[str, str]:
    """Wait until the run has written `epochs_done` rows of metrics.csv (so it is past start-up and has taken
    steps), then `delay` seconds more (to land mid-epoch, usually), then send `sig`; bounded by a timeout."""
    t0 = time.monotonic()
    while rows(run) < epochs_done and p.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.01)
    time.sleep(delay)
    assert p.poll() is None, "the run ended before it could be interrupted"
    p.send_signal(sig)
    return p.communicate(timeout=120)


@pytest.mark.slow
def test_sigint_and_sigterm_save_a_checkpoint_that_resumes_to_the_same_weights(shapes, tmp_path, capsys):
    """A: 5 epochs straight (in this process, one thread). B, in real processes: Ctrl-C (SIGINT) after epoch 1,
    resume, SIGTERM after epoch 2, resume to the end. Exit 130, no traceback, and B's final weights equal A's."""
    common = ["--data", shapes, *ARGS, "--epochs", "5", "--img-size", "32", "--depth", "2"]
    code, out_a, _ = cvtool(capsys, "train", *common, "--json", "--out", tmp_path / "a")
    assert code == 0
    total = json.loads(out_a)["steps"]
    seconds = [h["seconds"] for h in ckpt_io.load(tmp_path / "a" / "last.safetensors").train_state["run"]["history"]]
    half_epoch = (seconds[-1] - seconds[0]) / (len(seconds) - 1) / 2

    run = tmp_path / "b"
    stops = []
    for sig, after in ((signal.SIGINT, 1), (signal.SIGTERM, 2)):
        args = common if not stops else ["--resume", run, "--workers", "1"]
        p = cvtool_process(*args, "--out", run)
        out, err = interrupt_after(p, run, after, sig, half_epoch)
        assert p.returncode == 130, err
        assert "Traceback" not in err and "error" not in err
        assert "interrupted: saved a resumable checkpoint" in err and f"cvtool train --resume {run}" in err
        st = ckpt_io.load(run / "last.safetensors").train_state["run"]
        assert st["step"] < total
        stops.append((st["epoch"], st["batch"], st["step"]))
    assert stops[0][2] < stops[1][2]

    p = cvtool_process("--resume", run / "last.safetensors", "--workers", "1", "--json")
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert json.loads(out)["steps"] == total
    pa, pb = (ckpt_io.load(r / "last.safetensors").params for r in (tmp_path / "a", run))
    for k in pa:
        np.testing.assert_allclose(pb[k], pa[k], rtol=0, atol=1e-6, err_msg=f"{k} (stopped at {stops})")
    with open(run / "metrics.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3, 4, 5]


def sha256(params: dict[str, np.ndarray], names) -> str:
    h = hashlib.sha256()
    for k in sorted(names):
        h.update(k.encode())
        h.update(np.ascontiguousarray(params[k], np.float32).tobytes())
    return h.hexdigest()


@pytest.mark.slow
def test_torchrun_two_ranks_train_the_same_weights_on_different_data(shapes, tmp_path):
    digests = tmp_path / "digests"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cvtool",
           "train", "--data", shapes, *ARGS, "--json"]
    env = {**os.environ, "CVTOOL_DIGEST_DIR": str(digests), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)  # rank 0 alone prints
    assert doc["status"] == "done" and doc["steps"] == 2 * 4  # 18 images over 2 ranks: 9 each, 4 batches of 2
    assert sorted(p.name for p in (tmp_path / "runs" / "train").iterdir()) == ["exp1"]  # rank 0 alone writes

    d0, d1 = (json.loads((digests / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (d0["world"], d1["world"]) == (2, 2)
    assert d0["weights"] == d1["weights"]  # DDP keeps the trainable weights identical
    assert d0["all"] == d1["all"]  # and the BatchNorm statistics are averaged over the ranks every epoch
    from cvtool.train.batches import batch_indices

    b0, b1 = d0["batches"], d1["batches"]
    assert b0 == list(range(0, 16, 2)) and b1 == list(range(1, 16, 2))  # rank r: global batches k * 2 + r
    first = [{int(i) for g in b[:4] for i in batch_indices(g, 2, 18, 0)} for b in (b0, b1)]
    assert len(first[0]) == len(first[1]) == 8 and not first[0] & first[1]  # each rank its own 8 images an epoch
    # rank 0's digest is that of the checkpoint it wrote (BN running stats included)
    last = ckpt_io.load(tmp_path / "runs" / "train" / "exp1" / "last.safetensors").params
    assert d0["all"] == sha256(last, last) and d0["weights"] == sha256(last, [k for k in last if trainable(k)])


@pytest.mark.slow
def test_torchrun_time_driven_ranks_agree_on_the_clock(shapes, tmp_path):
    """--data without --epochs under torchrun fills the budget (not 6 epochs): both ranks take the same plan and the
    same number of steps on their own batches (rank r: global batches k*2 + r), stop for time together with the same
    weights and BatchNorm statistics, and rank 0 alone writes the run."""
    digests, run = tmp_path / "digests", tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cvtool",
           "train", "--data", shapes, "--time", "30", "--img-size", "32", "-b", "2", "--width", "4", "--depth", "1",
           "--workers", "1", "--json", "--out", str(run)]
    env = {**os.environ, "CVTOOL_DIGEST_DIR": str(digests), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    doc = json.loads(r.stdout)  # rank 0 alone prints
    assert doc["stop_reason"] == "time" and doc["validations"] >= 1 and doc["plan"]["budget"] == 30
    d0, d1 = (json.loads((digests / f"rank{k}.json").read_text()) for k in (0, 1))
    b0, b1 = d0["batches"], d1["batches"]
    assert len(b0) == len(b1) == doc["steps"] > 0  # the same steps: they stopped at the same turn
    assert b0 == [2 * k for k in range(len(b0))] and b1 == [2 * k + 1 for k in range(len(b1))]  # their own batches
    assert d0["weights"] == d1["weights"] and d0["all"] == d1["all"]  # BN statistics averaged before validating
    last = ckpt_io.load(run / "last.safetensors")
    assert d0["all"] == sha256(last.params, last.params) and last.train_state["plan"] == doc["plan"]
    assert {p.name for p in run.iterdir()} >= {"best.safetensors", "last.safetensors", "plan.json", "metrics.csv"}
    assert not (tmp_path / "runs" / "train").exists()  # no folder of rank 1's anywhere


@pytest.mark.slow
def test_sigterm_to_a_time_driven_torchrun_stops_both_ranks_together(shapes, tmp_path):
    """The ranks agree on the signal too: both stop at the same step with the same weights, rank 0 saves."""
    digests, run = tmp_path / "digests", tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cvtool",
           "train", "--data", shapes, "--time", "120", "--img-size", "32", "-b", "2", "--width", "4", "--depth", "1",
           "--workers", "1", "--out", str(run)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                         env={**os.environ, "CVTOOL_DIGEST_DIR": str(digests), "OMP_NUM_THREADS": "1"})
    t0 = time.monotonic()
    while not (run / "plan.json").exists() and p.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.05)  # plan.json: the plan is made and the run's trainer is about to step
    time.sleep(1.0)
    assert p.poll() is None, "the run ended before it could be interrupted"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert "interrupted: saved a resumable checkpoint" in err, err[-3000:]
    d0, d1 = (json.loads((digests / f"rank{k}.json").read_text()) for k in (0, 1))
    assert len(d0["batches"]) == len(d1["batches"]) > 0 and d0["all"] == d1["all"]
    ck = ckpt_io.load(run / "last.safetensors")
    assert ck.train_state["run"]["step"] == len(d0["batches"]) and d0["all"] == sha256(ck.params, ck.params)


@pytest.mark.slow
def test_sigterm_to_torchrun_stops_both_ranks_at_the_same_step(shapes, tmp_path):
    """torchrun forwards SIGTERM to every rank; the ranks agree on the step to stop at (else one would wait in an
    all-reduce for a peer that has left), both end with the same weights, and rank 0 saves them resumably."""
    digests, run = tmp_path / "digests", tmp_path / "d"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cvtool",
           "train", "--data", shapes, *ARGS, "--epochs", "10", "--img-size", "32", "--depth", "2", "--out", str(run)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                         env={**os.environ, "CVTOOL_DIGEST_DIR": str(digests), "OMP_NUM_THREADS": "1"})
    _, err = interrupt_after(p, run, 1, signal.SIGTERM, 0.1)
    assert "interrupted: saved a resumable checkpoint" in err, err[-3000:]
    d0, d1 = (json.loads((digests / f"rank{r}.json").read_text()) for r in (0, 1))
    assert d0["weights"] == d1["weights"]
    ck = ckpt_io.load(run / "last.safetensors")
    assert 0 < ck.train_state["run"]["step"] < 10 * 4 and d0["all"] == sha256(ck.params, ck.params)


def test_help_defaults_are_trainconfigs():
    """The options' help says '(default X)' by hand (so `--help` needs no numpy); it must say TrainConfig's X."""
    import inspect
    import re
    from dataclasses import fields

    from cvtool.cli.train import train
    from cvtool.train.config import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    names = {"synth_images": "synth_train", "time_budget": "time_budget"}
    checked = 0
    for name, param in inspect.signature(train).parameters.items():
        m = re.search(r"\(default ([^)]+)\)", param.default.help or "")
        key = names.get(name, name)
        if m is None or key not in defaults:
            continue
        said, real = m.group(1), defaults[key]
        assert type(real)(said) == real, f"--{name}: help says {said}, TrainConfig has {real}"
        checked += 1
    assert checked >= 12
