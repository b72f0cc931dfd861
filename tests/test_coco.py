"""COCO JSON read as segmentation masks: polygons, holes, RLE (both encodings), crowd regions, overlaps, empty
images, the exports' layouts, and the refusals (one line naming the file, exit 2).

Expected masks are written out by hand from the rule in cvtool.data.labels (pixel (x, y) is in a polygon when its
centre (x + 0.5, y + 0.5) is): shapes with integer corners, so no pixel centre lies on an edge. RLE inputs are
encoded here from those masks by the COCO specification (column-major runs; the string form's 5-bit groups),
not by pycocotools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from PIL import Image

from cvtool.data import check_dataset, open_datasets
from cvtool.errors import DataError

pytest.importorskip("pycocotools")

H, W = 8, 10


def box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """bool (H, W): pixels x0 <= x < x1, y0 <= y < y1 (a polygon with corners (x0, y0), (x1, y1) covers these)."""
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def poly(x0, y0, x1, y1) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


# the square 1..7 x 1..7 with the hole 3..5 x 3..5, walked as one polygon: round the outside, in along the slit
# y = 4 (no pixel centre is on it), round the hole the other way, back out along the slit
KEYHOLE = [1, 1, 7, 1, 7, 7, 1, 7, 1, 4, 3, 4, 3, 5, 5, 5, 5, 3, 3, 3, 3, 4, 1, 4]
RING = box(1, 1, 7, 7) & ~box(3, 3, 5, 5)


def runs(mask: np.ndarray) -> list[int]:
    """COCO's uncompressed RLE counts: run lengths of the column-major pixel order, starting with a 0-run."""
    flat = mask.T.ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], edges, [flat.size]])
    lengths = np.diff(bounds).tolist()
    return ([0] if flat[0] else []) + lengths


def rle_string(counts: list[int]) -> str:
    """COCO's compressed counts: from the third run on, the difference to the run two before; each value in
    little-endian 5-bit groups, bit 5 = 'more follows', plus 48 (maskApi.c rleToString)."""
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def image(path: Path, hw=(H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*hw, 3), 90, np.uint8)).save(path)


CATS = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]


def coco_doc(anns: dict[str, list[dict]], cats=CATS, hw=(H, W)) -> dict:
    """A COCO document: one image per key (file name), its annotations (category_id, segmentation, iscrowd)."""
    images, annotations = [], []
    for k, (name, lst) in enumerate(anns.items(), 1):
        images.append({"id": k, "file_name": name, "width": hw[1], "height": hw[0]})
        for a in lst:
            annotations.append({"id": len(annotations) + 1, "image_id": k, "iscrowd": 0, **a})
    return {"images": images, "annotations": annotations, "categories": cats}


def cvat(root: Path, anns: dict[str, list[dict]], **kw) -> Path:
    """CVAT's COCO export: annotations/instances_default.json + images/."""
    for name in anns:
        image(root / "images" / name)
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_default.json").write_text(json.dumps(coco_doc(anns, **kw)))
    return root


def masks(root: Path, **kw) -> dict[str, np.ndarray]:
    train, val, info = open_datasets(str(root), val_split=0.0, **kw)
    assert info.format == "coco"
    return {s.name: s.mask for ds in (train, val) for s in (ds[i] for i in range(len(ds)))}


def test_polygon_rectangle_covers_the_pixels_whose_centres_it_holds(tmp_path):
    m = masks(cvat(tmp_path, {"a.png": [{"category_id": 3, "segmentation": [poly(1, 1, 5, 4)]}]}))["a"]
    assert np.array_equal(m, box(1, 1, 5, 4).astype(np.int64))  # x 1..4, y 1..3: 12 pixels
    assert m.sum() == 12


def test_triangle_by_hand(tmp_path):
    # (0,0), (6,0), (0,6): pixel centre (x + .5, y + .5) inside when x + y + 1 < 6, i.e. x + y <= 4
    m = masks(cvat(tmp_path, {"a.png": [{"category_id": 3, "segmentation": [[0, 0, 6, 0, 0, 6]]}]}))["a"]
    want = np.array([[x + y <= 4 for x in range(W)] for y in range(H)])
    assert np.array_equal(m == 1, want)


@pytest.mark.parametrize("kind", ["keyhole polygon", "uncompressed RLE", "compressed RLE"])
def test_a_ring_with_a_hole(tmp_path, kind):
    seg = {"keyhole polygon": [KEYHOLE], "uncompressed RLE": {"size": [H, W], "counts": runs(RING)},
           "compressed RLE": {"size": [H, W], "counts": rle_string(runs(RING))}}[kind]
    m = masks(cvat(tmp_path, {"a.png": [{"category_id": 7, "segmentation": seg}]}))["a"]
    assert np.array_equal(m, np.where(RING, 2, 0))
    assert (m == 2).sum() == 36 - 4


def test_rle_helpers_by_hand():
    # the column-major order and the string encoding, checked on values worked out on paper
    m = np.zeros((3, 4), bool)
    m[1:, 0] = True  # column 0: 0, 1, 1
    m[:, 2:] = True
    assert runs(m) == [1, 2, 3, 6]
    assert rle_string([1, 2, 3, 6]) == "1234"  # small values: one group each, 48 + value
    # 40 = 8 + (1 << 5): the group 8 with 'more' (8 + 32 + 48 = 88, 'X'), then the group 1 ('1')
    assert rle_string([0, 40]) == "0X1"


def test_two_polygons_of_one_instance_are_united(tmp_path):
    seg = [poly(0, 0, 2, 2), poly(6, 4, 9, 8)]
    m = masks(cvat(tmp_path, {"a.png": [{"category_id": 3, "segmentation": seg}]}))["a"]
    assert np.array_equal(m == 1, box(0, 0, 2, 2) | box(6, 4, 9, 8))


def test_crowd_is_ignored_where_no_instance_covers_it(tmp_path):
    crowd = {"category_id": 7, "iscrowd": 1, "segmentation": {"size": [H, W], "counts": runs(box(0, 0, 6, 8))}}
    cat = {"category_id": 3, "segmentation": [poly(4, 2, 8, 5)]}
    m = masks(cvat(tmp_path, {"a.png": [cat, crowd]}))["a"]  # the crowd listed last still lies under the cat
    want = np.zeros((H, W), np.int64)
    want[box(0, 0, 6, 8)] = 255
    want[box(4, 2, 8, 5)] = 1
    assert np.array_equal(m, want)


def test_overlaps_larger_first_then_file_order(tmp_path):
    small = {"category_id": 3, "segmentation": [poly(2, 2, 4, 4)]}
    large = {"category_id": 7, "segmentation": [poly(0, 0, 8, 8)]}
    tie_a = {"category_id": 3, "segmentation": [poly(0, 0, 4, 2)]}
    tie_b = {"category_id": 7, "segmentation": [poly(2, 0, 6, 2)]}
    m = masks(cvat(tmp_path, {"a.png": [small, large], "b.png": [tie_a, tie_b]}))
    want = np.zeros((H, W), np.int64)
    want[box(0, 0, 8, 8)] = 2
    want[box(2, 2, 4, 4)] = 1  # listed first, still on top: it is smaller
    assert np.array_equal(m["a"], want)
    want = np.zeros((H, W), np.int64)
    want[box(0, 0, 4, 2)] = 1
    want[box(2, 0, 6, 2)] = 2  # same area (8 px): the later annotation wins the overlap x 2..3
    assert np.array_equal(m["b"], want)


def test_empty_image_is_background_and_categories_become_classes(tmp_path):
    cats = [{"id": 0, "name": "my-dataset", "supercategory": "none"},  # Roboflow's grouping category
            {"id": 3, "name": "cat", "supercategory": "my-dataset"}, {"id": 7, "name": "dog",
                                                                      "supercategory": "my-dataset"}]
    root = cvat(tmp_path, {"a.png": [{"category_id": 7, "segmentation": [poly(0, 0, 1, 1)]}], "b.png": []},
                cats=cats)
    train, val, info = open_datasets(str(root), val_split=0.0)
    assert info.classes == ["background", "cat", "dog"]  # ids 3, 7 -> 1, 2; id 0 dropped
    assert any("my-dataset (id 0)" in n for n in info.notes) and any("1 images without annotations" in n
                                                                     for n in info.notes)
    m = masks(root)
    assert not m["b"].any() and m["a"][0, 0] == 2 and m["a"].sum() == 2
    st = check_dataset(train)
    assert st.pixels.tolist() == [2 * H * W - 1, 0, 1] and st.present.tolist() == [2, 0, 1]


def test_background_category_is_class_0(tmp_path):
    cats = [{"id": 1, "name": "Background"}, {"id": 2, "name": "cell"}]
    anns = [{"category_id": 2, "segmentation": [poly(0, 0, 6, 6)]}, {"category_id": 1, "segmentation": [poly(0, 0, 2, 2)]}]
    train, _, info = open_datasets(str(cvat(tmp_path, {"a.png": anns}, cats=cats)), val_split=0.0)
    assert info.classes == ["background", "cell"]
    assert np.array_equal(train[0].mask == 1, box(0, 0, 6, 6) & ~box(0, 0, 2, 2))


# ------------------------------------------------------------------------------------------------ layouts

def roboflow(root: Path) -> Path:
    for split, names in (("train", ["t1.jpg", "t2.jpg"]), ("valid", ["v1.jpg"]), ("test", ["x1.jpg"])):
        doc = coco_doc({n: [{"category_id": 3, "segmentation": [poly(0, 0, 2, 2)]}] for n in names})
        for n in names:
            image(root / split / n)
        (root / split / "_annotations.coco.json").write_text(json.dumps(doc))
    return root


def label_studio(root: Path) -> Path:
    """result.json + images/; Label Studio writes file_name as images/<name> (or an upload path: found by name)."""
    doc = coco_doc({"images/a.png": [{"category_id": 3, "segmentation": [poly(0, 0, 2, 2)]}],
                    "/data/upload/1/b.png": []})
    image(root / "images" / "a.png")
    image(root / "images" / "b.png")
    (root / "result.json").write_text(json.dumps(doc))
    return root


def coco2017(root: Path) -> Path:
    """COCO's own: annotations/instances_{train,val}2017.json (+ captions, not masks), images in train2017/."""
    (root / "annotations").mkdir(parents=True)
    for split, names in (("train2017", ["1.png", "2.png", "3.png"]), ("val2017", ["9.png"])):
        for n in names:
            image(root / split / n)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            coco_doc({n: [{"category_id": 7, "segmentation": [poly(1, 1, 3, 3)]}] for n in names})))
    (root / "annotations" / "captions_train2017.json").write_text("{}")
    return root


@pytest.mark.parametrize("make,n_train,n_val,split,labelled", [
    (roboflow, 2, 1, "(train/_annotations.coco.json and valid/_annotations.coco.json)", 3 * 4),
    (label_studio, 2, 0, "held out", 4),
    (coco2017, 3, 1, "instances_train2017.json and annotations/instances_val2017.json", 4 * 4),
])
def test_layouts_detected(tmp_path, make, n_train, n_val, split, labelled):
    train, val, info = open_datasets(str(make(tmp_path)), val_split=0.0)
    assert (info.format, len(train), len(val)) == ("coco", n_train, n_val)
    assert split in info.split
    for ds in (train, val):
        check_dataset(ds)
    assert sum((ds[i].mask > 0).sum() for ds in (train, val) for i in range(len(ds))) == labelled  # 2x2 squares
    if make is roboflow:
        assert any("1 images of the test split not used" in n for n in info.notes)


def test_root_level_files_and_sizes_from_the_images(tmp_path):
    """instances_train.json / instances_val.json beside images/; images without width and height take the file's."""
    for split, name in (("train", "a.png"), ("val", "b.png")):
        image(tmp_path / "images" / name)
        doc = coco_doc({name: [{"category_id": 3, "segmentation": [poly(1, 1, 5, 4)]}]})
        for im in doc["images"]:
            del im["width"], im["height"]
        (tmp_path / f"instances_{split}.json").write_text(json.dumps(doc))
    train, val, info = open_datasets(str(tmp_path), val_split=0.0)
    assert ([train[0].name], [val[0].name]) == (["a"], ["b"]) and "instances_val.json" in info.split
    assert np.array_equal(val[0].mask == 1, box(1, 1, 5, 4))


# ----------------------------------------------------------------------------------------------- refusals

def broken(root: Path, case: str) -> Path:
    ann = {"category_id": 3, "segmentation": [poly(1, 1, 5, 4)]}
    if case == "malformed JSON":
        cvat(root, {"a.png": [ann]})
        (root / "annotations" / "instances_default.json").write_text('{"images": [}')
    elif case == "outside the image":
        cvat(root, {"a.png": [{"category_id": 3, "segmentation": [poly(1, 1, 15, 4)]}]})
    elif case == "unknown category":
        cvat(root, {"a.png": [{"category_id": 5, "segmentation": [poly(1, 1, 5, 4)]}]})
    elif case == "no segmentation":
        cvat(root, {"a.png": [{"category_id": 3, "segmentation": [], "bbox": [1, 1, 4, 3]}]})
    elif case == "RLE size":
        cvat(root, {"a.png": [{"category_id": 3, "segmentation": {"size": [4, 4], "counts": [16]}}]})
    elif case == "RLE counts":
        cvat(root, {"a.png": [{"category_id": 3, "segmentation": {"size": [H, W], "counts": [3, 4]}}]})
    elif case == "missing image":
        cvat(root, {"a.png": [ann]})
        (root / "images" / "a.png").unlink()
    elif case == "no annotations":
        cvat(root, {"a.png": [], "b.png": []})
    elif case == "size differs":
        cvat(root, {"a.png": [ann]})
        image(root / "images" / "a.png", (H, W + 2))
    return root


@pytest.mark.parametrize("case,words", [
    ("malformed JSON", ["instances_default.json: not valid JSON", "line 1, column 13"]),
    ("outside the image", ["instances_default.json: annotation 1 (image 'a.png') reaches (15, 1), outside the 10x8"]),
    ("unknown category", ["instances_default.json: annotation 1 (image 'a.png') has category_id 5, an unknown "
                          "category", "ids 3, 7"]),
    ("no segmentation", ["instances_default.json: annotation 1 (image 'a.png') has no segmentation"]),
    ("RLE size", ["RLE size [4, 4] is not the image's [height, width] [8, 10]"]),
    ("RLE counts", ["uncompressed RLE counts must be non-negative integers summing to 8x10 = 80 pixels (got 7)"]),
    ("missing image", ["instances_default.json: image 'a.png' is not in"]),
    ("no annotations", ["instances_default.json: no annotations on any of the 2 images"]),
    ("size differs", ["instances_default.json: image 'a.png' is 10x8 there but the file", "is 12x8"]),
])
def test_refusals_one_line_naming_the_file(tmp_path, capsys, case, words):
    root = broken(tmp_path / "d", case)
    with pytest.raises(DataError):
        check_dataset(open_datasets(str(root), val_split=0.0)[0])
    code, out, err = cli(capsys, "data", "check", str(root), "--json")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and str(root) in lines[0]
    for w in words:
        assert w in lines[0], lines[0]


def test_vertices_just_beyond_the_border_are_clipped(tmp_path):
    # tools round at the border: up to 1 px beyond it is the edge, not an error
    seg = [[-0.9, -0.9, 3, -0.9, 3, 3, -0.9, 3], [7, 5, W + 0.9, 5, W + 0.9, H + 0.9, 7, H + 0.9]]
    m = masks(cvat(tmp_path, {"a.png": [{"category_id": 3, "segmentation": seg}]}))["a"]
    assert np.array_equal(m == 1, box(0, 0, 3, 3) | box(7, 5, W, H))


def test_one_file_listed_twice_is_two_images(tmp_path):
    root = cvat(tmp_path, {"a.png": [{"category_id": 3, "segmentation": [poly(0, 0, 2, 2)]}]})
    path = root / "annotations" / "instances_default.json"
    doc = json.loads(path.read_text())
    doc["images"].append({**doc["images"][0], "id": 2})
    doc["annotations"].append({"id": 9, "image_id": 2, "category_id": 7, "iscrowd": 0, "segmentation": [poly(0, 0, 4, 4)]})
    path.write_text(json.dumps(doc))
    train = open_datasets(str(root), val_split=0.0)[0]
    assert [train[i].name for i in range(2)] == ["a", "a__1"]
    assert check_dataset(train).pixels.tolist() == [2 * H * W - 4 - 16, 4, 16]
