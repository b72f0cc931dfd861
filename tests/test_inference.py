"""cvtool.model.inference: channel preparation, padding to the net's multiple, and tiles that equal the whole image.

Oracles: hand-worked literals (halo of small nets, luma weights, class fractions), an empirical
receptive field (perturb one pixel, see how far the logits move), and the untiled forward pass.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cvtool_backends as registry
from cvtool.errors import DataError
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.inference import (
    class_fractions,
    halo,
    min_tile,
    net_pixels,
    predict_batch,
    predict_tiled,
    prepare,
    segment_logits,
    tile_margin,
)
from cvtool.model.meta import ModelMeta
from cvtool.model.spec import ModelSpec, init_params
from cvtool.model.tiling import plan_tiling

COLORS = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]


def tiny_params(spec: ModelSpec, seed: int = 0) -> dict[str, np.ndarray]:
    """init_params with BatchNorm statistics and biases drawn too, so that no layer is an identity."""
    p = init_params(spec, seed)
    rng = np.random.default_rng(seed + 100)
    for k, v in p.items():
        if k.endswith("running_var"):
            p[k] = rng.uniform(0.5, 2.0, v.shape).astype(np.float32)
        elif k.endswith(("running_mean", ".bias")):
            p[k] = rng.normal(0.0, 0.2, v.shape).astype(np.float32)
    return p


def tiny_checkpoint(path: Path, *, in_channels: int = 1, num_classes: int = 3, depth: int = 2, seed: int = 0,
                    params: dict | None = None) -> Path:
    """A width-4 U-Net saved as a cvtool checkpoint (what `cvtool train` writes, minus training state)."""
    spec = ModelSpec(in_channels=in_channels, num_classes=num_classes, width=4, depth=depth)
    meta = ModelMeta([f"class{i}" for i in range(num_classes)], COLORS[:num_classes], [0.5] * in_channels,
                     [0.25] * in_channels)
    ck = ckpt_io.Checkpoint(spec, params if params is not None else tiny_params(spec, seed), meta)
    return ckpt_io.save(ck, path)


@pytest.fixture(scope="module")
def torch_be():
    return registry.get("torch", "cpu")


# --- prepare --------------------------------------------------------------------------------------

def test_prepare_converts_channels_and_normalises():
    rgb = np.array([[[255, 0, 0], [0, 255, 0]]], np.uint8)  # (1, 2, 3)
    x, hw = prepare(rgb, 1, [0.0], [1.0])
    np.testing.assert_allclose(x, [[[0.299, 0.587]]], rtol=1e-6)  # ITU-R 601 luma
    assert hw == (1, 2)
    gray = np.array([[51]], np.uint8)
    x, _ = prepare(gray, 3, [0.1, 0.2, 0.3], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(x[:, 0, 0], [(0.2 - 0.1) / 0.5, 0.0, (0.2 - 0.3) / 0.5], atol=1e-6)
    rgba = np.dstack([rgb, np.full((1, 2), 7, np.uint8)])
    np.testing.assert_array_equal(prepare(rgba, 3, [0] * 3, [1] * 3).x, prepare(rgb, 3, [0] * 3, [1] * 3).x)
    assert prepare(rgb, 3, [0] * 3, [1] * 3).x.dtype == np.float32
    with pytest.raises(DataError, match="has 1 channel.*takes 2"):
        prepare(gray, 2, [0, 0], [1, 1], name="g.png")


def test_class_fractions_literal():
    mask = np.array([[0, 1, 1], [1, 2, 2]], np.uint8)
    assert class_fractions(mask, ["a", "b", "c", "d"]) == {"a": 1 / 6, "b": 3 / 6, "c": 2 / 6, "d": 0.0}


# --- padding --------------------------------------------------------------------------------------

def test_predict_batch_pads_edges_to_the_multiple_and_crops_back():
    seen = []

    def identity(x):
        seen.append(x.shape)
        return x

    x = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3)
    got = predict_batch(identity, [x, x + 1], 4)
    assert seen == [(2, 2, 8, 4)]
    np.testing.assert_array_equal(got[0], x)
    np.testing.assert_array_equal(got[1], x + 1)
    one = predict_batch(lambda b: b.copy(), [np.full((1, 1, 1), 3.0, np.float32)], 8)[0]
    assert one.shape == (1, 1, 1) and one[0, 0, 0] == 3.0

    def spy(b):  # the padding is the edge pixel repeated, not zeros
        np.testing.assert_array_equal(b[0, :, 5:, :], np.repeat(b[0, :, 4:5, :], 3, axis=1))
        np.testing.assert_array_equal(b[0, :, :, 3:], np.repeat(b[0, :, :, 2:3], 1, axis=2))
        return b

    predict_batch(spy, [x], 4)


# --- halo and tiles -------------------------------------------------------------------------------

@pytest.mark.parametrize("depth,expected", [(0, 2), (1, 10), (2, 26), (3, 58)])
def test_halo_hand_worked(depth, expected):
    """depth 2 by hand: enc0 convs 1+1, pool, enc1 convs 2+2, pool, mid 4+4, up1 +4, dec1 2+2, up0 +2,
    dec0 1+1, head 0 = 26. Margins round up to the multiple."""
    spec = ModelSpec(in_channels=1, num_classes=2, width=4, depth=depth)
    assert halo(spec) == expected
    assert tile_margin(spec) % spec.multiple == 0 and tile_margin(spec) >= expected
    assert min_tile(spec) == 2 * tile_margin(spec) + spec.multiple


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_halo_bounds_the_real_reach(torch_be, depth):
    """Perturb one pixel (four phases of the pooling grid): logits move no farther than halo(spec)."""
    spec = ModelSpec(in_channels=1, num_classes=2, width=4, depth=depth)
    run = torch_be.runner(spec, tiny_params(spec))
    x = np.random.default_rng(0).standard_normal((1, 1, 160, 160)).astype(np.float32)
    base, reach = run(x), 0
    for c in (80, 81, 82, 83):
        x2 = x.copy()
        x2[0, 0, c, c] += 10.0
        ys, xs = np.nonzero(np.abs(run(x2) - base).max(axis=(0, 1)) > 0)
        reach = max(reach, c - ys.min(), ys.max() - c, c - xs.min(), xs.max() - c)
    assert reach <= halo(spec) <= reach + spec.multiple


@pytest.mark.parametrize("hw, tile, expected", [
    ((512, 512), None, 512 * 512),  # fits a pass: the image itself
    ((500, 700), None, 504 * 704),  # padded to the multiple 8
    ((500, 700), 512, 504 * 416 * 2),  # cols: 2 tiles of ceil((704 + 128) / 2) = 416, starts 0, 288 (overlap 128)
    ((768, 768), 512, 4 * 448 * 448),  # 2 x 2 tiles of 448 (1.36x; 512-px tiles pulled back cost 1.78x)
    ((100, 1000), 512, 3 * 104 * 424),  # a strip: 3 tiles of round_up(1256 / 3, 8) = 424, starts 0, 288, 576
])
def test_net_pixels_hand_worked_and_as_segment_logits_runs(hw, tile, expected):
    """What validation's time estimate counts (default net: multiple 8, margin 64, exact cores overlapping by 128),
    checked by hand and against the pixels segment_logits really hands the net."""
    spec = ModelSpec(in_channels=1, num_classes=2)
    assert (spec.multiple, tile_margin(spec)) == (8, 64)
    assert net_pixels(hw, spec, tile=tile) == expected
    seen = []

    def predict(b):
        seen.append(b.shape[0] * b.shape[2] * b.shape[3])
        return np.zeros((b.shape[0], 2, *b.shape[2:]), np.float32)

    segment_logits(predict, np.zeros(hw, np.uint8), spec, [0.5], [0.25], tile=tile)
    assert sum(seen) == expected


def test_a_tiling_for_another_size_is_refused():
    spec = ModelSpec(in_channels=1, num_classes=2, width=4, depth=2)
    with pytest.raises(ValueError, match="tiling planned for"):
        predict_tiled(lambda b: b, np.zeros((1, 300, 300), np.float32), plan_tiling(spec, (200, 300), max_side=128))
