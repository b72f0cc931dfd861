"""`cvtool val MODEL DATA`: the figures against a hand-computed confusion matrix, the three backends agreeing on
one model at dataset level, val scoring exactly what `cvtool segment` writes, and every bad input (one line, exit 2).

Oracles: literal masks with their confusion matrix worked by hand; segment's mask files scored independently;
the numpy, torch and ort backends against each other.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli

import cvtool_backends as registry
from cvtool.data.io import read_image, read_mask, write_image_png, write_mask_png
from cvtool.data.loader import Sample
from cvtool.data.synth import CLASSES, COLORS, TRAIN, SynthDataset
from cvtool.metrics import confusion_matrix
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.evaluate import evaluate, summary, worst_panel
from cvtool.model.meta import ModelMeta
from cvtool.model.spec import ModelSpec, init_params

# --- the figures, on literal masks -----------------------------------------------------------------

# Two images; the "model" predicts the class written into each pixel's grey value (50 per class).
PRED_A, TRUE_A = [[0, 1, 1], [2, 0, 1]], [[0, 1, 2], [255, 0, 0]]  # the ignored pixel counts nowhere
PRED_B, TRUE_B = [[2, 0], [0, 1]], [[2, 2], [0, 1]]
# (truth, prediction) kept: A (0,0) (1,1) (2,1) (0,0) (0,1); B (2,2) (2,0) (0,0) (1,1)
CM = [[3, 1, 0, 0],
      [0, 2, 0, 0],
      [1, 1, 1, 0],
      [0, 0, 0, 0]]  # class 3: in neither masks nor predictions


class Literal:
    """A dataset of the two literal images (grey value = 50 x the predicted class)."""

    ignore_index = 255

    def __init__(self):
        self.items = [("a", PRED_A, TRUE_A), ("b", PRED_B, TRUE_B)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        name, pred, true = self.items[i]
        return Sample(np.array(pred, np.float32)[None] * 50 / 255, np.array(true, np.int64), name)


def grey_model(x: np.ndarray) -> np.ndarray:
    """x (N, 1, H, W) = grey / 255 -> one-hot logits (N, 4, H, W) of class round(grey / 50)."""
    k = np.rint(x[:, 0] * 255 / 50).astype(np.int64)
    return (np.arange(4)[None, :, None, None] == k[:, None]).astype(np.float32)


def test_figures_against_a_hand_computed_confusion_matrix():
    spec = ModelSpec(in_channels=1, num_classes=4, width=4, depth=1)
    meta = ModelMeta([f"c{k}" for k in range(4)], COLORS, [0.0], [1.0])
    ev = evaluate(grey_model, Literal(), spec, meta, tta="none", worst=1)
    np.testing.assert_array_equal(ev.cm, CM)
    s = summary(ev.cm, meta.classes)
    assert s["pixel_accuracy"] == pytest.approx(6 / 9)
    # IoU = TP / (TP + FP + FN): c0 3 / (3 + 1 + 1), c1 2 / (2 + 2 + 0), c2 1 / (1 + 0 + 2)
    assert [c["iou"] for c in s["classes"][:3]] == pytest.approx([3 / 5, 1 / 2, 1 / 3])
    # Dice = 2 TP / (2 TP + FP + FN): 6/8, 4/6, 2/4
    assert [c["dice"] for c in s["classes"][:3]] == pytest.approx([6 / 8, 4 / 6, 2 / 4])
    assert s["classes"][3]["iou"] is None and s["classes"][3]["dice"] is None and s["absent"] == ["c3"]
    assert s["mean_iou"] == pytest.approx((3 / 5 + 1 / 2 + 1 / 3) / 3)  # over the 3 classes that occur, not 4
    assert s["mean_dice"] == pytest.approx((6 / 8 + 4 / 6 + 2 / 4) / 3)
    assert [c["pixels"] for c in s["classes"]] == [4, 2, 3, 0] and [c["predicted"] for c in s["classes"]] == [4, 4, 1, 0]
    # per image: A [[2,1,0],[0,1,0],[0,1,0]] -> IoU 2/3, 1/3, 0; B -> 1/2, 1, 1/2
    a, b = ev.images
    assert (a.pixels, a.pixel_accuracy, a.mean_iou) == (5, pytest.approx(3 / 5), pytest.approx(1 / 3))
    assert (b.pixels, b.pixel_accuracy, b.mean_iou) == (4, pytest.approx(3 / 4), pytest.approx(2 / 3))
    assert [w.score.name for w in ev.worst] == ["a"]
    np.testing.assert_array_equal(ev.worst[0].pred, PRED_A)


def test_worst_panel_shows_truth_prediction_and_errors():
    img = np.full((2, 3, 3), 100, np.uint8)
    truth, pred = np.array(TRUE_A), np.array(PRED_A)
    p = worst_panel(img, truth, pred, COLORS, alpha=1.0, gap=1)
    assert p.shape == (2, 3 * 3 + 2, 3)
    np.testing.assert_array_equal(p[0, 1], COLORS[1])  # truth panel: class 1 painted
    np.testing.assert_array_equal(p[0, 4 + 2], COLORS[1])  # prediction panel: (0, 2) predicted 1
    errors = p[:, 8:]
    np.testing.assert_array_equal(errors[0, 2], [255, 0, 0])  # true 2, predicted 1
    np.testing.assert_array_equal(errors[1, 0], [128, 128, 128])  # ignored
    np.testing.assert_array_equal(errors[0, 0], [40, 40, 40])  # right: the image dimmed


# --- a tiny trained model on a small synthetic folder ----------------------------------------------

def write_folder(root: Path, sizes: tuple[int, ...], *, classes_json: bool = True) -> Path:
    """Synthetic shapes as a folder dataset: images/, palette masks/, classes.json (cvtool/data/synth.py)."""
    k = 0
    for size in sizes:
        ds = SynthDataset(1, size, seed=7 + k, stream=TRAIN)
        img, mask = ds.generate(0)
        write_image_png(root / "images" / f"im{k}.png", img)
        write_mask_png(root / "masks" / f"im{k}.png", mask, COLORS)
        k += 1
    if classes_json:
        (root / "classes.json").write_text(json.dumps({"classes": CLASSES, "colors": [list(c) for c in COLORS]}))
    return root


SIZES = (40, 48, 96)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("data"), SIZES)


def save_model(path: Path, params, spec, *, scale=0.75, tta="flip", train_state=None) -> Path:
    meta = ModelMeta(list(CLASSES), [list(c) for c in COLORS], [0.5] * 3, [0.25] * 3, scale=scale, tta=tta)
    return ckpt_io.save(ckpt_io.Checkpoint(spec, params, meta, train_state=train_state or {}), path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A width-4 U-Net after 40 Adam steps on synthetic crops (the numpy trainer: a fraction of torch's start-up
    time), background weighted down so that its predictions spread over every class (unweighted, a net this short
    trained calls everything background and the figures would not depend on the path); stored with scale 0.75 and
    flip TTA, so val runs the model's resampling and test-time augmentation. (path, spec, params)."""
    from cvtool.train.optim import OptimConfig

    spec = ModelSpec(in_channels=3, num_classes=4, width=4, depth=2)
    tr = registry.get("numpy", "cpu").trainer(spec, init_params(spec, 0), optim=OptimConfig(name="adam"), seed=0,
                                              class_weights=np.array([0.15, 1, 1, 1], np.float32))
    ds = SynthDataset(16, 32, seed=1, stream=TRAIN)
    xs = np.stack([ds[i].image for i in range(16)])
    ys = np.stack([ds[i].mask for i in range(16)])
    for step in range(40):
        i = (np.arange(4) + 4 * step) % 16
        tr.step(((xs[i] - 0.5) / 0.25).astype(np.float32), ys[i], 1e-2)
    params = tr.params()
    return save_model(tmp_path_factory.mktemp("model") / "m.safetensors", params, spec), spec, params


def run_val(capsys, *args) -> dict:
    code, out, err = cli(capsys, "val", *map(str, args), "--json")
    assert code == 0, err
    return json.loads(out)


FIGURES = ("pixel_accuracy", "mean_iou", "mean_dice")


@pytest.fixture(scope="module")
def numpy_doc(trained, folder, tmp_path_factory):
    """val's figures by the numpy reference, through tiles (--tile 1 is raised to the smallest tile, so the largest
    image is cut), the model's scale and its flip TTA."""
    import contextlib
    import io

    from cvtool.cli import main

    buf = io.StringIO()  # a module-scoped fixture has no capsys: stdout caught here
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as e:
        main(["val", str(trained[0]), str(folder), "--backend", "numpy", "--tile", "1", "--json",
              "--out", str(tmp_path_factory.mktemp("numpy"))])
    assert e.value.code == 0
    return json.loads(buf.getvalue())


@pytest.mark.parametrize("backend", ["ort", pytest.param("torch", marks=pytest.mark.slow)])  # torch: ~2.4 s here
def test_numpy_torch_and_ort_give_the_same_figures(trained, folder, numpy_doc, tmp_path, capsys, backend):
    """One model, one folder: every figure of torch and ort within 1e-4 of the numpy reference's."""
    ref = numpy_doc
    assert ref["tta"] == "flip" and ref["scale"] == 0.75 and ref["images"] == len(SIZES)
    predicted = np.array(ref["confusion"]).sum(0)
    assert (predicted > 0.01 * predicted.sum()).sum() >= 3  # predictions spread over classes: the figures mean something
    assert max(SIZES) * 0.75 > ref["tile"]  # the largest image went through tiles
    d = run_val(capsys, trained[0], folder, "--backend", backend, "--tile", 1, "--out", tmp_path / backend)
    assert (d["tta"], d["scale"], d["tile"], d["images"]) == (ref["tta"], ref["scale"], ref["tile"], ref["images"])
    if backend == "ort":  # ORT ran this checkpoint's export (cached by the backend; conftest keeps it in tmp)
        from cvtool_backends.onnx_format.opset import newest_opset
        from cvtool_backends.ort_backend import export_cache

        _, spec, params = trained
        assert (export_cache.CACHE / f"{export_cache.key(spec, params, newest_opset())}.onnx").is_file()
    for k in FIGURES:
        assert abs(d[k] - ref[k]) <= 1e-4, k
    for c, r in zip(d["classes"], ref["classes"]):
        for k in ("iou", "dice"):
            assert (c[k] is None) == (r[k] is None) and (c[k] is None or abs(c[k] - r[k]) <= 1e-4), c
    moved = np.abs(np.array(d["confusion"]) - np.array(ref["confusion"])).sum()
    assert moved <= 1e-4 * np.array(ref["confusion"]).sum(), moved


def test_an_exported_onnx_scores_as_its_checkpoint(trained, folder, numpy_doc, tmp_path, capsys):
    """The .onnx alone (its metadata carries classes, normalisation, scale and TTA) gives the checkpoint's figures."""
    onnx_path = tmp_path / "m.onnx"
    code, _, err = cli(capsys, "export", str(trained[0]), "-o", str(onnx_path), "--no-verify")
    assert code == 0, err
    d = run_val(capsys, onnx_path, folder, "--backend", "ort", "--tile", 1, "--out", tmp_path / "o")
    assert d["kind"] == "onnx" and (d["tta"], d["scale"]) == ("flip", 0.75)
    for k in FIGURES:
        assert abs(d[k] - numpy_doc[k]) <= 1e-4, k


def test_val_scores_what_segment_writes(trained, folder, tmp_path, capsys, monkeypatch):
    """val's confusion matrix equals one computed here from segment's mask files and the truth masks (both with
    --tta dihedral, overriding the model's flip), and the run
    folder holds the same figures (metrics.json, confusion.csv, per_image.csv, the worst overlays)."""
    path, _, _ = trained
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, "segment", str(folder / "images"), "-m", str(path), "--backend", "numpy",
                       "--batch-size", "1", "--tta", "dihedral", "--out", "seg")
    assert code == 0, err
    want = sum(confusion_matrix(read_mask(tmp_path / "seg" / f"{p.stem}_mask.png"), read_mask(folder / "masks" / p.name), 4)
               for p in sorted((folder / "images").iterdir()))
    doc = run_val(capsys, path, folder, "--backend", "numpy", "--batch-size", 1, "--tta", "dihedral", "--worst", 2)
    assert doc["tta"] == "dihedral"  # --tta overrides the model's flip, in both commands
    np.testing.assert_array_equal(doc["confusion"], want)
    run = tmp_path / "runs" / "val" / "exp1"
    assert doc["out"] == str(Path("runs") / "val" / "exp1")
    assert json.loads((run / "metrics.json").read_text()) == doc
    with open(run / "confusion.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["truth \\ prediction", *CLASSES]
    assert [[int(v) for v in r[1:]] for r in rows[1:]] == want.tolist()
    with open(run / "per_image.csv") as f:
        per = list(csv.DictReader(f))
    assert [r["image"] for r in per] == [f"im{k}.png" for k in range(len(SIZES))]
    ious = {r["image"]: float(r["mean_iou"]) for r in per}
    lowest = sorted(ious, key=lambda k: (ious[k], k))[:2]
    assert [w["image"] for w in doc["worst"]] == lowest
    for w in doc["worst"]:
        h, wd = read_image(folder / "images" / w["image"]).shape[:2]
        assert read_image(tmp_path / w["overlay"]).shape == (h, 3 * wd + 8, 3)
    assert (run / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_val_gives_the_figures_of_trainings_validator(trained, folder, tmp_path, capsys):
    """The same model and images through training's validator (cvtool.train.validate.evaluate_images, what picks the
    best checkpoint) and through val: the same confusion matrix, mIoU and pixel accuracy."""
    from cvtool.data import open_datasets
    from cvtool.data.memory import to_hwc_uint8
    from cvtool.train.validate import evaluate_images

    path, spec, params = trained
    doc = run_val(capsys, path, folder, "--backend", "numpy", "--out", tmp_path / "o")
    train, _, _ = open_datasets(str(folder), val_split=0.0)
    samples = [train[i] for i in range(len(train))]
    want = evaluate_images(registry.get("numpy", "cpu").runner(spec, params), [to_hwc_uint8(s.image) for s in samples],
                           [s.mask for s in samples], spec, [0.5] * 3, [0.25] * 3, 0.75, 4, 255, "flip")
    assert want is not None and doc["confusion"] == want["confusion"]
    assert (doc["mean_iou"], doc["pixel_accuracy"]) == (want["mean_iou"], want["pixel_accuracy"])
    assert [c["iou"] for c in doc["classes"]] == want["iou"]


def test_auto_split_scores_the_held_out_part_of_the_training_folder(trained, folder, tmp_path, capsys):
    _, spec, params = trained
    remembers = save_model(tmp_path / "r.safetensors", params, spec, train_state={
        "config": {"data": str(folder), "val_split": 0.4, "seed": 3}})
    doc = run_val(capsys, remembers, folder, "--backend", "numpy", "--out", tmp_path / "o")
    assert doc["images"] == round(len(SIZES) * 0.4) and "validation part" in doc["split"]  # held out as training did
    assert any("trained on" in n for n in doc["notes"])
    every = run_val(capsys, remembers, folder, "--backend", "numpy", "--split", "all", "--out", tmp_path / "o2")
    assert every["images"] == len(SIZES)


# --- bad input: one line, exit 2; images without a mask skipped -------------------------------------

def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_images_without_a_mask_are_listed_and_skipped(trained, tmp_path, capsys):
    root = write_folder(tmp_path / "d", (40, 48, 40))
    (root / "masks" / "im1.png").unlink()
    code, out, err = cli(capsys, "val", str(trained[0]), str(root), "--backend", "numpy", "--json",
                         "--out", str(tmp_path / "o"))
    assert code == 0, err
    doc = json.loads(out)
    assert doc["images"] == 2 and doc["n_skipped"] == 1 and doc["skipped"] == [str(root / "images" / "im1.png")]
    assert "skipped 1 image(s) without a mask: im1.png" in err


def test_a_model_whose_classes_do_not_match_the_masks(trained, folder, tmp_path, capsys, monkeypatch):
    spec = ModelSpec(in_channels=3, num_classes=2, width=4, depth=2)
    meta = ModelMeta(["bg", "fg"], [[0, 0, 0], [255, 0, 0]], [0.5] * 3, [0.25] * 3)
    two = ckpt_io.save(ckpt_io.Checkpoint(spec, init_params(spec, 0), meta), tmp_path / "two.safetensors")
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "val", str(two), str(folder), "--backend", "numpy")
    assert code == 2 and out == ""
    line = one_error_line(err)
    assert "the masks hold 4 classes" in line and "the model predicts 2" in line
    assert not (tmp_path / "runs").exists()  # refused before a run folder was claimed


def test_renumbered_mask_values_that_cannot_be_the_models_classes(trained, tmp_path, capsys):
    root = tmp_path / "sparse"
    for k in range(2):
        write_image_png(root / "images" / f"{k}.png", np.full((16, 16, 3), 90, np.uint8))
        m = np.zeros((16, 16), np.uint8)
        m[4:8, 4:8] = 100  # values 0 and 100: renumbered 0, 1, but the model has 4 classes
        write_image_png(root / "masks" / f"{k}.png", m)
    code, _, err = cli(capsys, "val", str(trained[0]), str(root), "--backend", "numpy", "--out", str(tmp_path / "o"))
    assert code == 2 and "ambiguous" in one_error_line(err)


@pytest.mark.parametrize("how", ["no masks folder", "empty masks folder", "no mask of any image's name"])
def test_masks_missing_entirely(trained, tmp_path, capsys, how):
    root = write_folder(tmp_path / "d", (40,), classes_json=False)
    if how == "no masks folder":
        (root / "masks" / "im0.png").unlink()
        (root / "masks").rmdir()
    elif how == "empty masks folder":
        (root / "masks" / "im0.png").unlink()
    else:
        (root / "masks" / "im0.png").rename(root / "masks" / "other.png")
    code, _, err = cli(capsys, "val", str(trained[0]), str(root), "--backend", "numpy", "--out", str(tmp_path / "o"))
    assert code == 2
    assert "mask" in one_error_line(err)


def by_hand(spec, params, image_path: Path) -> np.ndarray:
    """The mask the numpy reference runner gives an RGB image, normalised ((x - 0.5) / 0.25) and edge-padded to the
    net's multiple here, without cvtool's inference code."""
    x = (read_image(image_path, 3).astype(np.float32) / 255 - 0.5) / 0.25
    h, w = x.shape[:2]
    m = spec.multiple
    xp = np.pad(x, ((0, -h % m), (0, -w % m), (0, 0)), mode="edge").transpose(2, 0, 1)
    return registry.get("numpy", "cpu").runner(spec, params)(xp[None])[0, :, :h, :w].argmax(0)


def test_a_voc_folder_scored_against_the_net_run_by_hand(tmp_path, capsys):
    """PASCAL VOC layout (ImageSets lists, one listed image without a mask): val's confusion matrix equals one from
    the numpy reference runner called here on each image, normalised and edge-padded by hand."""
    from PIL import Image
    from test_inference import tiny_params

    from cvtool.data.voc import VOC_CLASSES, VOC_COLORS


    root = tmp_path / "VOC2012"
    rng = np.random.default_rng(5)
    names = ["2007_000001", "2007_000002", "2007_000003", "2007_000004"]
    for k, n in enumerate(names):
        img = rng.integers(0, 256, (30 + 4 * k, 40, 3)).astype(np.uint8)
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "JPEGImages" / f"{n}.jpg", quality=95)
        if n != "2007_000004":  # listed in val.txt, no mask: skipped
            m = rng.choice([0, 12, 15], (30 + 4 * k, 40)).astype(np.uint8)
            m[0] = 255  # object boundary: ignored
            write_mask_png(root / "SegmentationClass" / f"{n}.png", m, VOC_COLORS)
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000001\n2007_000003\n")
    (sets / "val.txt").write_text("2007_000002\n2007_000004\n")
    spec = ModelSpec(in_channels=3, num_classes=21, width=4, depth=2)
    meta = ModelMeta(list(VOC_CLASSES), [list(c) for c in VOC_COLORS], [0.5] * 3, [0.25] * 3)
    params = tiny_params(spec, 0)
    path = ckpt_io.save(ckpt_io.Checkpoint(spec, params, meta), tmp_path / "voc.safetensors")
    doc = run_val(capsys, path, tmp_path, "--backend", "numpy", "--out", tmp_path / "o")
    assert doc["format"] == "voc" and doc["images"] == 3 and doc["n_skipped"] == 1
    assert Path(doc["skipped"][0]).name == "2007_000004.jpg"
    want = sum(confusion_matrix(by_hand(spec, params, root / "JPEGImages" / f"{n}.jpg"),
                                read_mask(root / "SegmentationClass" / f"{n}.png"), 21) for n in names[:3])
    np.testing.assert_array_equal(doc["confusion"], want)
    assert want.sum(0).astype(bool).sum() >= 2  # the random net predicts more than one class


def test_an_unreadable_image_stops_with_one_line_and_leaves_no_run_folder(trained, tmp_path, capsys, monkeypatch):
    root = write_folder(tmp_path / "d", (40, 48))
    png = root / "images" / "im1.png"
    png.write_bytes(png.read_bytes()[: len(png.read_bytes()) // 2])  # truncated: the header reads, the pixels do not
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "val", str(trained[0]), str(root), "--backend", "numpy")
    errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
    assert code == 2 and out == "" and "Traceback" not in err
    assert len(errors) == 1 and "im1.png" in errors[0] and err.rstrip().endswith(errors[0])  # after model: and data:
    assert not (tmp_path / "runs" / "val").exists()  # the claimed expN released, nothing half-written


def test_yolo_labels_scored_against_the_net_run_by_hand(tmp_path, capsys):
    """YOLO segmentation (images/ + labels/*.txt, data.yaml names) read directly: val's confusion matrix equals one
    from the numpy runner called by hand and the masks cvtool's YOLO reader rasterises (tested in test_yolo.py)."""
    pytest.importorskip("pycocotools")
    pytest.importorskip("yaml")
    from test_inference import tiny_params
    from test_yolo import rect

    from cvtool.data import open_datasets
    from cvtool.data.yolo import label_path

    rng = np.random.default_rng(9)
    labels = {"a": [rect(0, 1, 1, 6, 5)], "b": [rect(1, 2, 0, 9, 7), rect(0, 0, 4, 3, 8)], "c": []}  # c: no instance
    for name, lines in labels.items():
        img = tmp_path / "y" / "images" / f"{name}.png"
        write_image_png(img, rng.integers(0, 256, (8, 10, 3)).astype(np.uint8))
        label_path(img).parent.mkdir(parents=True, exist_ok=True)
        label_path(img).write_text("\n".join(lines) + "\n")
    (tmp_path / "y" / "data.yaml").write_text("names: [cat, dog]\n")
    spec = ModelSpec(in_channels=3, num_classes=3, width=4, depth=1)
    params = tiny_params(spec, 1)
    meta = ModelMeta(["background", "cat", "dog"], COLORS[:3], [0.5] * 3, [0.25] * 3)
    path = ckpt_io.save(ckpt_io.Checkpoint(spec, params, meta), tmp_path / "y.safetensors")
    doc = run_val(capsys, path, tmp_path / "y", "--backend", "numpy", "--out", tmp_path / "o")
    assert doc["format"] == "yolo" and doc["images"] == 3 and doc["n_skipped"] == 0
    train, val, _ = open_datasets(str(tmp_path / "y"), val_split=0.0)
    truth = {s.name: s.mask for s in (train[i] for i in range(len(train)))}
    assert set(np.unique(truth["b"])) == {0, 1, 2}
    want = sum(confusion_matrix(by_hand(spec, params, tmp_path / "y" / "images" / f"{n}.png"), truth[n], 3)
               for n in labels)
    np.testing.assert_array_equal(doc["confusion"], want)


def test_a_class_name_with_control_characters_prints_inert(trained, folder, tmp_path, capsys):
    """A model's class names reach the terminal through safe(): an ESC sequence in one is shown as text, not run."""
    _, spec, params = trained
    meta = ModelMeta(["background", "circle\x1b[2J", "square", "triangle"], [list(c) for c in COLORS], [0.5] * 3,
                     [0.25] * 3)
    odd = ckpt_io.save(ckpt_io.Checkpoint(spec, params, meta), tmp_path / "odd.safetensors")
    code, out, err = cli(capsys, "val", str(odd), str(folder), "--backend", "numpy", "--worst", "0",
                         "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert "\x1b" not in out + err and "circle\\x1b[2J" in out
    assert (tmp_path / "o" / "confusion.png").is_file()
