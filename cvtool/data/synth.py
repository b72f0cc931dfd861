"""The built-in dataset: textured, noisy RGB images with circles, squares and triangles, made on the fly.

Colour tells nothing: shape colours and background blotch colours come from the same distribution
(uniform RGB), every shape has the same expected area, and grain + noise cover everything alike,
so a net has to learn outlines. Sample i of (seed, stream) is a pure function of those three numbers.
"""

from __future__ import annotations

import functools

import numpy as np

from cvtool.data.io import IGNORE, voc_palette
from cvtool.data.loader import Sample
from cvtool.data.validate import Record, record_from_mask

CLASSES = ["background", "circle", "square", "triangle"]
COLORS = voc_palette(len(CLASSES))
TRAIN, VAL = 0, 1  # seed streams: the two splits never share a generator seed

# Equal areas: pi r^2 = (2h)^2 (square of half-side h) = 3*sqrt(3)/4 R^2 (triangle of circumradius R).
_SQUARE_HALF = np.sqrt(np.pi) / 2  # h / r
_TRI_RADIUS = np.sqrt(4 * np.pi / (3 * np.sqrt(3)))  # R / r


@functools.lru_cache(maxsize=32)
def _lerp_table(S: int, g: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of S pixels: the grid point i0 before it and the weight w of point i0 + 1 (g points span S)."""
    t = (np.arange(S) + 0.5) / S * (g - 1)
    i0 = np.minimum(np.floor(t).astype(np.int64), g - 2)
    return i0, (t - i0).astype(np.float32)


def smooth_field(rng: np.random.Generator, S: int, g: int, C: int) -> np.ndarray:
    """(C, S, S) float32: uniform random values on a g x g grid, bilinearly interpolated.

    Gathers and lerps rather than an (S, g) weight-matrix product: no BLAS call, whose threads cost more
    than the arithmetic at these sizes."""
    i0, w = _lerp_table(S, g)
    G = rng.random((C, g, g), dtype=np.float32)
    A = G[:, :, i0] * (1 - w) + G[:, :, i0 + 1] * w  # (C, g, S): along x first, on the small grid
    wy = w[:, None]
    return A[:, i0, :] * (1 - wy) + A[:, i0 + 1, :] * wy  # (C, S, S): whole rows gathered, then mixed


def shape_mask(cls: int, dy: np.ndarray, dx: np.ndarray, r: float, theta: float) -> np.ndarray:
    """Boolean inside-test for class cls (1 circle, 2 square, 3 triangle) of equal-area radius r, rotated
    by theta; dy (h, 1) and dx (1, w) are pixel-centre offsets from the shape's centre."""
    c, s = np.cos(theta), np.sin(theta)
    if cls == 1:
        return dy * dy + dx * dx <= r * r
    if cls == 2:
        h = _SQUARE_HALF * r
        return (np.abs(c * dx + s * dy) <= h) & (np.abs(c * dy - s * dx) <= h)
    # triangle: inside all three edges; the outward normals point away from the vertices, inradius = R / 2
    R = _TRI_RADIUS * r
    inside = np.ones(np.broadcast_shapes(dy.shape, dx.shape), bool)
    for k in range(3):
        a = theta + np.pi + 2 * np.pi * k / 3
        inside &= np.cos(a) * dx + np.sin(a) * dy <= R / 2
    return inside


def synth_chw(rng: np.random.Generator, S: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One image uint8 (3, S, S) and its mask uint8 (S, S) (0 background, 1 circle, 2 square, 3 triangle)."""
    img = smooth_field(rng, S, 4, 3)  # background: colour blotches
    mask = np.zeros((S, S), np.uint8)
    n_shapes = int(rng.integers(3, 8))
    for _ in range(n_shapes):  # later shapes cover earlier ones: drawing order resolves overlaps
        cls = int(rng.integers(1, 4))
        r = rng.uniform(0.08, 0.2) * S
        cy, cx = rng.uniform(0, S, size=2)
        theta, grad_dir = rng.uniform(0, 2 * np.pi, size=2)
        colour = rng.random(3, dtype=np.float32)[:, None, None]  # same law as the blotch colours
        grad = rng.uniform(-0.15, 0.15)  # a gentle shading ramp across the shape
        ext = _TRI_RADIUS * r  # the largest extent of any class
        y0, y1 = max(int(cy - ext), 0), min(int(cy + ext) + 2, S)
        x0, x1 = max(int(cx - ext), 0), min(int(cx + ext) + 2, S)
        if y1 <= y0 or x1 <= x0:
            continue
        dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
        dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
        inside = shape_mask(cls, dy, dx, r, theta)
        ramp = (np.cos(grad_dir) * dx + np.sin(grad_dir) * dy) * np.float32(grad / r)
        box = img[:, y0:y1, x0:x1]
        box[:] = np.where(inside, colour + ramp, box)
        mask[y0:y1, x0:x1][inside] = cls
    grain = smooth_field(rng, S, max(S // 6, 2), 1) - np.float32(0.5)  # texture over everything
    img += grain * np.float32(rng.uniform(0.1, 0.4))
    sigma = np.float32(rng.uniform(0.01, 0.06) * np.sqrt(12))  # uniform pixel noise (4x cheaper than normal)
    img += (rng.random((3, S, S), dtype=np.float32) - np.float32(0.5)) * sigma
    np.clip(img, 0, 1, out=img)
    return (img * 255 + 0.5).astype(np.uint8), mask


def synth_sample(rng: np.random.Generator, S: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """One image uint8 (S, S, 3) and its mask uint8 (S, S), as written to PNG files."""
    img, mask = synth_chw(rng, S)
    return np.ascontiguousarray(img.transpose(1, 2, 0)), mask


def sample_rng(seed: int, stream: int, i: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, i])


class SynthDataset:
    """n generated images of size x size; ds[i] is the same every time (seed, stream, i fix it)."""

    ignore_index = IGNORE
    in_channels = 3

    def __init__(self, n: int, size: int = 128, seed: int = 0, stream: int = TRAIN):
        if size < 8:
            raise ValueError(f"synthetic images need size >= 8, got {size}")
        self.n, self.size, self.seed, self.stream = n, size, seed, stream
        self.classes = list(CLASSES)
        self.colors = list(COLORS)
        split = {TRAIN: "train", VAL: "val"}.get(stream, f"stream {stream}")
        self.description = f"synthetic shapes, {split}: {n} RGB images {size}x{size}, seed {seed}"

    def __len__(self) -> int:
        return self.n

    def _rng(self, i: int) -> np.random.Generator:
        if not -self.n <= i < self.n:
            raise IndexError(f"sample {i} of {self.n}")
        return sample_rng(self.seed, self.stream, i % self.n)

    def generate(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(image uint8 (S, S, 3), mask uint8 (S, S))."""
        return synth_sample(self._rng(i), self.size)

    def name(self, i: int) -> str:
        return f"{i % self.n:05d}"

    def __getitem__(self, i: int) -> Sample:
        img, mask = synth_chw(self._rng(i), self.size)
        return Sample(img.astype(np.float32) * np.float32(1 / 255), mask.astype(np.int64), self.name(i))

    def scan(self, i: int) -> Record:
        _, mask = synth_chw(self._rng(i), self.size)
        return record_from_mask(self.name(i), f"synth:{self.seed}/{self.stream}/{self.name(i)}", "generated",
                                mask.shape, mask)

    @staticmethod
    def value_map(values: np.ndarray) -> np.ndarray:
        return values


__all__ = ["CLASSES", "COLORS", "TRAIN", "VAL", "SynthDataset", "synth_sample", "synth_chw", "smooth_field",
           "shape_mask"]
