"""Augmentation moves image and mask together, never invents a class value, and leaves the mask alone
when it changes intensities."""

import dataclasses

import numpy as np
import pytest

from cvtool.data.augment import PRESETS, Augment, elastic_field, plain_crop, sample_batch, tone_curve, warp
from cvtool.data.io import IGNORE
from cvtool.train.batches import batch_indices

VALUES = np.array([40, 200], np.uint8)  # two classes: the image IS the mask, drawn with these intensities


def blobs(rng, H, W):
    """A mask of random rectangles of class 1 on class 0, and the image drawn from it."""
    m = np.zeros((H, W), np.uint8)
    for _ in range(6):
        y, x = rng.integers(0, H - 4), rng.integers(0, W - 4)
        m[y:y + rng.integers(3, H // 2), x:x + rng.integers(3, W // 2)] = 1
    return VALUES[m][..., None], m


def geometry_only(aug: Augment) -> Augment:
    return dataclasses.replace(aug, brightness=0.0, contrast=0.0, gamma=0.0, noise=0.0, blur=0.0)


@pytest.mark.parametrize("level", list(PRESETS))
@pytest.mark.parametrize("rot90", [False, True])
def test_mask_follows_the_image_under_every_transform(level, rot90):
    rng = np.random.default_rng(0)
    data = [blobs(rng, int(rng.integers(20, 70)), int(rng.integers(20, 70))) for _ in range(5)]
    images, masks = [d[0] for d in data], [d[1] for d in data]
    aug = dataclasses.replace(geometry_only(PRESETS[level]), rot90=rot90, vflip=rot90)
    fill = np.array([0.5], np.float32)
    for seed in range(4):
        x, y = sample_batch(images, masks, np.arange(5), 32, aug, np.random.default_rng(seed), fill=fill,
                            focus=np.array([1]), p_focus=0.5)
        assert x.shape == (5, 1, 32, 32) and y.shape == (5, 32, 32) and y.dtype == np.int64
        assert set(np.unique(y).tolist()) <= {0, 1, IGNORE}  # no class value invented
        v = np.rint(x[:, 0] * 255).astype(np.int64)
        for k, val in enumerate(VALUES):
            exact = np.isclose(x[:, 0] * 255, val, atol=1e-3)
            # where the image shows class k's intensity unblended, the mask says class k
            assert (y[exact] == k).all(), (level, seed, k)
        labelled = y != IGNORE
        assert labelled.mean() > 0.5
        # and every labelled pixel's intensity lies on the segment between the two classes' values
        assert ((v[labelled] >= 40) & (v[labelled] <= 200)).all()
        assert np.allclose(x[:, 0][~labelled], 0.5)  # outside the source: the fill


def test_photometric_changes_never_touch_the_mask():
    rng = np.random.default_rng(3)
    img, m = blobs(rng, 50, 60)
    for level in ("light", "default", "heavy"):
        full, geo = PRESETS[level], geometry_only(PRESETS[level])
        for seed in range(5):
            _, y1 = sample_batch([img], [m], np.array([0]), 40, full, np.random.default_rng(seed), fill=np.zeros(1))
            _, y2 = sample_batch([img], [m], np.array([0]), 40, geo, np.random.default_rng(seed), fill=np.zeros(1))
            assert np.array_equal(y1, y2)


def test_warp_identity_is_the_plain_crop_and_quarter_turns_are_rot90():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    m = rng.integers(0, 3, (30, 40)).astype(np.uint8)
    fill = np.array([0.1, 0.2, 0.3], np.float32)
    for c in [(15, 20), (3, 4), (28, 2)]:  # inside, and crops that leave the image
        a, ya = warp(img, m, 16, c, np.eye(2), fill)
        b, yb = plain_crop(img, m, 16, c, fill)
        assert np.array_equal(ya, yb) and np.abs(a - b).max() < 1e-6
    turn = np.array([[0.0, -1.0], [1.0, 0.0]])
    a, ya = warp(img, m, 16, (15, 20), turn, fill)
    b, yb = plain_crop(img, m, 16, (15, 20), fill)
    assert np.array_equal(ya, np.rot90(yb, -1)) and np.abs(a - np.rot90(b, -1)).max() < 1e-6


def test_tone_curve_is_monotone_and_identity_when_off():
    assert np.array_equal(tone_curve(Augment(), np.random.default_rng(0)), np.arange(256, dtype=np.float32) / 255)
    for seed in range(10):
        t = tone_curve(PRESETS["heavy"], np.random.default_rng(seed))
        assert (np.diff(t) > 0).all()


def test_foreground_oversampling_finds_a_rare_class():
    m = np.zeros((200, 200), np.uint8)
    m[150:154, 20:24] = 1  # 16 of 40,000 pixels
    img = np.zeros((200, 200, 1), np.uint8)
    rng = np.random.default_rng(0)
    _, y = sample_batch([img], [m], np.zeros(64, np.int64), 32, PRESETS["none"], rng, fill=np.zeros(1),
                        focus=np.array([1]), p_focus=1.0)
    assert ((y == 1).any(axis=(1, 2))).all()  # every crop holds the rare object
    _, y = sample_batch([img], [m], np.zeros(64, np.int64), 32, PRESETS["none"], rng, fill=np.zeros(1))
    assert ((y == 1).any(axis=(1, 2))).mean() < 0.3  # uniform crops mostly miss it


def test_batch_indices_cover_each_epoch_once_and_repeat():
    n, B = 7, 3
    seq = np.concatenate([batch_indices(k, B, n, seed=5) for k in range(14)])  # 42 = 6 epochs
    for e in range(6):
        assert sorted(seq[e * n:(e + 1) * n].tolist()) == list(range(n))
    assert np.array_equal(batch_indices(4, B, n, seed=5), batch_indices(4, B, n, seed=5))
    assert not np.array_equal(seq[:n], seq[n:2 * n])


def test_quarter_turns_and_flips_are_exact_permutations():
    """With only flips and 90-degree turns every output pixel is a source pixel: no interpolation blur."""
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (64, 64, 1), dtype=np.uint8)
    m = rng.integers(0, 3, (64, 64)).astype(np.uint8)
    aug = Augment(rot90=True, vflip=True, hflip=True)
    x, y = sample_batch([img], [m], np.zeros(16, np.int64), 32, aug, rng, fill=np.zeros(1))
    assert np.abs(x * 255 - np.rint(x * 255)).max() < 1e-3  # whole source intensities, nothing blended
    # and the image/mask pairing of each pixel is the source's
    pairs = set(zip(img[..., 0].ravel().tolist(), m.ravel().tolist()))
    got = set(zip(np.rint(x[:, 0] * 255).astype(int).ravel().tolist(), y.ravel().tolist()))
    assert got <= pairs


@pytest.mark.slow
def test_elastic_field_is_smooth_centred_and_of_the_asked_spread():
    rng = np.random.default_rng(0)
    f = np.stack([elastic_field(256, 10.0, rng) for _ in range(300)])  # (300, 2, 256, 256)
    assert f.shape[1:] == (2, 256, 256) and f.dtype == np.float32
    assert 8.5 < f.std() < 11.5  # sigma 10 pixels, as U-Net's warp
    assert np.abs(f.mean(axis=0)).max() < 3.0  # no drift in any direction: 300 draws, std of the mean ~0.6
    # smooth: neighbouring pixels move almost together (a 10-px field over 128-px cells)
    assert np.abs(np.diff(f, axis=-1)).max() < 1.0 and np.abs(np.diff(f, axis=-2)).max() < 1.0
    assert np.abs(f[:, 0] - f[:, 1]).mean() > 5  # dy and dx drawn independently


def test_warp_with_a_constant_displacement_is_a_shifted_crop():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (40, 50, 1), dtype=np.uint8)
    m = rng.integers(0, 3, (40, 50)).astype(np.uint8)
    fill = np.zeros(1, np.float32)
    disp = np.zeros((2, 16, 16), np.float32)
    disp[0], disp[1] = 3.0, -2.0  # every output pixel reads 3 rows down and 2 columns left
    a, ya = warp(img, m, 16, (20, 25), np.eye(2), fill, disp=disp)
    b, yb = plain_crop(img, m, 16, (23, 23), fill)
    assert np.array_equal(ya, yb) and np.abs(a - b).max() < 1e-6
