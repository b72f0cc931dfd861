"""Geometric transforms that move an image and its mask together. Masks are never interpolated:
crops, flips and padding only move or add pixels (padding in a mask is IGNORE, so no loss counts it)."""

from __future__ import annotations

from typing import Literal

import numpy as np

from cvtool.arithmetic import ceil_div
from cvtool.data.io import IGNORE


def to_chw(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, C) -> float32 (C, H, W) in [0, 1]."""
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) * np.float32(1 / 255)


def crop_offsets(hw: np.ndarray, S: int, u: np.ndarray | None) -> np.ndarray:
    """(N, 2) top-left corners of S x S windows over images of sizes hw (N, 2).

    Offsets run over [min(0, H-S), max(0, H-S)]: a negative offset places a small image inside a padded window.
    u (N, 2) uniforms in [0, 1) pick the offsets at random; u=None centres the window."""
    hw = np.asarray(hw, np.int64).reshape(-1, 2)
    lo, hi = np.minimum(0, hw - S), np.maximum(0, hw - S)
    if u is None:
        return (hw - S) // 2
    return np.minimum(lo + np.floor(u * (hi - lo + 1)).astype(np.int64), hi)


def paste_window(x: np.ndarray, y: np.ndarray, image: np.ndarray, mask: np.ndarray, oy: int, ox: int) -> None:
    """Copy the window of `image` (C, H, W) / `mask` (H, W) whose corner is (oy, ox) into x (C, S, S) / y (S, S).

    Parts of the window outside the image are left as they are in x / y (the caller's padding)."""
    S_h, S_w = y.shape
    H, W = mask.shape
    y0, x0 = max(oy, 0), max(ox, 0)  # source rows/cols that fall inside the window
    y1, x1 = min(oy + S_h, H), min(ox + S_w, W)
    if y1 <= y0 or x1 <= x0:
        return
    x[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox] = image[:, y0:y1, x0:x1]
    y[y0 - oy:y1 - oy, x0 - ox:x1 - ox] = mask[y0:y1, x0:x1]


def hflip_where(x: np.ndarray, y: np.ndarray, flip: np.ndarray) -> None:
    """Mirror left-right, in place, the batch items where flip (N,) is True: x (N, C, H, W), y (N, H, W)."""
    if flip.any():
        x[flip] = x[flip][..., ::-1]
        y[flip] = y[flip][..., ::-1]


Box = tuple[int, int, int, int]  # (y0, y1, x0, x1)
PadMode = Literal["constant", "reflect", "edge"]  # numpy.pad's modes that fit an image


def pad_to_multiple(x: np.ndarray, m: int, *, mode: PadMode = "constant", value: float = 0) -> tuple[np.ndarray, Box]:
    """Pad the last two axes (H, W) up to multiples of m, split evenly (extra pixel bottom/right).

    Returns (padded, (y0, y1, x0, x1)) with padded[..., y0:y1, x0:x1] == x: the box that crops a
    full-size prediction back. mode: numpy.pad's ("constant" with `value`, "reflect", "edge")."""
    if m < 1:
        raise ValueError(f"pad_to_multiple: m must be >= 1, got {m}")
    H, W = x.shape[-2:]
    ph, pw = ceil_div(H, m) * m - H, ceil_div(W, m) * m - W
    top, left = ph // 2, pw // 2
    pads = [(0, 0)] * (x.ndim - 2) + [(top, ph - top), (left, pw - left)]
    if mode == "constant":
        padded = np.pad(x, pads, mode="constant", constant_values=value)
    else:
        padded = np.pad(x, pads, mode=mode)
    return padded, (top, top + H, left, left + W)


__all__ = ["to_chw", "crop_offsets", "paste_window", "hflip_where", "pad_to_multiple", "IGNORE"]
