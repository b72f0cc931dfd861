"""Label every pixel of an image of any size with a network that needs sizes divisible by 2**depth.

Images are padded (edge-replicated, bottom/right) to the next multiple and the logits cropped back,
so a mask always has the input's size (a 1x1 image included). An image runs whole when one pass fits the
memory budget (cvtool.model.activations); larger ones go through overlapping tiles laid out by
cvtool.model.tiling (exact cores where that costs at most 1.5x the image's pixels, blended tiles otherwise),
starting on the pooling grid. Pure NumPy: `predict` is any backend's Runner
(x (N, C, H, W) float32 -> logits (N, K, H, W)).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from cvtool import glibc_malloc as heap
from cvtool.arithmetic import round_up
from cvtool.errors import DataError, UsageError
from cvtool.model.spec import ModelSpec
from cvtool.model.tiling import halo, min_tile, plan_tiling, tile_margin  # noqa: F401 - halo, min_tile: re-exported

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
            raise DataError(f"{name}: has {c} channel(s), the model takes {in_channels}")
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


def predict_batch(predict: Predict, xs: list[np.ndarray], multiple: int) -> list[np.ndarray]:
    """Same-size (C, H, W) images -> logits (K, H, W) each, via one padded batch."""
    h, w = xs[0].shape[-2:]
    batch = _pad_to(np.stack(xs), round_up(h, multiple), round_up(w, multiple))
    logits = predict(np.ascontiguousarray(batch))
    return [lg[:, :h, :w] for lg in logits]


def net_pixels(hw: tuple[int, int], spec: ModelSpec, tile: int | None = None, free_bytes: int | None = None) -> int:
    """Pixels the net runs on for an image of hw (after the model's scale) in segment_logits with the same tile and
    free_bytes: the padded image, or every tile where it is cut (cvtool.model.tiling, at most 1.5x the image's
    pixels). What validation's time estimate counts; test-time augmentation multiplies it."""
    return plan_tiling(spec, hw, max_side=tile, free_bytes=free_bytes).net_pixels


def predict_tiled(predict: Predict, x: np.ndarray, tiling, batch_size: int = 4,
                  max_pixels: int | None = None) -> np.ndarray:
    """(C, H, W) -> logits (K, H, W) through the tiles of `tiling` (cvtool.model.tiling.plan_tiling on (H, W)),
    up to batch_size tiles a pass (fewer where max_pixels, the pixels a pass may hold, says so), each tile's
    logits weighted by tiling.weights and the sums normalised."""
    C, H, W = x.shape
    if tiling.hw != (H, W):
        raise ValueError(f"tiling planned for {tiling.hw}, image is {(H, W)}")
    Hp, Wp = tiling.rows.size, tiling.cols.size
    xp = _pad_to(x[None], Hp, Wp)[0]
    th, tw = tiling.rows.tile, tiling.cols.tile
    boxes = tiling.boxes()
    if max_pixels is not None:
        batch_size = max(1, min(batch_size, max_pixels // (th * tw)))
    acc: np.ndarray | None = None
    norm = np.zeros((Hp, Wp), np.float32)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        logits = predict(np.ascontiguousarray(np.stack([xp[:, t:t + th, l:l + tw] for t, l in chunk])))
        if acc is None:
            acc = np.zeros((logits.shape[1], Hp, Wp), np.float32)
        for (t, l), lg in zip(chunk, logits):
            wgt = tiling.weights(t, l)
            acc[:, t:t + th, l:l + tw] += lg * wgt
            norm[t:t + th, l:l + tw] += wgt
    assert acc is not None and norm.min() > 0, "tile weights must cover the image"
    acc /= norm  # in place: a 4000 x 3000 image's 4-class logits are 192 MB
    return acc[:, :H, :W]


def class_fractions(mask: np.ndarray, classes: list[str]) -> dict[str, float]:
    counts = np.bincount(mask.ravel(), minlength=len(classes))[: len(classes)]
    return {c: float(n) / mask.size for c, n in zip(classes, counts)}


def interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear interpolation with half-pixel centres (align_corners=False), edges clamped."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0, n_in - 1)
    i0 = np.floor(src).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    f = src - i0
    M = np.zeros((n_out, n_in), np.float32)
    M[np.arange(n_out), i0] += (1 - f).astype(np.float32)
    M[np.arange(n_out), i1] += f.astype(np.float32)
    return M


def resize_logits(logits: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(K, h, w) -> (K, H, W) bilinearly, as two small matrix products (a prediction at a model's scale
    brought back to the image's pixels)."""
    K, h, w = logits.shape
    H, W = hw
    if (h, w) == (H, W):
        return logits
    out = np.matmul(interp_matrix(H, h), logits.astype(np.float32))  # (K, H, w)
    return np.matmul(out, interp_matrix(W, w).T)


TTA = {"none": 1, "flip": 2, "dihedral": 8}  # test-time augmentation: how many passes each costs


def with_tta(predict: Predict, tta: str) -> Predict:
    """predict averaged over flips (tta="flip": identity and left-right) or over the 8 flips and quarter turns
    (tta="dihedral"), each output mapped back before the mean. x (N, C, H, W) -> logits (N, K, H, W)."""
    if tta not in TTA:
        raise UsageError(f"unknown test-time augmentation {tta!r}", hint=f"choose one of {', '.join(TTA)}")
    if tta == "none":
        return predict
    flips = [(False, False), (False, True)] if tta == "flip" else [(a, b) for a in (False, True) for b in (False, True)]
    turns = (False,) if tta == "flip" else (False, True)

    def run(x: np.ndarray) -> np.ndarray:
        acc = None
        for t in turns:
            xt = x.transpose(0, 1, 3, 2) if t else x
            for fv, fh in flips:
                xf = xt[..., ::-1, :] if fv else xt
                xf = xf[..., ::-1] if fh else xf
                y = predict(np.ascontiguousarray(xf))
                y = y[..., ::-1] if fh else y
                y = y[..., ::-1, :] if fv else y
                y = y.transpose(0, 1, 3, 2) if t else y
                acc = y.astype(np.float32) if acc is None else acc + y
        return acc / np.float32(len(turns) * len(flips))

    return run


def segment_logits(predict: Predict, image: np.ndarray, spec: ModelSpec, mean, std, *, scale: float = 1.0,
                   tta: str = "none", tile: int | None = None, batch_size: int = 4, name: str = "image",
                   free_bytes: int | None = None) -> np.ndarray:
    """What `cvtool segment` computes for one uint8 (H, W[, C]) image: resample by the model's scale, normalise,
    run whole or in tiles (cvtool.model.tiling: whole when the pass fits the memory budget, free_bytes being a
    device's free memory, None this host's; tile: at most this many pixels a side), with the model's test-time
    augmentation, and bring the logits back to (K, H, W). Training validates with the same function."""
    from cvtool.data.memory import resize_image, scaled_hw
    from cvtool.model.activations import pass_pixels

    predict = with_tta(predict, tta)
    img = image[..., None] if image.ndim == 2 else image
    H, W = img.shape[:2]
    if scale != 1.0:
        img = resize_image(np.ascontiguousarray(img), scaled_hw((H, W), scale))
    prep = prepare(img, spec.in_channels, mean, std, name=name)
    budget = pass_pixels(spec, free_bytes)
    tiling = plan_tiling(spec, prep.hw, max_pixels=budget, max_side=tile)
    if tiling.mode == "whole":
        lg = predict_batch(predict, [prep.x], spec.multiple)[0]
    else:
        lg = predict_tiled(predict, prep.x, tiling, batch_size=batch_size, max_pixels=budget)
    out = resize_logits(lg, (H, W))
    del prep, lg, img
    heap.trim()  # a folder of many sizes must not grow the process (cvtool/glibc_malloc.py)
    return out
