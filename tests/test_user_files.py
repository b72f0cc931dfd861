"""The user's files survive cvtool (issue 22): segment never writes into its inputs nor over a file it did not
write, train never replaces or mixes into an earlier run without --force, export never writes ONNX over a file
that is something else. Each through the real entry point; the user's bytes compared before and after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, one_line
from PIL import Image
from test_inference import tiny_checkpoint

from cvtool.data.io import OWN_KEY, write_mask_png, written_by_cvtool
from cvtool.fsutil import CLAIM, claim_dir, release_if_empty
from cvtool.model import checkpoint as ckpt_io

TRAIN = ["train", "--backend", "numpy", "--epochs", "1", "--synth-images", "8", "--batch-size", "4", "--img-size", "16",
         "--width", "4", "--depth", "1", "--workers", "1"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder (hidden ones too) -> its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "m.safetensors", in_channels=1, num_classes=3)


def gray(path: Path, seed: int = 0, hw=(20, 24)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, hw, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def sf(tmp_path) -> Path:
    """A folder of the user's: an image and the user's own ground truth named like segment's output."""
    gray(tmp_path / "sf" / "a.png")
    Image.fromarray(np.full((20, 24), 1, np.uint8)).save(tmp_path / "sf" / "a_mask.png")
    return tmp_path / "sf"


# ---------------------------------------------------------------- segment --out against its inputs

@pytest.mark.parametrize("args,out,words", [
    (["sf"], "sf", "is the input folder sf"),
    (["sf"], "sf/masks", "lies inside the input folder sf"),
    (["sf"], ".", "holds the input folder sf"),
    (["sf/a.png"], "sf", "holds the input sf/a.png"),
    (["sf/*.png"], "sf", "holds the input sf/a.png"),
])
def test_segment_out_that_mixes_with_an_input_is_refused_before_anything_is_written(sf, model, tmp_path, capsys,
                                                                                      monkeypatch, args, out, words):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code, stdout, err = cli(capsys, "segment", *args, "--out", out, "-m", str(model), "--backend", "numpy")
    assert code == 2 and stdout == "" and words in one_line(err), err
    assert snapshot(tmp_path) == before and not (tmp_path / "sf" / "masks").exists()


def test_segment_never_overwrites_a_file_it_did_not_write(sf, model, tmp_path, capsys):
    """The user's a_mask.png in --out: image a fails alone (exit 1, counted), b is written, a_mask.png unchanged;
    a second run replaces cvtool's own outputs (recognised by their PNG text chunk)."""
    out = tmp_path / "out"
    out.mkdir()
    theirs = (sf / "a_mask.png").read_bytes()
    (out / "a_mask.png").write_bytes(theirs)
    gray(tmp_path / "more" / "b.png", seed=1)
    code, stdout, err = cli(capsys, "segment", str(sf / "a.png"), str(tmp_path / "more" / "b.png"), "--out", str(out),
                            "-m", str(model), "--backend", "numpy", "--alpha", "0.5")
    assert code == 1, err
    assert f"{out / 'a_mask.png'} exists and was not written by cvtool: not overwritten" in err
    assert err.strip().splitlines()[-1] == "error: 1 of 2 input(s) failed: a.png"
    assert (out / "a_mask.png").read_bytes() == theirs and not (out / "a_overlay.png").exists()
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "b_mask.png", "b_overlay.png"]
    assert written_by_cvtool(out / "b_mask.png") and written_by_cvtool(out / "b_overlay.png")
    overlay = (out / "b_overlay.png").read_bytes()
    code, _, err = cli(capsys, "segment", str(tmp_path / "more" / "b.png"), "--out", str(out), "-m", str(model),
                       "--backend", "numpy", "--alpha", "0.9")
    assert code == 0, err
    assert (out / "b_overlay.png").read_bytes() != overlay  # its own file: replaced


def test_what_counts_as_written_by_cvtool(tmp_path):
    ours = tmp_path / "ours.png"
    write_mask_png(ours, np.zeros((3, 4), np.uint8), [(0, 0, 0)])
    assert written_by_cvtool(ours)
    plain = gray(tmp_path / "plain.png")
    from PIL.PngImagePlugin import PngInfo

    forged = PngInfo()
    forged.add_text(OWN_KEY, "something else")
    Image.open(plain).save(tmp_path / "other.png", pnginfo=forged)
    (tmp_path / "text.png").write_text("not a png")
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / "jpeg.png", format="JPEG")
    for name in ("plain.png", "other.png", "text.png", "jpeg.png", "missing.png"):
        assert not written_by_cvtool(tmp_path / name), name


# ---------------------------------------------------------------- train --out

@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished run folder (the NumPy backend: no torch import, a second or so); tests work on copies."""
    run = tmp_path_factory.mktemp("finished") / "run"
    from cvtool.cli import main

    with pytest.raises(SystemExit) as e:
        main([*TRAIN, "--out", str(run)])
    assert e.value.code == 0
    return run


@pytest.fixture
def run(finished, tmp_path) -> Path:
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def test_train_out_on_an_earlier_run_is_refused_and_keeps_it(run, capsys):
    before = snapshot(run)
    assert {"best.safetensors", "last.safetensors", "metrics.csv"} <= set(before) and CLAIM not in before
    code, stdout, err = cli(capsys, *TRAIN, "--seed", "1", "--out", str(run))
    assert code == 2 and stdout == "" and "--resume a run there, or --force to replace it" in one_line(err)
    shown = ", ".join(sorted(before)[:4]) + (", ..." if len(before) > 4 else "")  # the first four files named
    assert f"{run} is not empty ({shown})" in err
    assert snapshot(run) == before  # not a byte changed


def test_train_out_on_a_folder_of_other_files_is_refused(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    code, _, err = cli(capsys, *TRAIN, "--out", str(mine))
    assert code == 2 and f"{mine} is not empty (notes.txt)" in one_line(err)
    assert snapshot(mine) == {"notes.txt": b"keep"}  # no claim left behind either


def test_train_force_replaces_the_run_and_leaves_other_files(run, capsys):
    (run / "plan.json").write_text("{}")  # as a time-driven run would have left it
    (run / "notes.txt").write_text("keep")
    best = (run / "best.safetensors").read_bytes()
    code, _, err = cli(capsys, *TRAIN, "--seed", "1", "--out", str(run), "--force")
    assert code == 0, err
    assert not (run / "plan.json").exists()  # nothing of the earlier run mixed in
    assert (run / "notes.txt").read_text() == "keep" and (run / "best.safetensors").read_bytes() != best
    assert ckpt_io.load(run / "best.safetensors").train_state["config"]["seed"] == 1


def test_train_resume_continues_in_its_own_folder(run, capsys):
    code, _, err = cli(capsys, "train", "--resume", str(run / "last.safetensors"), "--epochs", "2",
                       "--backend", "numpy")
    assert code == 0, err
    assert ckpt_io.load(run / "last.safetensors").train_state["run"]["epoch"] == 2


def test_a_folder_claimed_by_a_live_process_is_refused_even_with_force(run, capsys):
    import socket

    before = snapshot(run)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / CLAIM).write_text(json.dumps({"command": "train", "pid": sleeper.pid, "host": socket.gethostname()}))
        code, _, err = cli(capsys, *TRAIN, "--out", str(run), "--force")
        assert code == 2 and f"being written by a running `cvtool train` (pid {sleeper.pid})" in one_line(err)
        assert {k: v for k, v in snapshot(run).items() if k != CLAIM} == {k: v for k, v in before.items() if k != CLAIM}
    finally:
        sleeper.kill()
        sleeper.wait()
    assert claim_dir(run, "train", force=True) == run  # its process gone: --force takes it
    assert json.loads((run / CLAIM).read_text())["pid"] == os.getpid()


def test_claim_dir_is_atomic_across_processes(tmp_path):
    """Six processes claim one folder at once: exactly one gets it, the others are refused. The winner holds its
    claim (as a running train does) until every process has answered."""
    code = ("import sys\nfrom cvtool.fsutil import claim_dir\nfrom cvtool.errors import UsageError\n"
            "try:\n    claim_dir(sys.argv[1], 'train')\n    print('won', flush=True)\n    sys.stdin.readline()\n"
            "except UsageError as e:\n    print('refused', flush=True)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=env) for _ in range(6)]
    said = sorted(p.stdout.readline().strip() for p in procs)
    for p in procs:
        p.communicate("\n")
    assert said == ["refused"] * 5 + ["won"], said


def test_a_failed_claim_is_released_completely(tmp_path):
    made = claim_dir(tmp_path / "a" / "b", "train")
    assert (made / CLAIM).is_file()
    release_if_empty(made)
    assert list(tmp_path.iterdir()) == []  # the claim file, the folder and the parent it created
    kept = tmp_path / "kept"
    kept.mkdir()
    release_if_empty(claim_dir(kept, "train"))
    assert kept.is_dir() and list(kept.iterdir()) == []  # a folder that was there before stays


def test_checkpoints_come_out_with_the_mode_of_every_other_file(tmp_path, model):
    old = os.umask(0o022)
    try:
        ck = ckpt_io.save(ckpt_io.load(model), tmp_path / "c.safetensors")
        write_mask_png(tmp_path / "m.png", np.zeros((2, 2), np.uint8), [(0, 0, 0)])
    finally:
        os.umask(old)
    assert (ck.stat().st_mode & 0o777) == 0o644 == ((tmp_path / "m.png").stat().st_mode & 0o777)


# ---------------------------------------------------------------- export -o

def test_export_writes_only_onnx_files(model, tmp_path, capsys):
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"the user's photo")
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(b"not a model at all")
    for out, words in ((photo, "an export is written to a .onnx file (hint: for example -o photo.onnx)"),
                       (tmp_path / "new.png", "an export is written to a .onnx file"),
                       (fake, "exists and is not an ONNX model: not overwritten")):
        code, stdout, err = cli(capsys, "export", str(model), "-o", str(out), "--no-verify")
        assert code == 2 and stdout == "" and words in one_line(err), err
    assert photo.read_bytes() == b"the user's photo" and fake.read_bytes() == b"not a model at all"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.onnx", "photo.png"]
    good = tmp_path / "model.onnx"
    for _ in range(2):  # an earlier export is an ONNX file: replaced
        code, _, err = cli(capsys, "export", str(model), "-o", str(good), "--no-verify")
        assert code == 0 and good.is_file(), err


def test_a_claim_from_another_machine_counts_and_a_dead_one_does_not(tmp_path):
    """A shared disk: another host's claim cannot be checked from here, so it holds; one of a process that is gone
    (killed: its end_claim never ran) is taken over."""
    from cvtool.errors import UsageError

    run = tmp_path / "run"
    run.mkdir()
    (run / CLAIM).write_text(json.dumps({"command": "train", "pid": 1, "host": "elsewhere.example"}))
    with pytest.raises(UsageError, match=r"being written by a running `cvtool train` \(pid 1 on elsewhere.example\)"):
        claim_dir(run, "train", force=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (run / CLAIM).write_text(json.dumps({"command": "train", "pid": int(dead.stdout), "host": socket.gethostname()}))
    assert claim_dir(run, "train") == run and json.loads((run / CLAIM).read_text())["pid"] == os.getpid()
