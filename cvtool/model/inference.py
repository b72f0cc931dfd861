"""Label every pixel of an image of any size with a network that needs sizes divisible by 2**depth.

Images are padded (edge-replicated, bottom/right) to the next multiple and the logits cropped back,
so a mask always has the input's size (a 1x1 image included). Large images go through overlapping
tiles: each tile keeps only its core, the pixels at least `halo(spec)` away from a cut, and tiles
start on the pooling grid, so tiled logits equal whole-image logits up to float rounding (no seams)
while memory stays bounded by the tile. Pure NumPy: `predict` is any backend's Runner
(x (N, C, H, W) float32 -> logits (N, K, H, W)).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from cvtool import glibc_malloc as heap
from cvtool.arithmetic import ceil_div, effective_kernel
from cvtool.errors import DataError, UsageError
from cvtool.model.spec import Conv2d, ConvTranspose2d, MaxPool2d, ModelSpec

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


def halo(spec: ModelSpec) -> int:
    """How far (input pixels) an output pixel can see beyond its own: an upper bound from the graph.

    Per node: scale s (input pixels per feature pixel) and reach r. A conv adds its widest side
    (pad, or kernel - 1 - pad) times s and multiplies s by its stride; a pool k/stride adds (k - stride)*s
    and multiplies s by stride; a transposed conv (k/stride) adds s_in * ceil((k - 1 + p) / stride) and
    divides s by stride; concat and add take the max.
    """
    scale: dict[str, float] = {"input": 1.0}
    reach: dict[str, float] = {"input": 0.0}
    for n in spec.graph():
        L, s, r = n.layer, scale[n.inputs[0]], max(reach[i] for i in n.inputs)
        if isinstance(L, Conv2d):
            ek = effective_kernel(L.kernel_size, L.dilation)
            r += max(max(p, ek - 1 - p) for p in (*L.pads[0], *L.pads[1])) * s
            s *= L.stride
        elif isinstance(L, MaxPool2d):
            r += max(L.kernel_size - L.stride, 0) * s
            s *= L.stride
        elif isinstance(L, ConvTranspose2d):
            r += s * ceil_div(L.kernel_size - 1 + L.padding, L.stride)
            s /= L.stride
        scale[n.name], reach[n.name] = s, r
    return int(np.ceil(reach[spec.graph()[-1].name]))


def tile_margin(spec: ModelSpec) -> int:
    """The halo rounded up to the net's multiple: what each tile discards at a cut."""
    return ceil_div(halo(spec), spec.multiple) * spec.multiple


def min_tile(spec: ModelSpec) -> int:
    """The smallest tile that keeps a core of at least one multiple between two margins."""
    return 2 * tile_margin(spec) + spec.multiple


def _pad_to(x: np.ndarray, H: int, W: int) -> np.ndarray:
    """(N, C, h, w) -> (N, C, H, W), edge-replicated at the bottom/right."""
    h, w = x.shape[-2:]
    if (h, w) == (H, W):
        return x
    return np.pad(x, ((0, 0), (0, 0), (0, H - h), (0, W - w)), mode="edge")


def _round_up(v: int, m: int) -> int:
    return ceil_div(v, m) * m


def predict_batch(predict: Predict, xs: list[np.ndarray], multiple: int) -> list[np.ndarray]:
    """Same-size (C, H, W) images -> logits (K, H, W) each, via one padded batch."""
    h, w = xs[0].shape[-2:]
    batch = _pad_to(np.stack(xs), _round_up(h, multiple), _round_up(w, multiple))
    logits = predict(np.ascontiguousarray(batch))
    return [lg[:, :h, :w] for lg in logits]


def _starts(size: int, tile: int, step: int, multiple: int) -> list[int]:
    """Tile starts along one dimension, all on the pooling grid (size and tile are multiples)."""
    if size <= tile:
        return [0]
    s = list(range(0, size - tile, step)) + [size - tile]
    assert all(v % multiple == 0 for v in s), (s, multiple)
    return s


def _core(start: int, tile: int, size: int, margin: int) -> np.ndarray:
    """1-D weights of one tile: 1 on its core, 0 on a margin next to a cut (kept at the image border)."""
    w = np.ones(tile, np.float32)
    if start > 0:
        w[:margin] = 0
    if start + tile < size:
        w[tile - margin:] = 0
    return w


def _boxes(Hp: int, Wp: int, multiple: int, tile: int, margin: int) -> tuple[int, int, list[tuple[int, int]]]:
    """Tile height, width and top-left corners for a padded (Hp, Wp) image (predict_tiled's layout)."""
    th, tw = min(tile, Hp), min(tile, Wp)
    step = tile - 2 * margin  # cores of neighbouring tiles meet (or overlap where the last tile is pulled back)
    return th, tw, [(t, l) for t in _starts(Hp, th, step, multiple) for l in _starts(Wp, tw, step, multiple)]


def net_pixels(hw: tuple[int, int], spec: ModelSpec, tile: int = 512) -> int:
    """Pixels the net runs on for an image of hw (after the model's scale) in segment_logits: the padded image, or
    every tile where it is cut into overlapping tiles (a 768 x 768 image in 512-px tiles: 4 of them, 1.8x its own
    pixels). What validation's time estimate counts."""
    h, w = hw
    m = spec.multiple
    Hp, Wp = _round_up(h, m), _round_up(w, m)
    tile = max(tile, min_tile(spec))
    if h <= tile and w <= tile:
        return Hp * Wp
    th, tw, boxes = _boxes(Hp, Wp, m, tile - tile % m, tile_margin(spec))
    return th * tw * len(boxes)


def predict_tiled(predict: Predict, x: np.ndarray, multiple: int, tile: int, margin: int,
                  batch_size: int = 4) -> np.ndarray:
    """(C, H, W) -> logits (K, H, W) from tiles of at most `tile` pixels a side, `batch_size` per pass.

    margin: pixels each tile drops at a cut (tile_margin(spec)); tile >= 2*margin + multiple.
    A side no longer than a tile is one tile of that side's (padded) size: thin images stay thin.
    """
    C, H, W = x.shape
    tile = tile - tile % multiple
    if tile < 2 * margin + multiple:
        raise UsageError(f"tile {tile} leaves no core inside two margins of {margin} pixels",
                         hint=f"use a tile of at least {2 * margin + multiple}")
    xp = _pad_to(x[None], _round_up(H, multiple), _round_up(W, multiple))[0]
    Hp, Wp = xp.shape[-2:]
    th, tw, boxes = _boxes(Hp, Wp, multiple, tile, margin)
    acc: np.ndarray | None = None
    norm = np.zeros((Hp, Wp), np.float32)
    for i in range(0, len(boxes), batch_size):
        chunk = boxes[i:i + batch_size]
        logits = predict(np.ascontiguousarray(np.stack([xp[:, t:t + th, l:l + tw] for t, l in chunk])))
        if acc is None:
            acc = np.zeros((logits.shape[1], Hp, Wp), np.float32)
        for (t, l), lg in zip(chunk, logits):
            wgt = _core(t, th, Hp, margin)[:, None] * _core(l, tw, Wp, margin)[None, :]
            acc[:, t:t + th, l:l + tw] += lg * wgt
            norm[t:t + th, l:l + tw] += wgt
    assert acc is not None and norm.min() > 0, "tile cores must cover the image"
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
                   tta: str = "none", tile: int = 512, batch_size: int = 4, name: str = "image") -> np.ndarray:
    """What `cvtool segment` computes for one uint8 (H, W[, C]) image: resample by the model's scale, normalise,
    run whole or in tiles (with the model's test-time augmentation), bring the logits back to (K, H, W).
    Training validates with the same function."""
    from cvtool.data.memory import resize_image, scaled_hw

    predict = with_tta(predict, tta)
    img = image[..., None] if image.ndim == 2 else image
    H, W = img.shape[:2]
    if scale != 1.0:
        img = resize_image(np.ascontiguousarray(img), scaled_hw((H, W), scale))
    prep = prepare(img, spec.in_channels, mean, std, name=name)
    h, w = prep.hw
    tile = max(tile, min_tile(spec))
    if h > tile or w > tile:
        lg = predict_tiled(predict, prep.x, spec.multiple, tile, tile_margin(spec), batch_size=batch_size)
    else:
        lg = predict_batch(predict, [prep.x], spec.multiple)[0]
    out = resize_logits(lg, (H, W))
    del prep, lg, img
    heap.trim()  # a folder of many sizes must not grow the process (cvtool/glibc_malloc.py)
    return out
