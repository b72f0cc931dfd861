"""cvtool.data: synthetic shapes, folder / VOC datasets, mask checks, batches with paired augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DATASETS, shared_dataset  # tests/ is on sys.path under pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cvtool.data import check_dataset, open_datasets
from cvtool.data.io import read_image, read_mask, voc_palette, write_mask_png, write_overlay_png
from cvtool.data.loader import Sample, batches, channel_stats, pad_to_multiple
from cvtool.data.synth import CLASSES, TRAIN, VAL, SynthDataset, shape_mask
from cvtool.errors import DataError

MEMBRANE = DATASETS / "membrane"


# ---------------------------------------------------------------- helpers: tiny datasets on disk

def save(path: Path, a: np.ndarray, mode: str | None = None, palette=None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(a) if mode is None else Image.fromarray(a).convert(mode)
    if palette is not None:
        im.putpalette(palette)
    im.save(path)
    return path


def make_folder(root: Path, n=5, hw=(12, 16), classes=None, mask_fn=None, image_mode="RGB", suffix=".png"):
    """n images (+ class-index masks from mask_fn(k) or values 0..2) under root/images and root/masks."""
    rng = np.random.default_rng(0)
    for k in range(n):
        img = rng.integers(0, 256, (*hw, 3), dtype=np.uint8)
        save(root / "images" / f"im{k}{suffix}", img, image_mode)
        m = mask_fn(k) if mask_fn else rng.integers(0, 3, hw).astype(np.uint8)
        save(root / "masks" / f"im{k}.png", m)
    if classes is not None:
        (root / "classes.json").write_text(json.dumps(classes))
    return root


# ---------------------------------------------------------------- synthetic data

def test_synth_same_seed_same_arrays_other_seed_differs():
    a, b = SynthDataset(4, 64, seed=3), SynthDataset(4, 64, seed=3)
    for i in range(4):
        sa, sb = a[i], b[i]
        assert sa.image.dtype == np.float32 and sa.image.shape == (3, 64, 64)
        assert sa.mask.dtype == np.int64 and sa.mask.shape == (64, 64)
        assert 0.0 <= sa.image.min() and sa.image.max() <= 1.0
        np.testing.assert_array_equal(sa.image, sb.image)
        np.testing.assert_array_equal(sa.mask, sb.mask)
    np.testing.assert_array_equal(a[2].image, a[2].image)  # access order does not matter
    other = SynthDataset(4, 64, seed=4)
    val = SynthDataset(4, 64, seed=3, stream=VAL)
    for i in range(4):
        assert not np.array_equal(a[i].image, other[i].image)
        assert not np.array_equal(a[i].mask, val[i].mask)


def test_synth_every_class_present_in_a_few_samples():
    ds = SynthDataset(6, 64, seed=0)
    present = set()
    for i in range(6):
        vals = set(np.unique(ds[i].mask).tolist())
        assert 0 in vals and len(vals) >= 2  # background plus at least one shape in each image
        present |= vals
    assert present == {0, 1, 2, 3}
    assert ds.classes == ["background", "circle", "square", "triangle"] == CLASSES


def test_synth_class_balance_and_colour_is_uninformative():
    ds = SynthDataset(48, 64, seed=0)
    counts, rgb = np.zeros(4), np.zeros((4, 3))
    for i in range(48):
        img, m = ds.generate(i)
        counts += np.bincount(m.ravel(), minlength=4)
        for k in range(4):
            rgb[k] += img[m == k].sum(axis=0)
    frac = counts / counts.sum()
    assert 0.6 < frac[0] < 0.9, frac
    assert np.all((frac[1:] > 0.04) & (frac[1:] < 0.14)), frac
    assert frac[1:].max() / frac[1:].min() < 1.6, frac  # the three shapes are about equally common
    mean = rgb / counts[:, None] / 255  # shapes and background draw colours from one distribution
    assert np.abs(mean - 0.5).max() < 0.1, mean


def test_shape_masks_literal_and_equal_areas():
    d = np.arange(-2, 3) + 0.0  # pixel-centre offsets -2..2
    circle = shape_mask(1, d[:, None], d[None, :], 1.5, 0.0)
    expect = np.zeros((5, 5), bool)
    expect[1:4, 1:4] = True  # 1 + 1 <= 2.25 but 4 > 2.25
    np.testing.assert_array_equal(circle, expect)
    d = np.arange(-60, 60) + 0.5
    for cls in (1, 2, 3):  # every class has area pi r^2 whatever its rotation
        for theta in (0.3, 1.0):
            area = shape_mask(cls, d[:, None], d[None, :], 20.0, theta).sum()
            assert abs(area / (np.pi * 400) - 1) < 0.02, (cls, theta, area)


def test_open_datasets_synth_splits():
    tr, va, info = open_datasets(None, val_split=0.25, seed=1, synth_size=32, synth_n=20)
    assert (len(tr), len(va), info.format, info.in_channels) == (15, 5, "synth", 3)
    assert not np.array_equal(tr[0].image, va[0].image)
    tr2, va2, _ = open_datasets("synth", synth_size=32, synth_n=(7, 3))
    assert (len(tr2), len(va2), tr2.stream, va2.stream) == (7, 3, TRAIN, VAL)
    st_ = check_dataset(va)
    assert st_.images == 5 and st_.pixels.sum() == 5 * 32 * 32 and st_.ignored == 0


# ---------------------------------------------------------------- folder datasets

def test_folder_palette_masks_with_classes_json(tmp_path):
    pal = [0, 0, 0, 10, 20, 30, 40, 50, 60] + [0] * (768 - 9)
    rng = np.random.default_rng(1)
    masks = [rng.integers(0, 3, (12, 16)).astype(np.uint8) for _ in range(4)]
    masks[0][0, :3] = 255  # ignore
    for k, m in enumerate(masks):
        save(tmp_path / "images" / f"a{k}.png", rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
        save(tmp_path / "masks" / f"a{k}.png", m, palette=pal)
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["bg", "cat", "dog"],
                                                       "colors": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}))
    tr, va, info = open_datasets(str(tmp_path), val_split=0.25, seed=0)
    assert (len(tr), len(va)) == (3, 1)
    assert info.classes == ["bg", "cat", "dog"] and info.colors[2] == (7, 8, 9)
    assert any("palette" in n for n in info.notes)
    for ds in (tr, va):
        for i in range(len(ds)):
            s = ds[i]
            np.testing.assert_array_equal(s.mask, masks[int(s.name[1:])])
    st_ = check_dataset(tr)
    assert st_.ignored == (3 if "a0" in [it.name for it in tr.items] else 0)


def test_folder_palette_colours_taken_from_masks_without_classes_json(tmp_path):
    pal = [0, 0, 0, 200, 100, 50] + [9] * (768 - 6)
    make_folder(tmp_path, n=2)
    for k in range(2):
        im = Image.fromarray(np.array([[0, 1] * 8] * 12, np.uint8))
        im.putpalette(pal)
        im.save(tmp_path / "masks" / f"im{k}.png")
    tr, va, info = open_datasets(str(tmp_path))
    assert info.classes == ["class0", "class1"] and info.colors == [(0, 0, 0), (200, 100, 50)]


@pytest.mark.parametrize("bilevel", [False, True])
def test_folder_binary_0_255_masks_map_to_0_1(tmp_path, bilevel):
    m = np.zeros((12, 16), np.uint8)
    m[3:7, 2:9] = 255
    make_folder(tmp_path, n=3, mask_fn=lambda k: m)
    if bilevel:  # mode "1" PNGs are the same binary case
        for k in range(3):
            Image.fromarray(m).convert("1").save(tmp_path / "masks" / f"im{k}.png")
    tr, va, info = open_datasets(str(tmp_path), val_split=0.34)
    assert info.classes == ["background", "foreground"]
    assert "binary 0/255 masks mapped to 0/1" in info.notes
    np.testing.assert_array_equal(tr[0].mask, (m == 255).astype(np.int64))
    st_ = check_dataset(tr)
    assert st_.pixels.tolist() == [len(tr) * (192 - 28), len(tr) * 28]


def test_folder_rgba_grayscale_and_mixed_images(tmp_path):
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (12, 16, 4), dtype=np.uint8)
    gray = rng.integers(0, 256, (12, 16), dtype=np.uint8)
    mask = np.zeros((12, 16), np.uint8)
    save(tmp_path / "a" / "images" / "x.png", rgba)
    save(tmp_path / "a" / "masks" / "x.png", mask)
    tr, va, info = open_datasets(str(tmp_path / "a"), val_split=0)
    assert info.in_channels == 3 and any("RGBA -> RGB" in n for n in info.notes)
    np.testing.assert_allclose(tr[0].image, rgba[..., :3].transpose(2, 0, 1) / 255, atol=1e-7)
    save(tmp_path / "g" / "images" / "x.bmp", gray)
    save(tmp_path / "g" / "masks" / "x.png", mask)
    tr, _, info = open_datasets(str(tmp_path / "g"), val_split=0)
    assert info.in_channels == 1 and tr[0].image.shape == (1, 12, 16)
    np.testing.assert_allclose(tr[0].image[0], gray / 255, atol=1e-7)
    save(tmp_path / "g" / "images" / "y.tif", rgba[..., :3])  # now mixed: gray is repeated to RGB
    save(tmp_path / "g" / "masks" / "y.png", mask)
    tr, _, info = open_datasets(str(tmp_path / "g"), val_split=0)
    assert info.in_channels == 3 and any("grayscale images repeated" in n for n in info.notes)
    x = {tr[i].name: tr[i].image for i in range(2)}
    np.testing.assert_allclose(x["x"], np.repeat(gray[None] / 255, 3, axis=0), atol=1e-7)
    np.testing.assert_allclose(x["y"], rgba[..., :3].transpose(2, 0, 1) / 255, atol=1e-7)


def test_folder_jpeg_images_and_train_val_subfolders(tmp_path):
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = np.stack([yy * 4, xx * 4, (yy + xx) * 2], axis=-1).astype(np.uint8)
    for part, names in (("train", ["a", "b", "c"]), ("val", ["d"])):
        for n in names:
            save(tmp_path / part / "images" / f"{n}.jpg", smooth)
            save(tmp_path / part / "masks" / f"{n}.png", (xx > 10).astype(np.uint8))
    tr, va, info = open_datasets(str(tmp_path))
    assert [s.name for s in (tr[0], tr[1], tr[2], va[0])] == ["a", "b", "c", "d"]
    assert info.split == "train/ and val/ subfolders"
    assert np.abs(tr[0].image * 255 - smooth.transpose(2, 0, 1)).mean() < 3  # JPEG is lossy
    assert info.classes == ["class0", "class1"]


def test_deterministic_split_by_seed(tmp_path):
    make_folder(tmp_path, n=10)
    names = lambda ds: [it.name for it in ds.items]  # noqa: E731
    tr, va, _ = open_datasets(str(tmp_path), val_split=0.3, seed=5)
    tr2, va2, _ = open_datasets(str(tmp_path), val_split=0.3, seed=5)
    _, va3, _ = open_datasets(str(tmp_path), val_split=0.3, seed=6)
    assert names(va) == names(va2) and len(va) == 3 and len(tr) == 7
    assert not set(names(tr)) & set(names(va))
    assert names(va) != names(va3)


# ---------------------------------------------------------------- PASCAL VOC

def test_voc_layout(tmp_path):
    root = tmp_path / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(3)
    masks = {}
    for n in ("2007_000001", "2007_000002", "2007_000003"):
        img = np.full((30, 40, 3), 120, np.uint8)
        img[5:20, 5:30] = (200, 40, 40)
        save(root / "JPEGImages" / f"{n}.jpg", img if n != "2007_000003" else img[..., 0])  # one grayscale JPEG
        m = np.zeros((30, 40), np.uint8)
        m[5:20, 5:30] = rng.choice([15, 12])
        m[5, 5:30] = 255  # object boundary
        masks[n] = m
        save(root / "SegmentationClass" / f"{n}.png", m, palette=[v for c in voc_palette() for v in c])
    sets = root / "ImageSets" / "Segmentation"
    sets.mkdir(parents=True)
    (sets / "train.txt").write_text("2007_000001\n2007_000003\n")
    (sets / "val.txt").write_text("2007_000002\n")
    tr, va, info = open_datasets(str(tmp_path))  # found through VOCdevkit/VOC2012
    assert info.format == "voc" and len(info.classes) == 21
    assert info.classes[15] == "person" and info.colors[15] == (192, 128, 128) and info.colors[12] == (64, 0, 128)
    assert [it.name for it in tr.items] == ["2007_000001", "2007_000003"] and len(va) == 1
    s = tr[1]
    assert s.image.shape == (3, 30, 40) and tr.in_channels == 3
    np.testing.assert_array_equal(s.mask, masks["2007_000003"])
    assert abs(s.image[:, 10, 10].mean() * 255 - 200) < 6  # gray JPEG repeated to 3 channels
    st_ = check_dataset(tr)
    assert st_.ignored == 2 * 25 and st_.pixels.sum() == 2 * (1200 - 25)


# ---------------------------------------------------------------- mask checks

def bad_dataset(root: Path, kind: str) -> str:
    """A 3-class folder dataset with one broken pair; returns the file name the error must name."""
    make_folder(root, n=4, classes={"classes": ["a", "b", "c"]})
    if kind == "value":
        m = np.zeros((12, 16), np.uint8)
        m[0, 0] = 7
        save(root / "masks" / "im2.png", m)
        return "im2.png"
    if kind == "size":
        save(root / "masks" / "im1.png", np.zeros((12, 15), np.uint8))
        return "im1.png"
    if kind == "missing":
        (root / "masks" / "im3.png").unlink()
        return "im3.png"
    if kind == "corrupt":
        (root / "images" / "im0.png").write_bytes(b"not a png at all")
        return "im0.png"
    raise ValueError(kind)


@pytest.mark.parametrize("kind,words", [("value", ["7", "values found: 0, 7"]), ("size", ["15x12", "16x12"]),
                                        ("missing", ["without a mask"]), ("corrupt", ["corrupt"])])
def test_bad_masks_raise_data_error_naming_the_file(tmp_path, kind, words):
    name = bad_dataset(tmp_path, kind)
    with pytest.raises(DataError) as e:
        tr, va, _ = open_datasets(str(tmp_path), val_split=0.5)
        check_dataset(tr)
        check_dataset(va)
    msg = str(e.value)
    assert name in msg and "\n" not in msg
    for w in words:
        assert w in msg


def test_truncated_image_fails_on_read_naming_the_file(tmp_path):
    make_folder(tmp_path, n=2, hw=(64, 64))
    p = tmp_path / "images" / "im1.png"
    p.write_bytes(p.read_bytes()[:200])
    tr, _, _ = open_datasets(str(tmp_path), val_split=0)
    with pytest.raises(DataError, match="im1.png"):
        tr[1]


def test_read_image_errors(tmp_path):
    with pytest.raises(DataError, match="no such image"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(DataError, match="unsupported image type '.gif'"):
        read_image(tmp_path / "x.gif")
    save(tmp_path / "rgb.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match="mask is RGB"):
        read_mask(tmp_path / "rgb.png")


def test_membrane_opens_with_two_classes_and_a_hold_out():
    shared_dataset("membrane")
    tr, va, info = open_datasets(str(MEMBRANE), val_split=0.2, seed=0)
    assert (len(tr), len(va), info.in_channels, info.classes) == (24, 6, 1, ["background", "foreground"])
    assert "binary 0/255 masks mapped to 0/1" in info.notes
    assert not {it.name for it in tr.items} & {it.name for it in va.items}
    s = va[0]
    assert s.image.shape == (1, 512, 512) and set(np.unique(s.mask).tolist()) == {0, 1}
    st_ = check_dataset(tr)
    assert 0.75 < st_.fractions()[1] < 0.81  # ~78% cell interior


# ---------------------------------------------------------------- batches

class ToyDataset:
    """Images that carry their own coordinates and mask: ch0 = mask / 10, ch1 = column / 1000, ch2 = row / 1000."""

    classes, colors, in_channels, ignore_index, description = [str(k) for k in range(10)], [], 3, 255, "toy"

    def __init__(self, sizes, seed=0):
        rng = np.random.default_rng(seed)
        self.masks = [rng.integers(0, 10, hw) for hw in sizes]

    def __len__(self):
        return len(self.masks)

    def __getitem__(self, i):
        m = self.masks[i]
        rows, cols = np.mgrid[0:m.shape[0], 0:m.shape[1]]
        img = np.stack([m / 10, cols / 1000, rows / 1000]).astype(np.float32)
        return Sample(img, m.astype(np.int64), str(i))


def test_batches_crop_and_flip_keep_image_and_mask_aligned():
    ds = ToyDataset([(40, 50), (20, 30), (64, 64), (16, 70), (33, 33)] * 4)
    seen_flip = {True: 0, False: 0}
    corners = set()
    n_items = 0
    for x, y in batches(ds, 3, crop=24, augment=True, rng=np.random.default_rng(0), shuffle=True, drop_last=False):
        assert x.shape[1:] == (3, 24, 24) and y.shape[1:] == (24, 24) and x.dtype == np.float32 and y.dtype == np.int64
        for k in range(len(x)):
            n_items += 1
            lab = y[k] != 255
            np.testing.assert_array_equal(np.rint(x[k, 0][lab] * 10), y[k][lab])  # mask matches image pixelwise
            assert np.all(x[k][:, ~lab] == 0)  # padding: image 0 where the mask says ignore
            cols, rows = np.rint(x[k, 1] * 1000), np.rint(x[k, 2] * 1000)
            r = np.flatnonzero(lab.any(axis=1))[0]
            c = cols[r][lab[r]]
            step = np.diff(c)
            assert np.all(step == step[0]) and abs(step[0]) == 1  # a contiguous window, maybe mirrored
            seen_flip[bool(step[0] < 0)] += 1
            corners.add((rows[r][lab[r]][0], c.min()))
    assert n_items == 20 and seen_flip[True] >= 3 and seen_flip[False] >= 3
    assert len(corners) > 5


def test_batches_crops_are_the_source_mask_at_the_image_coordinates():
    sizes = [(30, 40), (10, 50), (12, 9), (16, 16), (40, 17)]
    ds = ToyDataset(sizes, seed=1)
    S, i = 16, 0
    for x, y in batches(ds, 2, crop=S, augment=True, rng=np.random.default_rng(7), shuffle=False):
        for k in range(len(x)):  # shuffle=False: items come in order
            H, W = sizes[i]
            lab = y[k] != 255
            cols, rows = np.rint(x[k, 1] * 1000).astype(int), np.rint(x[k, 2] * 1000).astype(int)
            np.testing.assert_array_equal(y[k][lab], ds.masks[i][rows[lab], cols[lab]])
            assert lab.sum() == min(H, S) * min(W, S)  # the window covers the image or lies inside it
            i += 1
    assert i == len(sizes)


def test_batches_deterministic_and_resumable():
    ds = ToyDataset([(20, 20), (30, 25), (18, 40)] * 3)
    run = lambda rng, **kw: list(batches(ds, 2, crop=16, augment=True, rng=rng, shuffle=True, **kw))  # noqa: E731
    a, b = run(np.random.default_rng(4)), run(np.random.default_rng(4))
    assert len(a) == 5
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    tail = run(np.random.default_rng(4), start=3)
    assert len(tail) == 2 and np.array_equal(tail[0][1], a[3][1]) and np.array_equal(tail[1][0], a[4][0])
    r1, r2 = np.random.default_rng(9), np.random.default_rng(9)
    batches(ds, 2, rng=r1)  # draws happen at the call, however much of the epoch is consumed
    next(iter(batches(ds, 2, rng=r2)))
    assert r1.random() == r2.random()
    assert len(run(np.random.default_rng(4), drop_last=True)) == 4
    assert not all(np.array_equal(p[1], q[1]) for p, q in zip(a, run(np.random.default_rng(5))))


def test_batches_without_crop_pad_to_the_largest_and_do_not_augment():
    ds = ToyDataset([(5, 6), (7, 4)])
    (x, y), = list(batches(ds, 2, rng=np.random.default_rng(0), shuffle=False))
    assert x.shape == (2, 3, 7, 6)
    np.testing.assert_array_equal(y[0, :5, :6], ds.masks[0])
    assert np.all(y[0, 5:] == 255) and np.all(y[1, :, 4:] == 255) and np.all(x[1, :, :, 4:] == 0)
    np.testing.assert_array_equal(x[1], np.pad(ds[1].image, ((0, 0), (0, 0), (0, 2))))


def test_pad_to_multiple_literal_case():
    x = np.arange(15, dtype=np.float32).reshape(1, 1, 3, 5) + 1
    p, box = pad_to_multiple(x, 4)
    assert box == (0, 3, 1, 6)  # H 3 -> 4 (0 top, 1 bottom), W 5 -> 8 (1 left, 2 right)
    expect = np.array([[0, 1, 2, 3, 4, 5, 0, 0],
                       [0, 6, 7, 8, 9, 10, 0, 0],
                       [0, 11, 12, 13, 14, 15, 0, 0],
                       [0, 0, 0, 0, 0, 0, 0, 0]], np.float32)
    np.testing.assert_array_equal(p[0, 0], expect)


@settings(max_examples=30, deadline=None)
@given(H=st.integers(1, 40), W=st.integers(1, 40), m=st.sampled_from([1, 2, 8, 16]), lead=st.integers(0, 2))
def test_pad_to_multiple_round_trip(H, W, m, lead):
    x = np.random.default_rng(H * 41 + W).random((2,) * lead + (H, W)).astype(np.float32) + 1
    p, (y0, y1, x0, x1) = pad_to_multiple(x, m)
    assert p.shape[-2] % m == 0 and p.shape[-1] % m == 0 and p.shape[-2] - H < m and p.shape[-1] - W < m
    np.testing.assert_array_equal(p[..., y0:y1, x0:x1], x)
    assert p.sum() == pytest.approx(x.sum(), rel=1e-5)  # nothing but zeros added


def test_channel_stats_against_numpy():
    ds = ToyDataset([(8, 9), (5, 7), (10, 3)])
    mean, std = channel_stats(ds, max_items=10)
    pix = np.concatenate([ds[i].image.reshape(3, -1) for i in range(3)], axis=1)
    np.testing.assert_allclose(mean, pix.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(std, pix.std(axis=1), rtol=1e-4)
    mean2, _ = channel_stats(ds, max_items=2)  # first and last only
    pix2 = np.concatenate([ds[i].image.reshape(3, -1) for i in (0, 2)], axis=1)
    np.testing.assert_allclose(mean2, pix2.mean(axis=1), rtol=1e-5)


# ---------------------------------------------------------------- writing masks and overlays

def test_write_mask_png_and_overlay(tmp_path):
    m = np.array([[0, 1, 2], [255, 1, 0]], np.uint8)
    colors = [(0, 0, 0), (255, 0, 0), (0, 0, 200)]
    write_mask_png(tmp_path / "m.png", m, colors)
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P" and im.getpalette()[:9] == [0, 0, 0, 255, 0, 0, 0, 0, 200]
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), m)
    img = np.full((2, 3), 100, np.uint8)  # grayscale image
    write_overlay_png(tmp_path / "o.png", img, m, colors, alpha=0.5)
    o = np.asarray(Image.open(tmp_path / "o.png"))
    expect = np.full((2, 3, 3), 100, np.uint8)
    expect[0, 1] = expect[1, 1] = (178, 50, 50)  # 0.5 * 100 + 0.5 * (255, 0, 0), rounded
    expect[0, 2] = (50, 50, 150)
    np.testing.assert_array_equal(o, expect)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "o.png"]  # no temp files left
