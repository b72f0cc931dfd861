"""YOLO segmentation labels read as masks: normalised polygons on hand-checked pixels, holes, data.yaml names,
the Ultralytics and Roboflow layouts, images without labels, and the refusals (one line naming the file, exit 2).
Expected pixels follow cvtool.data.labels' rule (a pixel is in when its centre is), worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from PIL import Image
from test_coco import H, W, box  # the same 8x10 images and hand-drawn boxes

from cvtool.data import check_dataset, open_datasets
from cvtool.data.yolo import label_path
from cvtool.errors import DataError

pytest.importorskip("pycocotools")
pytest.importorskip("yaml")

def line(c: int, *xy: float) -> str:
    """A label line from pixel coordinates: x / W, y / H."""
    return " ".join([str(c)] + [f"{v / (W if k % 2 == 0 else H):.6f}" for k, v in enumerate(xy)])


def rect(c, x0, y0, x1, y1) -> str:
    return line(c, x0, y0, x1, y0, x1, y1, x0, y1)


def write(root: Path, labels: dict[str, list[str] | None], split: str = "", yaml: str | None = None) -> Path:
    """root/images[/split]/<name>.png + root/labels[/split]/<name>.txt (None: no label file), data.yaml."""
    for name, lines in labels.items():
        img = root / "images" / split / f"{name}.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((H, W, 3), 40, np.uint8)).save(img)
        if lines is not None:
            lab = label_path(img)
            lab.parent.mkdir(parents=True, exist_ok=True)
            lab.write_text("\n".join(lines) + "\n")
    if yaml is not None:
        (root / "data.yaml").write_text(yaml)
    return root


NAMES = "names: [cat, dog]\n"


def masks(root: Path) -> dict[str, np.ndarray]:
    train, val, info = open_datasets(str(root), val_split=0.0)
    assert info.format == "yolo"
    return {s.name: s.mask for ds in (train, val) for s in (ds[i] for i in range(len(ds)))}


def test_label_path_is_ultralytics_rule():
    assert label_path(Path("d/images/train/a.jpg")) == Path("d/labels/train/a.txt")
    assert label_path(Path("images/x/images/b.png")) == Path("images/x/labels/b.txt")  # the last images/


def test_rectangle_and_class_shift(tmp_path):
    m = masks(write(tmp_path, {"a": [rect(1, 1, 1, 5, 4)]}, yaml=NAMES))["a"]
    want = np.zeros((H, W), np.int64)
    want[box(1, 1, 5, 4)] = 2  # YOLO class 1 (dog) is class 2: 0 is the background
    assert np.array_equal(m, want)


def test_keyhole_polygon_has_its_hole(tmp_path):
    keyhole = [1, 1, 7, 1, 7, 7, 1, 7, 1, 4, 3, 4, 3, 5, 5, 5, 5, 3, 3, 3, 3, 4, 1, 4]
    m = masks(write(tmp_path, {"a": [line(0, *keyhole)]}, yaml=NAMES))["a"]
    assert np.array_equal(m == 1, box(1, 1, 7, 7) & ~box(3, 3, 5, 5))


def test_overlap_smaller_on_top_and_missing_or_empty_label_files(tmp_path):
    root = write(tmp_path, {"a": [rect(0, 2, 2, 4, 4), rect(1, 0, 0, 8, 8)], "b": None, "c": []}, yaml=NAMES)
    train, _, info = open_datasets(str(root), val_split=0.0)
    m = {train[i].name: train[i].mask for i in range(len(train))}
    want = np.zeros((H, W), np.int64)
    want[box(0, 0, 8, 8)] = 2
    want[box(2, 2, 4, 4)] = 1
    assert np.array_equal(m["a"], want) and not m["b"].any() and not m["c"].any()
    assert any("1 images without a label file" in n for n in info.notes)
    assert any("1 empty label files" in n for n in info.notes)
    assert check_dataset(train).pixels.tolist() == [3 * H * W - 64, 4, 60]


@pytest.mark.parametrize("yaml,classes", [
    ("names: [cat, dog]\nnc: 2\n", ["background", "cat", "dog"]),
    ("names:\n  0: cat\n  1: 'dog, big'\n", ["background", "cat", "dog, big"]),
    ("names:\n  - background\n  - cell\n", ["background", "cell"]),  # a 'background' class is class 0
    (None, ["background", "class0", "class1"]),  # no names: numbered up to the largest class used
])
def test_class_names(tmp_path, yaml, classes):
    root = write(tmp_path, {"a": [rect(1, 0, 0, 2, 2)]}, yaml=yaml)
    _, _, info = open_datasets(str(root), val_split=0.0)
    assert info.classes == classes


def test_ultralytics_split_layout(tmp_path):
    write(tmp_path, {"t1": [rect(0, 0, 0, 2, 2)], "t2": []}, split="train")
    write(tmp_path, {"v1": [rect(1, 0, 0, 2, 2)]}, split="val",
          yaml="path: .\ntrain: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n")
    train, val, info = open_datasets(str(tmp_path), val_split=0.5)
    assert ([train[i].name for i in range(len(train))], [val[i].name for i in range(len(val))]) == (["t1", "t2"],
                                                                                                   ["v1"])
    assert "data.yaml" in info.split and (val[0].mask == 2).sum() == 4


def test_roboflow_layout(tmp_path):
    for split, name in (("train", "t"), ("valid", "v"), ("test", "x")):
        write(tmp_path / split, {name: [rect(0, 1, 1, 3, 3)]})
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\ntest: ../test/images\n"
                                        "nc: 1\nnames: ['cell']\nroboflow:\n  workspace: w\n  version: 2\n")
    train, val, info = open_datasets(str(tmp_path), val_split=0.0)
    assert (len(train), len(val), info.classes) == (1, 1, ["background", "cell"])
    assert any("1 images of the test split not used" in n for n in info.notes)
    assert np.array_equal(val[0].mask == 1, box(1, 1, 3, 3))


def test_folders_without_yaml(tmp_path):
    write(tmp_path / "d", {"a": [rect(0, 0, 0, 1, 1)], "b": []})
    (tmp_path / "d" / "classes.txt").write_text("leaf\n")
    train, val, info = open_datasets(str(tmp_path / "d"), val_split=0.5)
    assert (len(train), len(val), info.classes) == (1, 1, ["background", "leaf"])


@pytest.mark.parametrize("lines,yaml,words", [
    (["0 0.1 0.1 1.5 0.1 0.5 0.5"], NAMES, ["a.txt:1: coordinate 1.5 is outside the image"]),
    (["0 0.1 0.1 0.5 0.1 0.5 0.5", "5 0.1 0.1 0.5 0.1 0.5 0.5"], NAMES,
     ["a.txt:2: class 5 is an unknown category (the names list 2: 0..1)"]),
    (["0 0.5 0.5 0.2 0.2"], NAMES, ["a.txt:1: 'class cx cy w h' is a YOLO detection box, not a polygon"]),
    (["0 0.1 0.1 0.5 0.1 0.5"], NAMES, ["a.txt:1: 5 coordinates; a polygon needs x y pairs"]),
    (["cat 0.1 0.1 0.5 0.1 0.5 0.5"], NAMES, ["a.txt:1: expected numbers"]),
    (["0 0.1 0.1 0.5 0.1 0.5 0.5"], "names: [cat, dog\n", ["data.yaml: not valid YAML"]),
    (["0 0.1 0.1 0.5 0.1 0.5 0.5"], "names: [cat]\nnc: 2\n", ["data.yaml: nc is 2 but \"names\" lists 1 classes"]),
])
def test_refusals_one_line_naming_the_file(tmp_path, capsys, lines, yaml, words):
    root = write(tmp_path / "d", {"a": lines}, yaml=yaml)
    with pytest.raises(DataError):
        open_datasets(str(root), val_split=0.0)
    code, out, err = cli(capsys, "data", "check", str(root), "--json")
    got = err.strip().splitlines()
    assert code == 2 and out == "" and len(got) == 1 and got[0].startswith("error: ") and "Traceback" not in err
    assert str(root) in got[0]
    for w in words:
        assert w in got[0], got[0]


def test_no_label_at_all_is_refused(tmp_path, capsys):
    root = write(tmp_path / "d", {"a": None, "b": []}, yaml=NAMES)
    code, out, err = cli(capsys, "data", "check", str(root))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "none of the 2 images has a label" in err and "a.png pairs with" in err and "labels/a.txt" in err


def test_coordinates_a_rounding_beyond_0_and_1_are_the_border(tmp_path):
    text = "0 -0.0004 -0.0004 0.3 -0.0004 0.3 0.25 -0.0004 0.25\n0 0.8 0.5 1.0004 0.5 1.0004 1.0004 0.8 1.0004"
    m = masks(write(tmp_path, {"a": text.splitlines()}, yaml=NAMES))["a"]
    assert np.array_equal(m == 1, box(0, 0, 3, 2) | box(8, 4, W, H))


def test_cvat_ultralytics_export_with_image_lists(tmp_path):
    # CVAT's "Ultralytics YOLO Segmentation": data.yaml names train.txt, whose lines start from data.yaml's path
    write(tmp_path, {"f0": [rect(0, 0, 0, 3, 3)], "f1": []}, split="train")
    (tmp_path / "train.txt").write_text("images/train/f0.png\nimages/train/f1.png\n")
    (tmp_path / "data.yaml").write_text("path: .\ntrain: train.txt\nnames:\n  0: leaf\n")
    train, val, info = open_datasets(str(tmp_path), val_split=0.5)
    assert (len(train), len(val), info.classes) == (1, 1, ["background", "leaf"])
    assert sum(int((ds[i].mask == 1).sum()) for ds in (train, val) for i in range(len(ds))) == 9
