"""Bad inputs through the real entry point: each is one line on stderr and a non-zero exit (2 for bad options and
files, 3 for a training that diverged), and nothing a user had is lost or half-written. Plus the inputs that are
accepted by a stated rule (16-bit grayscale, CMYK), checked value by value.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import FakeClock, one_line
from PIL import Image
from test_inference import tiny_checkpoint
from test_timed import make_set, trainer_factory
from test_train import one_torch_thread  # noqa: F401  (autouse: one torch thread)
from test_train_cli import ARGS, cvtool, write_dataset

import cvtool_backends as registry
from cvtool.data import open_datasets
from cvtool.data.io import read_image, read_mask
from cvtool.errors import DataError, TrainingDiverged
from cvtool.model import checkpoint as ckpt_io
from cvtool.train.config import TrainConfig
from cvtool.train.guards import DIVERGED, check_loss

SMALL = ["--batch-size", "2", "--img-size", "16", "--width", "4", "--depth", "1", "--workers", "1"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("shapes"), 24, 32)  # 4 classes, 18 train / 6 val


# ---------------------------------------------------------------- 1. a diverging or NaN loss

class NanOnceBestExists:
    """A trainer whose loss turns NaN as soon as the run folder holds a best.safetensors (after a validation)."""

    def __init__(self, inner, out: Path, on: dict):
        self.inner, self.out, self.on = inner, out, on

    def step(self, x, y, lr):
        loss = self.inner.step(x, y, lr)
        return float("nan") if self.on["nan"] and (self.out / "best.safetensors").exists() else loss

    def __getattr__(self, name):
        return getattr(self.inner, name)


def nan_after_first_validation(monkeypatch, out: Path) -> dict:
    real = registry.get
    on = {"nan": True}

    class Backend:
        def __init__(self, be):
            self.be = be

        def trainer(self, *a, **k):
            return NanOnceBestExists(self.be.trainer(*a, **k), out, on)

        def __getattr__(self, name):
            return getattr(self.be, name)

    monkeypatch.setattr(registry, "get", lambda name, device="auto": Backend(real(name, device)))
    return on


def test_an_absurd_lr_stops_at_the_step_with_one_line_and_exit_3(shapes, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = cvtool(capsys, "train", "--data", shapes, *ARGS, "--epochs", "3", "--lr", "1e6", "--json")
    assert code == 3 and out == ""
    line = one_line(err)
    assert "training diverged at step " in line and "at learning rate" in line
    assert "lower --lr (this run's peak was 1e+06), e.g. --lr 1e+05" in line
    assert "before the first validation: no checkpoint was written" in line
    assert not (tmp_path / "runs" / "train" / "exp1").exists()  # the claimed folder, empty, is given back


def test_nan_after_a_validation_keeps_best_and_a_resumable_last(shapes, tmp_path, monkeypatch, capsys):
    run = tmp_path / "r"
    on = nan_after_first_validation(monkeypatch, run)
    code, out, err = cvtool(capsys, "train", "--data", shapes, *ARGS, "--epochs", "3", "--json", "--out", run)
    assert code == 3 and out == ""
    line = one_line(err)
    assert "training diverged at step 10 (loss nan" in line  # 9 steps an epoch: the first of epoch 2
    assert f"kept {run / 'best.safetensors'} (validation mIoU " in line
    assert f"{run / 'last.safetensors'} (step 9, resumable)" in line
    assert f"--resume {run} --lr 0.001" in line
    best = ckpt_io.load(run / "best.safetensors")
    assert all(np.isfinite(v).all() for v in best.params.values())
    last = ckpt_io.load(run / "last.safetensors")
    assert last.train_state["run"]["step"] == 9 and last.optim_state
    on["nan"] = False  # the last good state resumes, at a lower --lr
    code, out, err = cvtool(capsys, "train", "--resume", run, "--lr", "0.001", "--workers", "1", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["epochs"] == 3 and doc["steps"] == 27, err


@pytest.mark.slow
def test_nan_in_a_time_driven_run_keeps_best(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the fingerprint cache: runs/.cache
    data = make_set(tmp_path / "data", hw=(32, 32))
    run = tmp_path / "r"
    nan_after_first_validation(monkeypatch, run)
    monkeypatch.setattr("cvtool.cli.train.process_age", lambda: 0.0)  # the budget starts now, not at pytest's start
    monkeypatch.setattr("cvtool.train.loop.write_curves", lambda *a, **k: None)  # ~1 s a plot here: steps between
    code, out, err = cvtool(capsys, "train", "--data", data, "--time", "8", "--img-size", "32", "-b", "2",
                            "--width", "4", "--depth", "1", "--workers", "1", "--json", "--out", run)
    assert code == 3 and out == "", out[:400]
    line = one_line(err)
    assert "training diverged at step " in line and "(loss nan" in line and "lower --lr" in line
    assert f"kept {run / 'best.safetensors'}" in line and "--resume" not in line  # a resume keeps the plan's lr
    assert ckpt_io.load(run / "best.safetensors").train_state["plan"]
    assert (run / "plan.json").is_file() and (run / "metrics.csv").is_file()


def test_check_loss_rule(tmp_path):
    y = np.zeros((2, 4, 4), np.int64)
    check_loss(3.0, y, step=1, lr=0.1, peak_lr=0.1, dice=1.0, out_dir=tmp_path)  # fine
    check_loss(DIVERGED + 1.0, y, step=1, lr=0.1, peak_lr=0.1, dice=1.0, out_dir=tmp_path)  # the Dice term's room
    for bad in (DIVERGED + 1.5, float("inf"), float("nan")):
        with pytest.raises(TrainingDiverged, match="training diverged at step 7") as e:
            check_loss(bad, y, step=7, lr=0.1, peak_lr=0.1, dice=1.0, out_dir=tmp_path)
        assert e.value.exit_code == 3
    with pytest.raises(DataError, match="every mask pixel of the batch is 255"):  # no labelled pixel: the data's
        check_loss(float("nan"), np.full((2, 4, 4), 255), step=3, lr=0.1, peak_lr=0.1, dice=1.0, out_dir=tmp_path)


# ---------------------------------------------------------------- 2-4. classes.json, file names, empty folders

def refused(capsys, data: Path, *words: str) -> str:
    code, out, err = cvtool(capsys, "train", "--data", data, "--epochs", "1", *SMALL, "--json", "--out",
                            data.parent / "run")
    assert code == 2 and out == ""
    line = one_line(err)
    for w in words:
        assert w in line, line
    assert not (data.parent / "run").exists()  # refused before anything is written
    return line


# The file's own format rules are tested on the core (tests/test_data_formats.py); here the CLI's one line for
# what only the whole folder shows (names vs mask values), a file that is not JSON, and a folder in its place.
@pytest.mark.parametrize("text,words", [
    ("{oops", ["not valid JSON", "line 1, column 2"]),
    ('["bg", "fg", "cat", "dog"]', ["names 4 classes but no mask holds a value above 1", "'cat', 'dog' would never"]),
    ('["bg"]', ["mask values 1 are not classes 0..0", "classes.json names 1 classes"]),
    ("DIR", ["classes.json: not a file"]),
])
def test_malformed_classes_json_is_one_line_naming_it(tmp_path, capsys, text, words):
    data = make_set(tmp_path / "data", n=4, hw=(32, 32))  # masks 0/1
    if text == "DIR":
        (data / "classes.json").mkdir()
    else:
        (data / "classes.json").write_text(text)
    line = refused(capsys, data, "classes.json", *words)
    assert str(data) in line


@pytest.mark.parametrize("sub,other", [("images", "im0.jpg"), ("masks", "im0.tif")])
def test_one_stem_two_extensions_is_refused_naming_both(tmp_path, capsys, sub, other):
    data = make_set(tmp_path / "data", n=4, hw=(32, 32))
    with Image.open(data / sub / "im0.png") as im:
        im.save(data / sub / other)
    refused(capsys, data, f"{data / sub}: two files named 'im0'", other, "im0.png")


@pytest.mark.parametrize("case,words", [
    ("empty images", ["images: no images (looked for .png"]),
    ("empty masks", ["masks: no masks for the 4 images"]),
    ("none paired", ["none of its 4 images has a mask of the same name", "im0_mask.png"]),
    ("one missing", ["im2.png: image without a mask (no mask file named 'im2.*')"]),
])
def test_empty_folders_and_unpaired_images_are_one_line(tmp_path, capsys, case, words):
    data = make_set(tmp_path / "data", n=4, hw=(32, 32))
    if case == "empty images":
        shutil.rmtree(data / "images")
        (data / "images").mkdir()
    elif case == "empty masks":
        shutil.rmtree(data / "masks")
        (data / "masks").mkdir()
    elif case == "none paired":
        for p in list((data / "masks").iterdir()):
            p.rename(p.with_name(p.stem + "_mask.png"))
    else:
        (data / "masks" / "im2.png").unlink()
    refused(capsys, data, *words)


# ---------------------------------------------------------------- 5-6. segment: its --out, a foreign ONNX model

@pytest.fixture(scope="module")
def gray_model(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "m.safetensors", in_channels=1, num_classes=3)


@pytest.fixture(scope="module")
def gray_image(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("img") / "g.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24), dtype=np.uint8)).save(p)
    return p


def test_segment_unwritable_out_is_one_line_exit_2(gray_model, gray_image, tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    for out in (blocker, blocker / "sub"):
        code, stdout, err = cvtool(capsys, "segment", gray_image, "-m", gray_model, "--backend", "numpy", "--out", out)
        assert code == 2 and stdout == "" and "cannot write into" in one_line(err), err
    assert blocker.read_text() == "keep me"
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)  # as root this alone does not stop writes: refuse temp files there as the OS would
    for name in ("mkstemp", "NamedTemporaryFile"):
        real = getattr(tempfile, name)

        def deny(*a, _real=real, **k):
            if Path(k.get("dir") or ".").resolve() == locked.resolve():
                raise PermissionError(13, "Permission denied")
            return _real(*a, **k)

        monkeypatch.setattr(tempfile, name, deny)
    code, stdout, err = cvtool(capsys, "segment", gray_image, "-m", gray_model, "--backend", "numpy", "--out", locked)
    assert code == 2 and f"cannot write into {locked}: Permission denied" in one_line(err)
    assert list(locked.iterdir()) == []
    locked.chmod(0o755)


def foreign_onnx(path: Path, meta: dict | None = None) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 4, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y]))
    if meta:
        helper.set_model_props(model, meta)
    onnx.checker.check_model(model)  # a valid ONNX file
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("meta,words", [
    (None, ["is an ONNX model but not a cvtool model: it has no 'cvtool' metadata", "spec, classes"]),
    ({"producer": "someone"}, ["no 'cvtool' metadata"]),
    ({"cvtool": "not json"}, ["not a cvtool model: its 'cvtool' metadata is not a JSON object"]),
    ({"cvtool": json.dumps({"classes": ["a"]})}, ["its 'cvtool' metadata has no 'spec'"]),
])
@pytest.mark.parametrize("backend", ["numpy", "ort"])
def test_a_foreign_onnx_model_is_one_line(gray_image, tmp_path, capsys, meta, words, backend):
    path = foreign_onnx(tmp_path / "relu.onnx", meta)
    code, out, err = cvtool(capsys, "segment", gray_image, "-m", path, "--backend", backend, "--out", tmp_path / "o")
    assert code == 2 and out == ""
    line = one_line(err)
    assert str(path) in line and "cvtool export CHECKPOINT" in line
    for w in words:
        assert w in line, line
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- 7. --resume on other data

def add_a_class(data: Path) -> None:
    """The same folder, now with 3 classes (value 2 in every mask)."""
    for p in (data / "masks").iterdir():
        m = read_mask(p)
        m[0, :2] = 2
        Image.fromarray(m).save(p)


def test_resume_on_other_data_is_refused_and_writes_nothing(tmp_path, capsys):
    data, other = make_set(tmp_path / "data", n=8, hw=(32, 32)), make_set(tmp_path / "other", n=8, hw=(32, 32), seed=3)
    run = tmp_path / "r"
    code, _, err = cvtool(capsys, "train", "--data", data, "--epochs", "1", *SMALL, "--val-split", "0.25", "--json",
                          "--out", run)
    assert code == 0, err
    before = snapshot(run)
    code, out, err = cvtool(capsys, "train", "--resume", run, "--data", other, "--epochs", "2", "--json")
    assert code == 2 and out == "" and f"--data {other} is not the data {run / 'last.safetensors'} was trained on" \
        in one_line(err)
    assert snapshot(run) == before
    code, _, err = cvtool(capsys, "train", "--resume", run, "--data", str(data) + "/", "--epochs", "2", "--json")
    assert code == 0, err  # the same folder, written otherwise, is the same data
    before = snapshot(run)
    add_a_class(data)  # the checkpoint's own folder, changed under it
    code, out, err = cvtool(capsys, "train", "--resume", run, "--epochs", "3", "--json")
    assert code == 2 and out == ""
    assert "the checkpoint's net takes 1 channels and 2 classes, the data has 1 and 3" in one_line(err)
    assert snapshot(run) == before  # nothing overwritten


def test_resume_of_a_time_driven_run_on_other_data_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    data, other = make_set(tmp_path / "data", hw=(32, 32)), make_set(tmp_path / "other", hw=(32, 32), seed=4)
    run = tmp_path / "run"
    count = {"n": 0}

    def stop_after_two():
        count["n"] += 1
        return count["n"] > 2

    cfg = TrainConfig(data=str(data), time_budget=30.0, width=4, depth=1)
    res = train_timed_small(cfg, run, stop_after_two)
    assert res["status"] == "interrupted"
    before = snapshot(run)
    code, out, err = cvtool(capsys, "train", "--resume", run, "--data", other, "--json")
    assert code == 2 and out == "" and "is not the data" in one_line(err)
    add_a_class(data)
    (data / "classes.json").write_text('["bg", "disc", "edge"]')
    code, out, err = cvtool(capsys, "train", "--resume", run, "--json")
    assert code == 2 and out == "" and "1 channels and 2 classes, the data has 1 and 3" in one_line(err)
    assert snapshot(run) == before


def train_timed_small(cfg, run: Path, should_stop):
    from cvtool.train.loop import train

    return train(cfg, trainer_factory(), run, planned_run=True, **FakeClock(0.25).start(), should_stop=should_stop,
                       overrides={"crop": 32, "batch_size": 2, "width": 4, "depth": 1})


# ---------------------------------------------------------------- 8. 16-bit grayscale and CMYK images

def sixteen_bit(path: Path, a: np.ndarray) -> Path:
    Image.fromarray(a.astype(np.uint16)).save(path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    return path


def cmyk(path: Path, a: np.ndarray) -> Path:
    Image.frombytes("CMYK", (a.shape[1], a.shape[0]), np.ascontiguousarray(a, np.uint8).tobytes()).save(path, quality=100)
    return path


def cmyk_rule(c: np.ndarray) -> np.ndarray:
    """The documented conversion: R = round((255 - C)(255 - K) / 255), G and B likewise from M and Y."""
    c = c.astype(np.float64)
    return np.rint((255 - c[..., :3]) * (255 - c[..., 3:]) / 255).astype(np.uint8)


def cmyk_blocks(h: int = 16, w: int = 24, seed: int = 0) -> np.ndarray:
    """8x8 flat blocks of random CMYK: JPEG keeps them to the value."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 256, (h // 8, w // 8, 4)), np.ones((8, 8, 1))).astype(np.uint8)


def test_sixteen_bit_and_cmyk_images_map_by_the_stated_rule(tmp_path):
    v = np.array([[0, 255, 256, 4095], [32768, 65280, 65534, 65535]])
    np.testing.assert_array_equal(read_image(sixteen_bit(tmp_path / "g.png", v))[..., 0],
                                  [[0, 0, 1, 15], [128, 255, 255, 255]])  # value >> 8
    c = cmyk_blocks()
    c[:8, :8] = (0, 0, 0, 0)  # white
    c[:8, 8:16] = (255, 0, 0, 0)  # cyan
    c[:8, 16:] = (0, 128, 0, 64)
    want = cmyk_rule(c)
    assert want[0, 0].tolist() == [255, 255, 255] and want[0, 8].tolist() == [0, 255, 255]
    assert want[0, 16].tolist() == [191, 95, 191]  # 255 * 191 / 255, 127 * 191 / 255, 255 * 191 / 255
    np.testing.assert_array_equal(read_image(cmyk(tmp_path / "c.tif", c)), want)  # lossless
    np.testing.assert_allclose(read_image(cmyk(tmp_path / "c.jpg", c)), want, atol=2)  # JPEG: within rounding


def test_train_accepts_sixteen_bit_and_cmyk_images(tmp_path, capsys):
    rng = np.random.default_rng(1)
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    raw = {}
    for k in range(8):
        m = np.zeros((16, 24), np.uint8)
        m[4:12, 8 * (k % 3):8 * (k % 3) + 8] = 1
        if k % 2:
            raw[k] = rng.integers(0, 65536, (16, 24))
            sixteen_bit(data / "images" / f"im{k}.png", raw[k])
        else:
            raw[k] = cmyk_blocks(seed=k)
            cmyk(data / "images" / f"im{k}.jpg", raw[k])
        Image.fromarray(m).save(data / "masks" / f"im{k}.png")
    tr, _, info = open_datasets(str(data), val_split=0)
    assert info.in_channels == 3
    assert any("4 16-bit images read as 8-bit: value >> 8" in n for n in info.notes)
    assert any("4 CMYK images converted to RGB" in n for n in info.notes)
    for i in range(len(tr)):
        s = tr[i]
        k = int(s.name[2:])
        want = np.repeat((raw[k] >> 8)[..., None], 3, axis=2) if k % 2 else cmyk_rule(raw[k])
        np.testing.assert_allclose(s.image.transpose(1, 2, 0) * 255, want, atol=0.01 if k % 2 else 2.01)
    code, _, err = cvtool(capsys, "train", "--data", data, "--epochs", "1", *SMALL, "--val-split", "0.25",
                            "--out", tmp_path / "run")
    assert code == 0, err
    assert "note: 4 16-bit images read as 8-bit" in err and "note: 4 CMYK images converted to RGB" in err
    assert ckpt_io.load(tmp_path / "run" / "best.safetensors").spec.in_channels == 3


def test_segment_treats_sixteen_bit_and_cmyk_as_their_8_bit_rgb_equivalents(gray_model, tmp_path, capsys):
    rgb_model = tiny_checkpoint(tmp_path / "rgb.safetensors", in_channels=3, num_classes=3)
    src, ref = tmp_path / "src", tmp_path / "ref"
    src.mkdir()
    ref.mkdir()
    v = np.random.default_rng(2).integers(0, 65536, (20, 28))
    sixteen_bit(src / "g16.png", v)
    Image.fromarray((v >> 8).astype(np.uint8)).save(ref / "g16.png")
    c = cmyk_blocks(24, 32, seed=5)
    for suffix in (".jpg", ".tif"):
        cmyk(src / f"c{suffix[1:]}{suffix}", c)
        with Image.open(src / f"c{suffix[1:]}{suffix}") as im:  # what the file decodes to, CMYK
            Image.fromarray(cmyk_rule(np.asarray(im))).save(ref / f"c{suffix[1:]}.png")
    for model, names in ((gray_model, ["g16"]), (rgb_model, ["cjpg", "ctif"])):
        for folder in (src, ref):
            files = [next(folder.glob(f"{n}.*")) for n in names]
            code, _, err = cvtool(capsys, "segment", *files, "-m", model, "--backend", "numpy", "--out",
                                    tmp_path / "out" / folder.name, "--json")
            assert code == 0, err
        for n in names:
            got, want = (read_mask(tmp_path / "out" / f / f"{n}_mask.png") for f in ("src", "ref"))
            assert got.shape == want.shape and (got == want).all(), n
