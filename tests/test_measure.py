"""The plan's validation estimate counts what validation costs beyond the net (cvtool.train.prepare._measure):
with the net made free, what is left is the per-pixel cost of resampling, resizing K-class logits back, argmax,
loss and confusion, times every validation pixel."""

import numpy as np
import pytest

import cvtool.train.prepare as prepare
from cvtool.model.spec import ModelSpec
from cvtool.train.plan import Plan


class FreeNet:
    """A trainer whose step and predict cost (almost) nothing: the estimate is then the work after the net."""

    def __init__(self, K):
        self.K = K

    def step(self, x, y, lr):
        return 0.0

    def predict(self, x):
        return np.zeros((x.shape[0], self.K, *x.shape[2:]), np.float32)


@pytest.mark.parametrize("with_full", [True, False])
def test_the_validation_estimate_counts_every_pixel_after_the_net(monkeypatch, with_full):
    K, per_px = 7, 2e-6
    spec = ModelSpec(in_channels=3, num_classes=K, width=4, depth=2)
    sizes = [(96, 128), (100, 120), (90, 140), (110, 100)]
    full_imgs = [np.zeros((h, w, 3), np.uint8) for h, w in sizes]
    masks = [np.zeros((h, w), np.uint8) for h, w in sizes]
    scaled = [im[::2, ::2] for im in full_imgs]  # the plan's scale 0.5
    seen = []
    monkeypatch.setattr(prepare, "_post_seconds", lambda lg, im, m, hw, ig, clock=None: seen.append((lg.shape, hw)) or per_px)
    plan = Plan(tta="none", mean=[0.5] * 3, std=[0.25] * 3)
    _, val_s, _ = prepare._measure(lambda *a: FreeNet(K), spec, plan, lambda i: (None, None), 0, None, scaled,
                                   full=(full_imgs, masks) if with_full else None)
    after = per_px * sum(h * w for h, w in sizes) if with_full else 0.02 * len(sizes)
    assert after * 1.2 <= val_s < after * 1.2 + 0.05  # the free net adds milliseconds at most
    if with_full:
        assert len(seen) == len(sizes)  # the warm-up image as well, untimed
        assert all(s[0] == K and s[1:] == hw for s, hw in seen)  # logits at the net's size, the image's hw
    else:
        assert not seen


def test_post_seconds_measures_a_real_pass():
    lg = np.random.default_rng(0).standard_normal((5, 30, 40)).astype(np.float32)
    im = np.zeros((60, 80, 3), np.uint8)
    m = np.zeros((60, 80), np.uint8)
    s = prepare._post_seconds(lg, im, m, (30, 40), 255)
    assert 0 < s < 1e-3  # seconds per pixel: a 4800-pixel image takes well under 5 s
