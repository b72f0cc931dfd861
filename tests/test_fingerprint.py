"""The dataset fingerprint: connected components against a brute-force flood fill, statistics of small
made-up datasets whose numbers are known by construction, the warnings, and the per-image cache."""

import os

import numpy as np
import pytest
from PIL import Image

from cvtool.data import open_datasets
from cvtool.data.components import boundary_pixels, component_areas
from cvtool.data.fingerprint import dataset_fingerprint, fingerprint, image_record, weighted_median


def flood_areas(m):
    """4-connected component areas by an explicit flood fill (the oracle)."""
    H, W = m.shape
    seen = np.zeros_like(m, bool)
    out = []
    for i in range(H):
        for j in range(W):
            if m[i, j] and not seen[i, j]:
                stack, n = [(i, j)], 0
                seen[i, j] = True
                while stack:
                    a, b = stack.pop()
                    n += 1
                    for c, d in ((a + 1, b), (a - 1, b), (a, b + 1), (a, b - 1)):
                        if 0 <= c < H and 0 <= d < W and m[c, d] and not seen[c, d]:
                            seen[c, d] = True
                            stack.append((c, d))
                out.append(n)
    return sorted(out, reverse=True)


def test_components_match_flood_fill_on_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(200):
        H, W = rng.integers(1, 25, 2)
        m = rng.random((H, W)) < rng.random()
        assert component_areas(m).tolist() == flood_areas(m)


def test_components_hand_cases():
    m = np.zeros((7, 9), bool)
    m[1:3, 1:3] = True  # a 2x2 square: 4
    m[4:7, 5:8] = True  # a 3x3 square: 9
    m[0, 8] = True  # a lone pixel
    assert component_areas(m).tolist() == [9, 4, 1]
    u = np.zeros((4, 5), bool)  # a U shape joins only through its bottom row: one component of 11
    u[0:3, 0] = u[0:3, 4] = True
    u[3, :] = True
    assert component_areas(u).tolist() == [11]
    diag = np.eye(4, dtype=bool)  # diagonal neighbours are not 4-connected
    assert component_areas(diag).tolist() == [1, 1, 1, 1]
    assert boundary_pixels(np.ones((3, 3), bool)) == 0  # the image border is not an edge
    sq = np.zeros((5, 5), bool)
    sq[1:4, 1:4] = True
    assert boundary_pixels(sq) == 8  # all but the centre


def test_weighted_median_counts_pixels_not_fragments():
    # nine fragments of 1 px and one object of 100 px: the median pixel lies in the object
    assert weighted_median(np.array([1] * 9 + [100])) == 100
    assert weighted_median(np.array([5, 5, 5])) == 5


def _rec(h, w, mask, value=128, C=1):
    img = np.full((h, w, C), value, np.uint8)
    return image_record(img, mask.astype(np.uint8), 3)


def test_fingerprint_of_known_records():
    m1 = np.zeros((10, 20), np.uint8)
    m1[2:5, 2:5] = 1  # a 3x3 object of class 1
    m1[6:8, 10:12] = 1  # a 2x2 object of class 1
    m2 = np.zeros((12, 20), np.uint8)
    m2[0:2, :] = 255  # 40 ignored pixels
    m3 = np.zeros((30, 40), np.uint8)
    v = np.zeros((8, 8), np.uint8)
    v[0:4, 0:4] = 2
    train = [_rec(10, 20, m1, 0), _rec(12, 20, m2, 255), _rec(30, 40, m3, 51)]
    val = [_rec(8, 8, v)]
    fp = fingerprint(train, val, ["bg", "obj", "rare"], 1, ["a note"])
    assert (fp.n_train, fp.n_val) == (3, 1)
    assert fp.size_h == [8, 11, 30] and fp.size_w == [8, 20, 40]  # min / median / max over all 4 images
    assert fp.val_sizes == [[8, 8, 1]]  # [h, w, images]: what validation's tiles are planned from
    npx = 200 + 240 + 1200
    mean = (0 * 200 + 255 * 240 + 51 * 1200) / 255 / npx
    assert fp.mean == pytest.approx([mean])
    sq = ((255 / 255) ** 2 * 240 + (51 / 255) ** 2 * 1200) / npx
    assert fp.std == pytest.approx([np.sqrt(sq - mean**2)])
    labelled = npx - 40
    assert fp.class_share == pytest.approx([(labelled - 13) / labelled, 13 / labelled, 0.0])
    assert fp.class_images == pytest.approx([1.0, 1 / 3, 0.0])
    assert fp.val_images == [1, 0, 1]
    assert fp.ignore_share == pytest.approx(40 / npx)
    assert fp.object_count[1] == 2 and fp.object_area[1] == 9  # area-weighted: 9 of the 13 pixels are in the 3x3
    assert fp.thickness[1] == pytest.approx(2 * 13 / (8 + 4))  # boundaries: 8 of the 3x3, all 4 of the 2x2
    assert fp.object_area[2] is None and fp.thickness[2] is None
    text = " | ".join(fp.warnings)
    assert "class 1 (obj) is in only 1 training image(s)" in text
    assert "class 1 (obj) is missing from the validation split" in text
    assert "class 2 (rare) is in only 0 training image(s)" in text
    assert fp.notes == ["a note"]


def _write_set(root, masks, names=None):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, m in enumerate(masks):
        Image.fromarray((m * 40 + 20).astype(np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(m.astype(np.uint8)).save(root / "masks" / f"{i}.png")


def test_dataset_fingerprint_is_cached_per_file(tmp_path):
    rng = np.random.default_rng(1)
    masks = [(rng.random((16, 16)) < 0.3).astype(np.uint8) for _ in range(6)]
    _write_set(tmp_path / "d", masks)
    cache = tmp_path / "cache" / "fp.json"
    tr, va, info = open_datasets(str(tmp_path / "d"), val_split=0.34, seed=0)
    first = dataset_fingerprint(tr, va, info.notes, cache)
    assert not first.cached and cache.is_file()
    again = dataset_fingerprint(tr, va, info.notes, cache)
    assert again.cached and again.to_dict() | {"cached": False} == first.to_dict()
    # a changed file is read again, and only that one
    m = masks[0].copy()
    m[:] = 1
    p = tmp_path / "d" / "masks" / "0.png"
    Image.fromarray(m).save(p)
    os.utime(p, ns=(10**18, 10**18))
    tr, va, info = open_datasets(str(tmp_path / "d"), val_split=0.34, seed=0)
    third = dataset_fingerprint(tr, va, info.notes, cache)
    assert not third.cached and third.to_dict() != first.to_dict()


def test_fingerprint_carries_the_remap_note(tmp_path):
    rng = np.random.default_rng(2)
    masks = [np.choose(rng.integers(0, 3, (12, 12)), [0, 38, 75]).astype(np.uint8) for _ in range(5)]
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, m in enumerate(masks):
        Image.fromarray(np.full((12, 12), 99, np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(m).save(root / "masks" / f"{i}.png")
    tr, va, info = open_datasets(str(root), val_split=0.2, seed=0)
    fp = dataset_fingerprint(tr, va, info.notes, None)
    assert len(fp.classes) == 3
    assert any("38" in n and "75" in n for n in fp.notes)
    counts = sum(np.bincount(tr[i].mask.ravel(), minlength=3) for i in range(len(tr)))
    assert fp.class_share == pytest.approx((counts / counts.sum()).tolist())
