"""`cvtool data convert SRC --to DIR`: COCO / YOLO -> the folder format, read back to the same masks; refusals
leave nothing behind; and `train --data` on a COCO export directly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, shared_dataset
from PIL import Image
from test_coco import H, W, box, coco_doc, cvat, image, poly, runs

from cvtool.data import open_datasets

TIMES = {"seconds", "val_seconds"}  # timings: the run's own, never equal twice

pytest.importorskip("pycocotools")

CAT = {"category_id": 3, "segmentation": [poly(1, 1, 5, 4)]}  # class 1 on x 1..4, y 1..3
DOG = {"category_id": 7, "segmentation": [poly(0, 4, 10, 8)]}  # class 2 on the lower half
CROWD = {"category_id": 7, "iscrowd": 1, "segmentation": {"size": [H, W], "counts": runs(box(8, 0, 10, 4))}}


def expected(*parts: tuple[np.ndarray, int]) -> np.ndarray:
    m = np.zeros((H, W), np.int64)
    for where, k in parts:
        m[where] = k
    return m


WANT = {"a": expected((box(1, 1, 5, 4), 1), (box(8, 0, 10, 4), 255)), "b": expected((box(0, 4, 10, 8), 2)),
        "c": expected()}


def roboflow(root: Path) -> Path:
    """train/ (a, b) and valid/ (c, empty) with _annotations.coco.json beside the images."""
    for split, anns in (("train", {"a.jpg": [CAT, CROWD], "b.jpg": [DOG]}), ("valid", {"c.jpg": []})):
        for n in anns:
            image(root / split / n)
        (root / split / "_annotations.coco.json").write_text(json.dumps(coco_doc(anns)))
    return root


def read_back(folder: Path) -> tuple[dict[str, np.ndarray], list[str], int]:
    train, val, info = open_datasets(str(folder), val_split=0.0)
    assert info.format == "folder"
    return {s.name: s.mask for ds in (train, val) for s in (ds[i] for i in range(len(ds)))}, info.classes, len(val)


def test_coco_with_a_split_becomes_train_and_val_folders(tmp_path, capsys):
    src, dst = roboflow(tmp_path / "src"), tmp_path / "out"
    code, out, err = cli(capsys, "data", "convert", str(src), "--to", str(dst), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["parts"] == {"train": 2, "val": 1} and doc["format"] == "coco"
    assert doc["classes"] == ["background", "cat", "dog"] and doc["ignored_pixels"] == 8
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file()) == [
        "classes.json", "train/images/a.jpg", "train/images/b.jpg", "train/masks/a.png", "train/masks/b.png",
        "val/images/c.jpg", "val/masks/c.png"]
    assert (dst / "train/images/a.jpg").read_bytes() == (src / "train/a.jpg").read_bytes()  # copied, not re-encoded
    assert Image.open(dst / "train/masks/a.png").mode == "P"
    masks, classes, n_val = read_back(dst)
    assert classes == ["background", "cat", "dog"] and n_val == 1
    for name, want in WANT.items():
        assert np.array_equal(masks[name], want), name
    assert json.loads((dst / "classes.json").read_text())["colors"][:3] == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]


def test_yolo_without_a_split_becomes_one_folder(tmp_path, capsys):
    src = tmp_path / "src"
    for name, text in (("a", "0 0.1 0.125 0.5 0.125 0.5 0.5 0.1 0.5\n"), ("b", "")):
        image(src / "images" / f"{name}.png")
        (src / "labels").mkdir(exist_ok=True)
        (src / "labels" / f"{name}.txt").write_text(text)
    (src / "data.yaml").write_text("names: [cat]\n")
    code, out, err = cli(capsys, "data", "convert", str(src), "--to", str(tmp_path / "out"))
    assert code == 0, err
    assert "converted yolo dataset" in out and "one folder" in out
    masks, classes, n_val = read_back(tmp_path / "out")
    assert classes == ["background", "cat"] and n_val == 0
    assert np.array_equal(masks["a"], expected((box(1, 1, 5, 4), 1))) and not masks["b"].any()


def test_refuses_a_non_empty_target_and_touches_nothing(tmp_path, capsys):
    src, dst = roboflow(tmp_path / "src"), tmp_path / "out"
    dst.mkdir()
    (dst / "mine.txt").write_text("keep me")
    code, out, err = cli(capsys, "data", "convert", str(src), "--to", str(dst))
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and "out already exists and is not empty" in lines[0]
    assert [p.name for p in dst.iterdir()] == ["mine.txt"] and (dst / "mine.txt").read_text() == "keep me"


def test_an_empty_target_folder_is_used(tmp_path, capsys):
    src, dst = roboflow(tmp_path / "src"), tmp_path / "out"
    dst.mkdir()
    code, _, err = cli(capsys, "data", "convert", str(src), "--to", str(dst))
    assert code == 0, err
    assert (dst / "classes.json").is_file()


def test_a_failure_half_way_leaves_no_folder(tmp_path, capsys):
    # b's file is wider than its JSON says: found when b is rasterised, after a was written
    src = roboflow(tmp_path / "src")
    image(src / "train" / "b.jpg", (H, W + 2))
    code, out, err = cli(capsys, "data", "convert", str(src), "--to", str(tmp_path / "out"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "image 'b.jpg' is 10x8 there but the file" in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]  # no out/, no temp folder beside it


@pytest.mark.slow
def test_train_on_a_coco_export_directly(tmp_path, capsys):
    src = cvat(tmp_path / "src", {"x.png": [DOG], "y.png": [], "z.png": [CAT, CROWD]})
    assert open_datasets(str(src), val_split=0.34)[1][0].name == "z"  # the seed-0 hold-out: the cat and the crowd
    code, out, err = cli(capsys, "train", "--data", str(src), "--backend", "numpy", "--epochs", "1",
                         "--batch-size", "2", "--img-size", "16", "--width", "4", "--depth", "1", "--workers", "1",
                         "--val-split", "0.34", "--json", "--out", str(tmp_path / "run"))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["classes"] == ["background", "cat", "dog"]
    # the confusion matrix's rows are z's labelled pixels: 80 - 12 cat - 8 crowd (ignored) background, 12 cat
    assert np.asarray(doc["confusion"]).sum(axis=1).tolist() == [60, 12, 0]


def exporter():
    """benchmarks/label_formats.py as a module (its export() writes a folder dataset as COCO or YOLO)."""
    import importlib.util

    path = Path(__file__).parents[1] / "benchmarks" / "label_formats.py"
    spec = importlib.util.spec_from_file_location("label_formats", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["polygons", "yolo"])
def test_training_on_an_export_is_training_on_the_folder(tmp_path, capsys, fmt):
    """The same images and masks, so the same run: one numpy epoch on the synthetic folder and on its COCO polygon
    (YOLO) export gives the same losses and IoUs to the last digit."""
    code, _, err = cli(capsys, "data", "synth", "--out", str(tmp_path / "folder"), "-n", "6", "--size", "32")
    assert code == 0, err
    exporter().export(tmp_path / "folder", tmp_path / fmt, fmt)
    runs = {}
    for name in ("folder", fmt):
        code, out, err = cli(capsys, "train", "--data", str(tmp_path / name), "--backend", "numpy", "--epochs", "1",
                             "--batch-size", "2", "--img-size", "16", "--width", "4", "--depth", "1", "--workers",
                             "1", "--val-split", "0.34", "--json", "--out", str(tmp_path / f"run_{name}"))
        assert code == 0, err
        runs[name] = json.loads(out)
    a, b = runs["folder"], runs[fmt]
    assert {k: v for k, v in a["final"].items() if k not in TIMES} == {k: v for k, v in b["final"].items()
                                                                       if k not in TIMES}
    assert a["iou"] == b["iou"] and a["confusion"] == b["confusion"] and a["classes"] == b["classes"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["rle", "polygons", "yolo"])
def test_real_masks_exported_and_read_back(tmp_path, fmt):
    """benchmarks/label_formats.py's exports of real trimaps (COCO RLE, COCO polygons traced along the pixel edges,
    YOLO polygons; 255 as iscrowd in COCO) read back to the PNG masks exactly: the folder reader is the oracle.
    YOLO cannot say 'ignore': its 255 pixels come back as background."""
    pets = shared_dataset("oxford_pets3")
    n, n_labels = exporter().export(pets, tmp_path / fmt, fmt, limit=6)
    folder = open_datasets(str(pets), val_split=0.0)[0]
    ds, _, info = open_datasets(str(tmp_path / fmt), val_split=0.0)
    assert len(ds) == n == 6 and n_labels >= 6 and info.format == ("yolo" if fmt == "yolo" else "coco")
    want = {folder[i].name: folder[i].mask for i in range(6)}
    for j in range(len(ds)):
        s = ds[j]
        w = np.where(want[s.name] == 255, 0, want[s.name]) if fmt == "yolo" else want[s.name]
        assert np.array_equal(s.mask, w), s.name
        assert (255 in s.mask) == (fmt != "yolo")


def test_same_stem_in_two_folders_keeps_both(tmp_path, capsys):
    # CVAT with subsets: images/a/001.png and images/b/001.png; one would overwrite the other under its stem
    root = cvat(tmp_path / "src", {"a/001.png": [CAT], "b/001.png": [DOG]})
    train = open_datasets(str(root), val_split=0.0)[0]
    assert sorted(train[i].name for i in range(len(train))) == ["a__001", "b__001"]
    code, _, err = cli(capsys, "data", "convert", str(root), "--to", str(tmp_path / "out"))
    assert code == 0, err
    masks, _, _ = read_back(tmp_path / "out")
    assert np.array_equal(masks["a__001"], WANT["a"] * (WANT["a"] == 1)) and np.array_equal(masks["b__001"], WANT["b"])
