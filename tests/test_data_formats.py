"""Label files and mask encodings found in the wild: classes.json as a list / dict (+ colours, ignore colour),
classes.txt, sparse label values, 16-bit masks, RGB colour-coded masks; and the refusals, each naming the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import cli  # tests/ is on sys.path under pytest
from PIL import Image

from cvtool.data import check_dataset, open_datasets
from cvtool.data.folder import ValueMap
from cvtool.errors import DataError

HW = (16, 16)


def folder(root: Path, masks: list[np.ndarray], classes=None, txt: str | None = None) -> Path:
    """root/images/im{k}.png (random RGB) + root/masks/im{k}.png (masks[k]: uint8 -> L, uint16 -> I;16, RGB)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for k, m in enumerate(masks):
        Image.fromarray(rng.integers(0, 256, (*m.shape[:2], 3), dtype=np.uint8)).save(root / "images" / f"im{k}.png")
        Image.fromarray(m).save(root / "masks" / f"im{k}.png")
    if classes is not None:
        (root / "classes.json").write_text(classes if isinstance(classes, str) else json.dumps(classes))
    if txt is not None:
        (root / "classes.txt").write_text(txt)
    return root


def labels(values, n=3, seed=1, dtype=np.uint8) -> list[np.ndarray]:
    """n masks whose pixels are drawn from values, each mask holding every value."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        m = rng.choice(np.asarray(values), HW).astype(dtype)
        m.flat[: len(values)] = values
        out.append(m)
    return out


def by_name(ds) -> dict[str, object]:
    return {ds[i].name: ds[i] for i in range(len(ds))}


def open_all(root: Path):
    tr, va, info = open_datasets(str(root), val_split=0)
    return tr, info


# ---------------------------------------------------------------- accepted class files

@pytest.mark.parametrize("kind", ["list", "dict", "dict+colors", "txt"])
def test_every_classes_format_names_the_classes(tmp_path, kind):
    names = ["bg", "cat", "dog"]
    classes = {"list": names, "dict": {"classes": names},
               "dict+colors": {"classes": names, "colors": [[1, 2, 3], "#0a0b0c", [7, 8, 9]], "source": "x"}}.get(kind)
    txt = "\nbg\n  cat \n\n dog\n\n" if kind == "txt" else None
    masks = labels([0, 1, 2])
    root = folder(tmp_path, masks, classes=classes, txt=txt)
    ds, info = open_all(root)
    assert info.classes == ds.classes == names
    if kind == "dict+colors":
        assert info.colors == [(1, 2, 3), (10, 11, 12), (7, 8, 9)]
    assert ds.value_mapping == {0: 0, 1: 1, 2: 2, 255: 255}  # already class indices: identity
    s = by_name(ds)
    for k, m in enumerate(masks):
        np.testing.assert_array_equal(s[f"im{k}"].mask, m)
    assert not any("no classes.json" in n for n in info.notes)


def test_classes_json_wins_over_classes_txt(tmp_path):
    root = folder(tmp_path, labels([0, 1]), classes=["a", "b"], txt="x\ny\n")
    assert open_all(root)[1].classes == ["a", "b"]


@pytest.mark.parametrize("text,words", [
    ("{not json", ["not valid JSON", "line 1"]),
    ('"bg"', ["expected a list of class names"]),
    ('{"names": ["a", "b"]}', ['no "classes"', "names"]),
    ('{"classes": "a, b"}', ['"classes" must be a list']),
    ('{"classes": 3}', ['"classes" must be a list of class names, got 3']),
    ('{"classes": ["a", "b"], "colors": "red"}', ['"colors" must be a list']),
    ('["a", 3]', ["class 1 is 3"]),
    ("[]", ["no class names"]),
    ('["a", "b", "a"]', ["'a' appears twice"]),
    ('{"classes": ["a", "b"], "colors": [[0, 0, 0]]}', ["1 colors for 2 classes"]),
    ('{"classes": ["a", "b"], "colors": [[0, 0, 0], [1, 2, 3, 4]]}', ["colors[1] is [1, 2, 3, 4]", "[r, g, b]"]),
    ('{"classes": ["a", "b"], "colors": [[0, 0, 0], [1, 2, 300]]}', ["colors[1]", "0..255"]),
    ('{"classes": ["a", "b"], "colors": [[0, 0, 0], [1, 2, 3]], "ignore_color": [9, 9]}', ["ignore_color is [9, 9]"]),
    ('{"classes": ["a", "b"], "ignore_color": [9, 9, 9]}', ['"ignore_color" needs "colors"']),
])
def test_malformed_classes_json_names_the_file(tmp_path, text, words):
    root = folder(tmp_path, labels([0, 1]), classes=text)
    with pytest.raises(DataError) as e:
        open_all(root)
    msg = str(e.value)
    assert msg.startswith(str(root / "classes.json")) and "\n" not in msg
    for w in words:
        assert w in msg, msg
    assert "classes.txt" in e.value.hint and '{"classes": [...]' in e.value.hint  # the accepted forms


def test_empty_classes_txt_refused(tmp_path):
    root = folder(tmp_path, labels([0, 1]), txt="\n  \n")
    with pytest.raises(DataError, match=r"classes\.txt: no class names"):
        open_all(root)


# ---------------------------------------------------------------- remapped label values

def test_sparse_values_remapped_in_order(tmp_path):
    masks = labels([0, 38, 75])
    masks[0][0, 1:4] = 255  # 255 stays ignore in 8-bit masks
    ds, info = open_all(folder(tmp_path, masks))
    assert "mask values 0, 38, 75 remapped to classes 0, 1, 2 (255 = ignore)" in info.notes
    assert info.classes == ["class0", "class1", "class2"]
    assert ds.value_mapping == {0: 0, 38: 1, 75: 2, 255: 255}
    s = by_name(ds)
    for k, m in enumerate(masks):
        y = s[f"im{k}"].mask
        assert y.dtype == np.int64
        for raw, cls in ((0, 0), (38, 1), (75, 2), (255, 255)):
            np.testing.assert_array_equal(y == cls, m == raw)
    st = check_dataset(ds)
    assert st.ignored == 3 and st.pixels.sum() == 3 * 256 - 3


def test_sparse_values_with_matching_names(tmp_path):
    ds, info = open_all(folder(tmp_path, labels([10, 20]), classes=["road", "car"]))
    assert ds.value_mapping == {10: 0, 20: 1, 255: 255} and info.classes == ["road", "car"]
    assert any("mask values 10, 20 remapped to classes 0, 1" in n for n in info.notes)
    check_dataset(ds)


def test_train_and_val_share_one_mapping(tmp_path):
    # 38 only in some masks, 75 only in others: the mapping comes from all of them, whichever split
    masks = [np.where(np.eye(16, dtype=bool), v, 0).astype(np.uint8) for v in (38, 75, 38, 75)]
    tr, va, info = open_datasets(str(folder(tmp_path, masks)), val_split=0.5, seed=0)
    assert tr.value_mapping == va.value_mapping == {0: 0, 38: 1, 75: 2, 255: 255}
    for ds in (tr, va):
        for i in range(len(ds)):
            s = ds[i]
            raw = masks[int(s.name[2:])]
            np.testing.assert_array_equal(s.mask, np.select([raw == 38, raw == 75], [1, 2], 0))


def test_sixteen_bit_masks_remapped(tmp_path):
    masks = labels([0, 1000, 2000], dtype=np.uint16)
    root = folder(tmp_path, masks)
    with Image.open(root / "masks" / "im0.png") as im:
        assert im.mode == "I;16"
    ds, info = open_all(root)
    assert "mask values 0, 1000, 2000 remapped to classes 0, 1, 2" in info.notes
    s = by_name(ds)
    for k, m in enumerate(masks):
        np.testing.assert_array_equal(s[f"im{k}"].mask, m // 1000)
    st = check_dataset(ds)
    assert st.ignored == 0 and st.pixels.sum() == 3 * 256


def test_sixteen_bit_65535_is_ignore_and_255_a_label(tmp_path):
    masks = labels([0, 255, 1000, 65535], dtype=np.uint16)
    ds, info = open_all(folder(tmp_path, masks))
    assert ds.value_mapping == {0: 0, 255: 1, 1000: 2, 65535: 255}
    assert any("65535 -> 255" in n for n in info.notes)
    y = ds[0].mask
    np.testing.assert_array_equal(y == 255, masks[0] == 65535)
    np.testing.assert_array_equal(y == 1, masks[0] == 255)


def test_class_count_mismatch_refused_naming_a_mask(tmp_path):
    masks = labels([0, 38, 75])
    root = folder(tmp_path, masks, classes=["bg", "fg"])
    with pytest.raises(DataError) as e:
        open_all(root)
    msg = str(e.value)
    assert str(root / "masks" / "im0.png") in msg and "values found: 0, 38, 75" in msg
    assert "3 distinct values" in msg and "names 2 classes" in msg and "\n" not in msg


def test_image_like_masks_refused(tmp_path):
    root = folder(tmp_path, [image_like()])
    with pytest.raises(DataError) as e:
        open_all(root)
    msg = str(e.value)
    assert msg.startswith(str(root / "masks" / "im0.png"))
    assert "masks hold 100 distinct values: these look like images, not class-index masks" in msg


def image_like() -> np.ndarray:
    """A 16x16 mask holding 100 distinct even values 0..198 (sparse, so not taken as class indices)."""
    return (np.arange(256) % 100 * 2).astype(np.uint8).reshape(HW)


def test_many_named_class_indices_accepted(tmp_path):
    m = (np.arange(256) % 100).astype(np.uint8).reshape(HW)  # 100 classes, all present: class indices
    ds, info = open_all(folder(tmp_path, [m], classes=[f"c{k}" for k in range(100)]))
    assert len(info.classes) == 100 and ds.value_mapping[99] == 99
    np.testing.assert_array_equal(ds[0].mask, m)
    with pytest.raises(DataError, match="100 distinct values"):  # without names the same masks look like images
        open_all(folder(tmp_path / "nonames", [m]))


def test_gaps_in_small_class_indices_kept_as_indices(tmp_path):
    ds, info = open_all(folder(tmp_path, labels([0, 1, 3])))  # class 2 just absent: not remapped
    assert info.classes == ["class0", "class1", "class2", "class3"] and ds.value_mapping[3] == 3
    assert "mask values 0, 1, 3 taken as class indices (no mask holds 2)" in info.notes


def test_binary_0_255_still_binary(tmp_path):
    m = np.zeros(HW, np.uint8)
    m[4:9, 2:7] = 255
    ds, info = open_all(folder(tmp_path, [m, m]))
    assert ds.value_mapping == {0: 0, 255: 1} and "binary 0/255 masks mapped to 0/1" in info.notes
    np.testing.assert_array_equal(ds[0].mask, m // 255)


def test_value_map_table_and_searchsorted_agree():
    vm = ValueMap({0: 0, 38: 1, 70000: 2, 0xFF00FF: 255})
    small = np.array([[0, 38], [1, 65535]], np.uint16)
    np.testing.assert_array_equal(vm(small), [[0, 1], [-1, -1]])
    big = np.array([0, 38, 70000, 0xFF00FF, 5, 0xFFFFFF, -3], np.int64)
    np.testing.assert_array_equal(vm(big), [0, 1, 2, 255, -1, -1, -1])
    assert vm(small).dtype == vm(big).dtype == np.int64


# ---------------------------------------------------------------- RGB colour masks

COLORS = [[0, 0, 0], [255, 0, 0], [0, 128, 255]]


def colour_masks(n=3, extra=None):
    """(n RGB masks painted with COLORS, and their class-index truth; extra colour put at (0, 0) of the last)."""
    rng = np.random.default_rng(2)
    idx = [rng.integers(0, 3, HW) for _ in range(n)]
    for m in idx:
        m.flat[:3] = [0, 1, 2]
    rgb = [np.asarray(COLORS, np.uint8)[m] for m in idx]
    if extra is not None:
        rgb[-1][0, 0] = extra
    return rgb, idx


def test_rgb_colour_masks_with_a_palette(tmp_path):
    rgb, idx = colour_masks()
    rgb[1][5, :4] = (224, 224, 192)
    idx[1] = idx[1].copy()
    idx[1][5, :4] = 255
    root = folder(tmp_path, rgb, classes={"classes": ["bg", "red", "blue"], "colors": COLORS,
                                          "ignore_color": [224, 224, 192]})
    ds, info = open_all(root)
    assert ds.colour_masks and info.colors == [tuple(c) for c in COLORS]
    assert ds.value_mapping == {0x000000: 0, 0xFF0000: 1, 0x0080FF: 2, 0xE0E0C0: 255}
    assert any("colour masks" in n and "#e0e0c0" in n for n in info.notes)
    s = by_name(ds)
    for k, truth in enumerate(idx):
        np.testing.assert_array_equal(s[f"im{k}"].mask, truth)
    st = check_dataset(ds)
    assert st.ignored == 4 and st.pixels.tolist() == np.bincount(np.concatenate([t.ravel() for t in idx]))[:3].tolist()


def test_rgba_colour_masks_drop_alpha(tmp_path):
    rgb, idx = colour_masks(n=1)
    rgba = np.concatenate([rgb[0], np.full((*HW, 1), 255, np.uint8)], axis=2)
    ds, _ = open_all(folder(tmp_path, [rgba], classes={"classes": ["a", "b", "c"], "colors": COLORS}))
    np.testing.assert_array_equal(ds[0].mask, idx[0])


def test_unknown_colour_refused_naming_file_and_colour(tmp_path):
    rgb, _ = colour_masks(extra=(10, 200, 30))
    root = folder(tmp_path, rgb, classes={"classes": ["bg", "red", "blue"], "colors": COLORS})
    ds, _ = open_all(root)
    with pytest.raises(DataError) as e:
        check_dataset(ds)
    msg = str(e.value)
    assert msg.startswith(str(root / "masks" / "im2.png")) and "#0ac81e" in msg
    assert "colours found: #000000, #0080ff, #0ac81e, #ff0000" in msg and "\n" not in msg
    with pytest.raises(DataError, match="im2.png.*#0ac81e"):
        by_name(ds)  # reading the sample refuses it too (no -1 handed to a loss)


def test_rgb_masks_without_colors_refused(tmp_path):
    rgb, _ = colour_masks()
    root = folder(tmp_path, rgb, classes=["bg", "red", "blue"])
    with pytest.raises(DataError) as e:
        open_all(root)
    assert "im0.png: mask is RGB" in str(e.value) and '"colors" in classes.json' in e.value.hint


def test_same_colour_for_two_classes_refused(tmp_path):
    rgb, _ = colour_masks()
    root = folder(tmp_path, rgb, classes={"classes": ["bg", "red", "blue"], "colors": [[0, 0, 0], [0, 0, 0],
                                                                                       [0, 128, 255]]})
    with pytest.raises(DataError, match=r"classes\.json: classes 'bg' and 'red' have the same colour #000000"):
        open_all(root)


def test_mixed_colour_and_index_masks_refused(tmp_path):
    rgb, idx = colour_masks(n=2)
    root = folder(tmp_path, [rgb[0]], classes={"classes": ["bg", "red", "blue"], "colors": COLORS})
    Image.fromarray(np.zeros((*HW, 3), np.uint8)).save(root / "images" / "im1.png")
    Image.fromarray(idx[1].astype(np.uint8)).save(root / "masks" / "im1.png")  # a class-index mask among colour ones
    with pytest.raises(DataError, match=r"im1\.png: mask is L but .*im0\.png is an RGB colour mask"):
        open_all(root)


# ---------------------------------------------------------------- through the CLI

def test_cli_check_prints_the_remap_note(tmp_path, capsys):
    root = folder(tmp_path, labels([0, 38, 75]))
    code, out, err = cli(capsys, "data", "check", str(root), "--val-split", "0")
    assert code == 0, err
    assert "note: mask values 0, 38, 75 remapped to classes 0, 1, 2" in out and "class2" in out


def test_cli_check_colour_masks_table(tmp_path, capsys):
    rgb, _ = colour_masks()
    root = folder(tmp_path, rgb, classes={"classes": ["bg", "red", "blue"], "colors": COLORS})
    code, out, err = cli(capsys, "data", "check", str(root), "--val-split", "0", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [c["name"] for c in doc["train"]["classes"]] == ["bg", "red", "blue"]
    assert doc["train"]["pixels"] == 3 * 256 and doc["train"]["ignored_pixels"] == 0


@pytest.mark.parametrize("case,words", [
    ("json", ["classes.json", "not valid JSON"]),
    ("count", ["im0.png", "values found: 0, 38, 75"]),
    ("images", ["im0.png", "100 distinct values"]),
    ("colour", ["im2.png", "#0ac81e"]),
    ("rgb", ["im0.png", "mask is RGB"]),
])
def test_cli_check_refusals_exit_2_with_one_line(tmp_path, capsys, case, words):
    if case == "json":
        folder(tmp_path, labels([0, 1]), classes="[oops")
    elif case == "count":
        folder(tmp_path, labels([0, 38, 75]), classes=["a", "b"])
    elif case == "images":
        folder(tmp_path, [image_like()])
    elif case == "colour":
        folder(tmp_path, colour_masks(extra=(10, 200, 30))[0], classes={"classes": ["a", "b", "c"], "colors": COLORS})
    else:
        folder(tmp_path, colour_masks()[0])
    code, out, err = cli(capsys, "data", "check", str(tmp_path))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for w in words:
        assert w in lines[0], lines[0]
