"""A tiled image's mask one band of tiles at a time: memory follows a band, not the image.

predict_tiled holds the whole image's float input, logits and weight sums (a 20000 x 20000 image: 1.6 GB a
channel or class). Here the rows come from `rows(r0, r1)` (an array's slice, or a reader of strips of a file),
each band of tiles (one row start of the tiling) is normalised, run and added into a rolling accumulator; the
rows no later band reaches are divided by their weights, turned into classes and written into the uint8 mask.
The sums per pixel are made in the same order as predict_tiled's, so the mask is the same, bit for bit.

    mask = segment_bands(predict, lambda r0, r1: image[r0:r1], tiling, prep_rows, num_classes)
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Rows = Callable[[int, int], np.ndarray]  # (r0, r1) -> the image's rows r0..r1-1, uint8 (h, W[, C])
Prep = Callable[[np.ndarray], np.ndarray]  # those rows -> normalised float32 (C, h, W) (inference.prepare)


def segment_bands(predict: Callable[[np.ndarray], np.ndarray], rows: Rows, tiling, prep: Prep, *,
                  batch_size: int = 4, max_pixels: int | None = None) -> np.ndarray:
    """uint8 (H, W) class mask of the image behind `rows`, laid out by `tiling` (cvtool.model.tiling.plan_tiling
    on (H, W)); predict: (N, C, h, w) -> logits (N, K, h, w)."""
    H, W = tiling.hw
    Hp, Wp = tiling.rows.size, tiling.cols.size
    th, tw = tiling.rows.tile, tiling.cols.tile
    if max_pixels is not None:
        batch_size = max(1, min(batch_size, max_pixels // (th * tw)))
    mask = np.empty((H, W), np.uint8)
    starts = list(tiling.rows.starts)
    acc: np.ndarray | None = None
    norm = np.zeros((th, Wp), np.float32)
    base = 0  # the image row that acc[:, 0] and norm[0] hold
    for i, top in enumerate(starts):
        shift = top - base
        if acc is not None and shift:  # rows above this band are final: keep the rest, zero the new rows
            acc = np.concatenate([acc[:, shift:], np.zeros((acc.shape[0], shift, Wp), np.float32)], axis=1)
            norm = np.concatenate([norm[shift:], np.zeros((shift, Wp), np.float32)], axis=0)
        base = top
        x = prep(rows(top, min(top + th, H)))
        if x.shape[1] < th or x.shape[2] < Wp:  # the bottom/right padding, edge-replicated as _pad_to does
            x = np.pad(x, ((0, 0), (0, th - x.shape[1]), (0, Wp - x.shape[2])), mode="edge")
        boxes = list(tiling.cols.starts)
        for j in range(0, len(boxes), batch_size):
            chunk = boxes[j:j + batch_size]
            logits = predict(np.ascontiguousarray(np.stack([x[:, :, l:l + tw] for l in chunk])))
            if acc is None:
                acc = np.zeros((logits.shape[1], th, Wp), np.float32)
            for l, lg in zip(chunk, logits):
                wgt = tiling.weights(top, l)
                acc[:, :, l:l + tw] += lg * wgt
                norm[:, l:l + tw] += wgt
        done = (starts[i + 1] if i + 1 < len(starts) else Hp) - top  # rows no later band reaches
        r1 = min(top + done, H)
        if r1 > top and acc is not None:
            out = acc[:, :r1 - top, :W] / norm[:r1 - top, :W]
            mask[top:r1] = out.argmax(0).astype(np.uint8)
    return mask
