"""A dataset held in memory as uint8 arrays: what time-driven training samples its batches from.

Images are kept (H, W, C) uint8, so one fancy-index gathers all channels of a pixel; masks (H, W) uint8 hold
class indices (255 = ignore). `rescale` resamples both once (image: Pillow's antialiased bilinear, mask:
nearest), the way `cvtool segment` will resample what it is given.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from cvtool.data.io import IGNORE


@dataclass
class ArraySet:
    names: list[str]
    images: list[np.ndarray]  # uint8 (H, W, C)
    masks: list[np.ndarray]  # uint8 (H, W)
    classes: list[str]
    colors: list
    in_channels: int
    ignore_index: int = IGNORE
    scale: float = 1.0  # resampling applied to the files' images
    full_masks: list[np.ndarray] = field(default_factory=list)  # masks at the files' size (for scoring)

    def __len__(self) -> int:
        return len(self.images)


def to_hwc_uint8(chw: np.ndarray) -> np.ndarray:
    """float32 (C, H, W) in [0, 1] (k/255 exactly) -> uint8 (H, W, C)."""
    return np.ascontiguousarray((chw.transpose(1, 2, 0) * 255.0).round().astype(np.uint8))


def load_arrays(ds, *, workers: int = 2, on_item: Callable[[int], None] | None = None) -> ArraySet:
    """Read every sample of a dataset (ds[i] -> Sample) once, in a few threads (Pillow decodes without the GIL)."""

    def one(i):
        s = ds[i]
        if s.mask.size and (s.mask.min() < 0 or s.mask.max() > 255):
            raise ValueError(f"{s.name}: mask values outside 0..255 after mapping")
        return s.name, to_hwc_uint8(s.image), s.mask.astype(np.uint8)

    out: list = [None] * len(ds)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for i, r in enumerate(pool.map(one, range(len(ds)))):
            out[i] = r
            if on_item is not None:
                on_item(i)
    names = [r[0] for r in out]
    masks = [r[2] for r in out]
    return ArraySet(names, [r[1] for r in out], masks, list(ds.classes), list(ds.colors), ds.in_channels,
                    getattr(ds, "ignore_index", IGNORE), 1.0, masks)


def scaled_hw(hw: tuple[int, int], scale: float) -> tuple[int, int]:
    """The size an image of (H, W) gets at `scale` (at least 1 pixel a side)."""
    return max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale))


def resize_image(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W, C) -> uint8 (h, w, C), Pillow's bilinear filter (antialiased when shrinking)."""
    from PIL import Image

    if img.shape[:2] == tuple(hw):
        return img
    chans = [np.asarray(Image.fromarray(img[..., c]).resize((hw[1], hw[0]), Image.Resampling.BILINEAR))
             for c in range(img.shape[2])]
    return np.ascontiguousarray(np.stack(chans, axis=2))


def resize_mask(mask: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) -> (h, w), nearest neighbour: every value is one the mask had."""
    from PIL import Image

    if mask.shape == tuple(hw):
        return mask
    return np.asarray(Image.fromarray(mask).resize((hw[1], hw[0]), Image.Resampling.NEAREST))


def rescale(a: ArraySet, scale: float, *, workers: int = 2) -> ArraySet:
    """A copy of `a` resampled by `scale` (images and masks); full_masks keep the original masks."""
    if scale == 1.0:
        return a

    def one(i):
        hw = scaled_hw(a.masks[i].shape, scale)
        return resize_image(a.images[i], hw), resize_mask(a.masks[i], hw)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        res = list(pool.map(one, range(len(a))))
    return ArraySet(list(a.names), [r[0] for r in res], [r[1] for r in res], a.classes, a.colors, a.in_channels,
                    a.ignore_index, scale, a.full_masks or a.masks)
