"""Label every pixel of an image of any size with a network that needs sizes divisible by 2**depth.

Small images are padded (edge-replicated) to the next multiple and cropped back. Large images go
through overlapping tiles whose logits are blended with a tapered window, so memory stays bounded
and seams vanish. Pure NumPy: `predict` is any backend's Runner (x (N,C,H,W) -> logits (N,K,H,W)).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from cvtool.errors import DataError

Predict = Callable[[np.ndarray], np.ndarray]


class Prepared(NamedTuple):
    x: np.ndarray  # (C, H, W) float32, normalised
    hw: tuple[int, int]


def prepare(image: np.ndarray, in_channels: int, mean, std, name: str = "image") -> Prepared:
    """uint8 (H, W, C) or (H, W) -> normalised float32 (C, H, W) with the channels the net expects."""
    img = image[..., None] if image.ndim == 2 else image
    c = img.shape[2]
    if c == 4:  # RGBA: drop alpha
        img, c = img[..., :3], 3
    if c != in_channels:
        if c == 1 and in_channels == 3:
            img = np.repeat(img, 3, axis=2)
        elif c == 3 and in_channels == 1:  # ITU-R 601 luma, as Pillow's convert("L")
            img = (img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        else:
            raise DataError(f"{name}: has {c} channels, the model takes {in_channels}")
    x = np.asarray(img, np.float32).transpose(2, 0, 1) / 255.0
    mean = np.asarray(mean, np.float32)[:, None, None]
    std = np.asarray(std, np.float32)[:, None, None]
    return Prepared(((x - mean) / std).astype(np.float32), (img.shape[0], img.shape[1]))


def _pad_to(x: np.ndarray, H: int, W: int) -> np.ndarray:
    """(N, C, h, w) -> (N, C, H, W), edge-replicated at the bottom/right."""
    h, w = x.shape[-2:]
    if (h, w) == (H, W):
        return x
    return np.pad(x, ((0, 0), (0, 0), (0, H - h), (0, W - w)), mode="edge")


def _round_up(v: int, m: int) -> int:
    return -(-v // m) * m


def predict_batch(predict: Predict, xs: list[np.ndarray], multiple: int) -> list[np.ndarray]:
    """Same-size (C, H, W) images -> logits (K, H, W) each, via one padded batch."""
    h, w = xs[0].shape[-2:]
    batch = _pad_to(np.stack(xs), _round_up(h, multiple), _round_up(w, multiple))
    logits = predict(np.ascontiguousarray(batch))
    return [lg[:, :h, :w] for lg in logits]


def _taper(n: int, overlap: int) -> np.ndarray:
    """1-D blending weights: ramps of length `overlap` at both ends, 1 in the middle."""
    wgt = np.ones(n, np.float32)
    if overlap > 0:
        ramp = (np.arange(overlap, dtype=np.float32) + 1) / (overlap + 1)
        wgt[:overlap] = ramp
        wgt[-overlap:] = np.minimum(wgt[-overlap:], ramp[::-1])
    return wgt


def _starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    s = list(range(0, size - tile, step)) + [size - tile]
    return sorted(set(s))


def predict_tiled(predict: Predict, x: np.ndarray, multiple: int, tile: int, overlap: int = 32,
                  batch_size: int = 4) -> np.ndarray:
    """(C, H, W) -> logits (K, H, W). Tiles of `tile` (a multiple of `multiple`) overlapping by `overlap`."""
    C, H, W = x.shape
    if H <= tile and W <= tile:
        return predict_batch(predict, [x], multiple)[0]
    tile = _round_up(tile, multiple)
    overlap = min(overlap, tile // 4)
    step = tile - overlap
    xp = _pad_to(x[None], max(H, tile), max(W, tile))[0]  # an image thinner than a tile: pad that side
    Hp, Wp = xp.shape[-2:]
    boxes = [(t, l) for t in _starts(Hp, tile, step) for l in _starts(Wp, tile, step)]
    wy, wx = _taper(tile, overlap), _taper(tile, overlap)
    weight2d = wy[:, None] * wx[None, :]
    acc = None
    norm = np.zeros((Hp, Wp), np.float32)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        logits = predict(np.ascontiguousarray(np.stack([xp[:, t:t + tile, l:l + tile] for t, l in chunk])))
        if acc is None:
            acc = np.zeros((logits.shape[1], Hp, Wp), np.float32)
        for (t, l), lg in zip(chunk, logits):
            acc[:, t:t + tile, l:l + tile] += lg * weight2d
            norm[t:t + tile, l:l + tile] += weight2d
    return (acc / norm)[:, :H, :W]


def class_fractions(mask: np.ndarray, classes: list[str]) -> dict[str, float]:
    counts = np.bincount(mask.ravel(), minlength=len(classes))[: len(classes)]
    return {c: float(n) / mask.size for c, n in zip(classes, counts)}
