"""Inference that costs what the image costs: the memory a pass takes, whole images where it fits, tiles costing
at most 1.5x the image's pixels otherwise, exact or blended.

Oracles: hand-worked literals (a depth-0 net's peak, one axis's tiles), tracemalloc's peak of the NumPy runner,
the pixels segment_logits really hands the net, and whole-image logits and masks.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
from test_inference import tiny_params  # tests/ is on sys.path under pytest

import cvtool_backends as registry
from cvtool.model.activations import MEMORY_SHARE, host_available_bytes, pass_pixels, peak_bytes_per_pixel
from cvtool.model.inference import predict_batch, predict_tiled, segment_logits, tile_margin
from cvtool.model.spec import ModelSpec, init_params
from cvtool.model.tiling import MAX_RATIO, Axis, axis_layout, axis_weights, plan_tiling


def test_peak_bytes_hand_worked():
    """depth 0 (1 -> 4 -> 4 channels -> 2 classes): at conv2 its input (4) and output (4) live, plus its im2col
    (9 x 4) = 44 values; TTA's extras: the flipped input (1) and two logit maps (2 x 2): 49 floats = 196 bytes."""
    assert peak_bytes_per_pixel(ModelSpec(in_channels=1, num_classes=2, width=4, depth=0)) == 196.0
    # linear in the channels: twice the width, twice every activation (the extras stay)
    a, b = (peak_bytes_per_pixel(ModelSpec(in_channels=3, num_classes=4, width=w, depth=3)) for w in (16, 32))
    assert b - a == a - 4 * (3 + 2 * 4)


def test_peak_bytes_bound_the_numpy_runner():
    """What NumPy really allocates during a forward pass (tracemalloc's peak) stays under the bound."""
    spec = ModelSpec(in_channels=3, num_classes=4, width=8, depth=2)
    run = registry.get("numpy", "cpu").runner(spec, init_params(spec))
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    run(x[:, :, :32, :32])  # warm-up: lazily built constants are not the pass's
    tracemalloc.start()
    try:
        run(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    bound = peak_bytes_per_pixel(spec) * 128 * 128
    assert peak <= bound, (peak, bound)


def test_pass_pixels_from_the_free_memory():
    spec = ModelSpec(in_channels=3, num_classes=4)
    per_px = peak_bytes_per_pixel(spec)
    assert pass_pixels(spec, free_bytes=8 << 30) == int(MEMORY_SHARE * (8 << 30) / per_px)
    avail = host_available_bytes()
    assert avail is None or avail > 0
    # the case: a 1024 x 1024 image through the default net fits in a pass with 3 GB free
    assert pass_pixels(spec, free_bytes=3 * 10**9) >= 1024 * 1024


def test_axis_layout_hand_worked():
    """1000 px, tiles of at most 400 sharing 128: 4 tiles of ceil((1000 + 3 x 128) / 4) = 346 -> 352 (multiple 8),
    starts 8 x round(i x 81 / 3): 0, 216, 432, 648; each pair shares 136 >= 128."""
    ax = axis_layout(1000, 400, 128, 8)
    assert ax == Axis(1000, 352, (0, 216, 432, 648)) and ax.overlaps() == [136, 136, 136]
    assert axis_layout(300, 400, 128, 8) == Axis(300, 300, (0,))  # a side that fits is not cut


@pytest.mark.parametrize("depth", range(0, 7))
def test_tiles_cost_at_most_1_5x_the_image_at_any_depth(depth):
    """Every layout: tiles on the pooling grid, within the pass budget, covering every pixel with positive weight,
    and net pixels <= 1.5x the image's (the padding to the net's multiple aside, which whole images pay too)."""
    spec = ModelSpec(in_channels=3, num_classes=4, depth=depth)
    m = spec.multiple
    for hw in [(3000, 4000), (1000, 1500), (620, 640), (333, 20000), (1999, 777)]:
        for budget in (None, 1_000_000, 300_000):
            t = plan_tiling(spec, hw, max_pixels=budget)
            Hp, Wp = t.rows.size, t.cols.size
            assert (Hp, Wp) == (math.ceil(hw[0] / m) * m, math.ceil(hw[1] / m) * m)
            pad = Hp * Wp / (hw[0] * hw[1])
            if t.mode == "whole":
                assert t.net_pixels == Hp * Wp and (budget is None or Hp * Wp <= budget)
                continue
            assert t.ratio <= MAX_RATIO * pad, (hw, budget, t.to_dict())
            if budget is not None:
                assert t.rows.tile * t.cols.tile <= max(budget, (4 * m) ** 2)
            for ax in (t.rows, t.cols):  # the weights are a grid's outer products: each axis must cover
                norm = np.zeros(ax.size, np.float32)
                for start in ax.starts:
                    assert start % m == 0
                    norm[start:start + ax.tile] += axis_weights(ax, start, t.mode, t.margin)
                assert norm.min() > 0 and ax.starts[0] == 0 and ax.starts[-1] + ax.tile == ax.size


def test_a_4000x3000_image_costs_its_pixels():
    """segment_logits on a 3000 x 4000 image: the pixels handed to the net are the layout's, at most 1.5x the
    image's (x2 with flip TTA, stated: every pass runs twice), with the host's budget and with a small one."""
    spec = ModelSpec(in_channels=1, num_classes=2)
    for free in (None, 256 << 20):
        seen = []

        def predict(b):
            seen.append(b.shape[0] * b.shape[2] * b.shape[3])
            return np.zeros((b.shape[0], 2, *b.shape[2:]), np.float32)

        segment_logits(predict, np.zeros((3000, 4000), np.uint8), spec, [0.5], [0.25], tta="flip", free_bytes=free)
        t = plan_tiling(spec, (3000, 4000), max_pixels=pass_pixels(spec, free))
        assert sum(seen) == 2 * t.net_pixels and t.ratio <= MAX_RATIO
        assert max(seen) <= pass_pixels(spec, free)
    assert t.mode == "blend" and t.n_tiles > 4  # 256 MB free: tiles of about 300 x 300


@pytest.mark.parametrize("hw,tile", [((1001, 1499), 256), ((37, 700), 128), ((700, 5), 96), ((64, 64), 64)])
def test_exact_tiles_equal_whole_image_logits(hw, tile):
    """Tiles with exact cores (odd sizes, thin images, one tile) blend without seams: equal to one forward pass."""
    spec = ModelSpec(in_channels=1, num_classes=3, width=4, depth=2)
    run = registry.get("ort", "cpu").runner(spec, tiny_params(spec, 3))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, *hw)).astype(np.float32)
    x = (x + np.roll(x, 1, 1) + np.roll(x, 1, 2)) / 2  # some spatial correlation, like an image
    calls = []

    def counted(b):
        calls.append(b.shape)
        return run(b)

    t = plan_tiling(spec, hw, max_side=tile, max_ratio=math.inf)
    assert t.mode in ("exact", "whole")
    tiled = predict_tiled(counted, x, t, batch_size=3)
    whole = predict_batch(run, [x], spec.multiple)[0]
    assert tiled.shape == whole.shape == (3, *hw)
    assert max(max(s[2], s[3]) for s in calls) <= tile and max(s[0] for s in calls) <= 3  # memory stays bounded
    rel = np.abs(tiled - whole).max() / np.abs(whole).max()
    assert rel < 1e-5, rel


def test_exact_where_cheap_blend_where_not():
    """Default net (margin 64): 4000 x 3000 in tiles of 1024 keeps exact cores at 1.28x; tiles of 512 would cost
    (512 / 384)**2 = 1.78x with exact cores, so they blend; depth 5's margin of 256 at 1024 blends too."""
    spec = ModelSpec(in_channels=3, num_classes=4)
    assert tile_margin(spec) == 64
    exact = plan_tiling(spec, (3000, 4000), max_side=1024)
    assert exact.mode == "exact" and exact.ratio <= 1.3
    blend = plan_tiling(spec, (3000, 4000), max_side=512)
    assert blend.mode == "blend" and blend.ratio <= MAX_RATIO and min(blend.rows.overlaps()) > 0
    deep = plan_tiling(ModelSpec(in_channels=3, num_classes=4, depth=5), (3000, 4000), max_side=1024)
    assert deep.mode == "blend" and deep.ratio <= MAX_RATIO


def test_depth5_on_640x620_runs_whole():
    """The issue's aerial case: a depth-5 net (reach 250 px) on 640 x 620 images. With 512-px tiles raised to the
    544 px such a net needs, each image was cut into 16 tiles, 11.9x its pixels; now it runs whole (padded to 640 x
    640: 1.03x) wherever 1.1 GiB is free (twice its 0.55 GiB bound), and blends 4 tiles (<= 1.5x) where less is."""
    spec = ModelSpec(in_channels=3, num_classes=5, depth=5)
    assert tile_margin(spec) == 256
    t = plan_tiling(spec, (620, 640), free_bytes=int(1.1 * 2**30))
    assert t.mode == "whole" and t.net_pixels == 640 * 640 and round(t.ratio, 3) == 1.032
    small = plan_tiling(spec, (620, 640), max_pixels=300_000)
    assert small.mode == "blend" and small.n_tiles == 4 and small.ratio <= MAX_RATIO


@pytest.mark.slow
def test_blended_tiles_agree_with_the_whole_image():
    """A depth-5 net trained briefly on the synthetic shapes (150 steps, batch 8 at 128 px) segments a 620 x 640
    image whole and in blended tiles (overlap 128 < the 512 exact cores would need): >= 99.9% of the pixels get the
    same class. (A random-weight net is no oracle here: its near-tied logits flip on any change.)"""
    from cvtool.data.synth import synth_chw
    from cvtool.train.optim import OptimConfig

    spec = ModelSpec(in_channels=3, num_classes=4, depth=5, width=4)
    tr = registry.get("torch", "cpu").trainer(spec, init_params(spec, 0), optim=OptimConfig(), seed=0, dice=1.0)
    rng = np.random.default_rng(0)
    for _ in range(150):
        xs, ys = zip(*[synth_chw(rng, 128) for _ in range(8)])
        tr.step((np.stack(xs).astype(np.float32) / 255 - 0.5) / 0.25, np.stack(ys).astype(np.int64), 3e-3)
    img, mask = synth_chw(np.random.default_rng(5), 640)
    x = ((img.astype(np.float32) / 255 - 0.5) / 0.25)[:, :620, :]
    whole = predict_batch(tr.predict, [x], spec.multiple)[0].argmax(0)
    assert (whole == mask[:620]).mean() > 0.7  # it learnt something: the oracle is a net that decides
    t = plan_tiling(spec, (620, 640), max_pixels=300_000)
    assert t.mode == "blend" and t.n_tiles == 4 and t.ratio <= MAX_RATIO
    agree = (predict_tiled(tr.predict, x, t).argmax(0) == whole).mean()
    assert agree >= 0.999, agree


@pytest.mark.parametrize("max_pixels", [60_000, 12_000])
def test_bands_give_predict_tiled_masks_bit_for_bit(max_pixels):
    """segment_bands (one band of tiles in memory, rows read on demand) against predict_tiled on the whole image:
    the same classes everywhere, exact (60,000 px a pass) and blended (12,000) alike, with a real net."""
    from cvtool.model.bands import segment_bands
    from cvtool.model.inference import prepare

    spec = ModelSpec(in_channels=1, num_classes=3, width=4, depth=2)
    run = registry.get("numpy", "cpu").runner(spec, tiny_params(spec, 2))
    img = np.random.default_rng(3).integers(0, 256, (601, 517), dtype=np.uint8)
    t = plan_tiling(spec, img.shape, max_pixels=max_pixels)
    assert t.mode == ("exact" if max_pixels == 60_000 else "blend") and len(t.rows.starts) > 2
    read = []

    def rows(r0, r1):
        read.append((r0, r1))
        return img[r0:r1]

    mask = segment_bands(run, rows, t, lambda r: prepare(r, 1, [0.5], [0.25]).x, batch_size=1)
    whole = predict_tiled(run, prepare(img, 1, [0.5], [0.25]).x, t, batch_size=1).argmax(0)
    np.testing.assert_array_equal(mask, whole)
    assert max(r1 - r0 for r0, r1 in read) <= t.rows.tile  # never more than a band of rows at once
