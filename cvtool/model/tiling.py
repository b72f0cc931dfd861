"""Where the net runs on an image: whole, in tiles with exact cores, or in blended tiles; never more than
MAX_RATIO times the image's pixels.

    t = plan_tiling(spec, (h, w))                # the pixels a pass may hold: from this host's free memory
    t = plan_tiling(spec, (h, w), max_side=512)  # tiles of at most 512 px a side (segment --tile)
    t.mode, t.ratio, t.net_pixels, t.boxes()

- whole: the image (padded to the net's multiple) fits one pass of the memory budget.
- exact: tiles overlap by 2 x tile_margin, each keeps its core (the pixels a halo or more from a cut), so tiled
  logits equal whole-image logits up to float rounding; chosen when that costs at most MAX_RATIO.
- blend: tiles overlap by less, chosen as the largest overlap that keeps the cost within MAX_RATIO; in the overlap
  the two tiles' logits are cross-faded with weights falling linearly to 0 at each tile's cut edge, the way
  nnU-Net's sliding window down-weights a tile's border, where the net saw padding instead of the image.
Tiles are evened out: n tiles of one size per axis (not full tiles plus a last one pulled back), every start on
the pooling grid. Thin images stay thin: a side that fits is not cut.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from cvtool.arithmetic import ceil_div, effective_kernel, round_up
from cvtool.model.spec import Conv2d, ConvTranspose2d, MaxPool2d, ModelSpec

MAX_RATIO = 1.5  # net pixels / image pixels at most, with tiles (the padding of a small whole image aside)


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
    return round_up(halo(spec), spec.multiple)


def min_tile(spec: ModelSpec) -> int:
    """The smallest tile that keeps a core of at least one multiple between two margins."""
    return 2 * tile_margin(spec) + spec.multiple


class Axis(NamedTuple):
    size: int  # the padded image's size along this axis
    tile: int  # every tile's size along it
    starts: tuple[int, ...]

    def overlaps(self) -> list[int]:
        """Pixels tile i shares with tile i + 1."""
        return [a + self.tile - b for a, b in zip(self.starts, self.starts[1:])]


def axis_layout(size: int, max_tile: int, overlap: int, m: int) -> Axis:
    """n equal tiles of at most max_tile along a padded size (all multiples of m), neighbours sharing at least
    `overlap` pixels, starts on the grid of m, the first at 0 and the last ending at size."""
    if size <= max_tile:
        return Axis(size, size, (0,))
    if overlap >= max_tile:
        raise ValueError(f"tiles of {max_tile} cannot share {overlap} pixels")
    n = max(2, ceil_div(size - overlap, max(max_tile - overlap, 1)))
    while True:
        t = min(size, round_up(ceil_div(size + (n - 1) * overlap, n), m))
        q = (size - t) // m  # the last start, in grid steps
        starts = tuple(m * round(i * q / (n - 1)) for i in range(n))
        ax = Axis(size, t, starts)
        if min(ax.overlaps()) >= overlap:
            return ax
        n += 1


class Tiling(NamedTuple):
    mode: str  # whole | exact | blend
    hw: tuple[int, int]  # the image the net is handed (after the model's scale)
    rows: Axis
    cols: Axis
    margin: int  # tile_margin(spec): what an exact tile drops at a cut

    @property
    def n_tiles(self) -> int:
        return len(self.rows.starts) * len(self.cols.starts)

    @property
    def net_pixels(self) -> int:
        """Pixels the net runs on (one pass of each tile; test-time augmentation multiplies this)."""
        return self.n_tiles * self.rows.tile * self.cols.tile

    @property
    def ratio(self) -> float:
        return self.net_pixels / max(self.hw[0] * self.hw[1], 1)

    def boxes(self) -> list[tuple[int, int]]:
        return [(t, l) for t in self.rows.starts for l in self.cols.starts]

    def weights(self, top: int, left: int) -> np.ndarray:
        """(tile h, tile w) float32 weights of the tile at (top, left): 1 inside, and at a cut edge 0 on an exact
        tile's margin, or a linear ramp to ~0 across the overlap on a blended one."""
        return (axis_weights(self.rows, top, self.mode, self.margin)[:, None] *
                axis_weights(self.cols, left, self.mode, self.margin)[None, :])

    def to_dict(self) -> dict:
        return {"mode": self.mode, "tiles": self.n_tiles, "tile": [self.rows.tile, self.cols.tile],
                "net_pixels": self.net_pixels, "image_pixels": self.hw[0] * self.hw[1], "ratio": round(self.ratio, 4)}


def axis_weights(ax: Axis, start: int, mode: str, margin: int) -> np.ndarray:
    w = np.ones(ax.tile, np.float32)
    i = ax.starts.index(start)
    before = ax.overlaps()[i - 1] if i > 0 else 0  # shared with the previous tile
    after = ax.overlaps()[i] if i < len(ax.starts) - 1 else 0
    if mode == "exact":
        w[:margin if before else 0] = 0
        if after:
            w[ax.tile - margin:] = 0
        return w
    if before:
        w[:before] = np.minimum(w[:before], (np.arange(before, dtype=np.float32) + 0.5) / before)
    if after:
        w[ax.tile - after:] = np.minimum(w[ax.tile - after:], (np.arange(after, 0, -1, dtype=np.float32) - 0.5) / after)
    return w


def _grid(Hp: int, Wp: int, tile_hw: tuple[int, int], overlap: int, m: int) -> tuple[Axis, Axis]:
    return axis_layout(Hp, tile_hw[0], overlap, m), axis_layout(Wp, tile_hw[1], overlap, m)


def tile_shape(Hp: int, Wp: int, max_pixels: int, max_side: int | None, m: int, floor: int) -> tuple[int, int]:
    """The largest tile (multiples of m, sides at least `floor`) within max_pixels and max_side: square, except
    that a side shorter than the square is kept whole and the other takes the pixels left (a strip is cut along
    its length only)."""
    side = max_side if max_side is not None else 1 << 30
    cap = lambda v: max(floor, min(side, v) // m * m)  # noqa: E731
    sq = cap(math.isqrt(max(max_pixels, 1)))
    if Hp <= sq:
        return Hp, min(Wp, cap(max_pixels // Hp))
    if Wp <= sq:
        return min(Hp, cap(max_pixels // Wp)), Wp
    return sq, sq


def plan_tiling(spec: ModelSpec, hw: tuple[int, int], *, max_pixels: int | None = None, max_side: int | None = None,
                free_bytes: int | None = None, max_ratio: float = MAX_RATIO) -> Tiling:
    """How to run the net on an image of hw (after the model's scale).

    max_pixels: the most input pixels a pass may hold (default: from the memory budget, cvtool.model.activations,
    with free_bytes: a device's free memory, None: this host's); max_side: tiles of at most this many pixels a
    side (segment --tile; raised to 4 x the net's multiple)."""
    from cvtool.model.activations import pass_pixels

    m = spec.multiple
    h, w = hw
    Hp, Wp = round_up(max(h, 1), m), round_up(max(w, 1), m)
    margin = tile_margin(spec)
    if max_pixels is None:
        max_pixels = pass_pixels(spec, free_bytes)
    floor = 4 * m
    if max_side is not None:
        max_side = max(max_side // m * m, floor)  # at most the side asked for, on the net's grid
    fits = Hp * Wp <= max_pixels and (max_side is None or (h <= max_side and w <= max_side))
    if fits:
        return Tiling("whole", (h, w), Axis(Hp, Hp, (0,)), Axis(Wp, Wp, (0,)), margin)
    tile_hw = tile_shape(Hp, Wp, max_pixels, max_side, m, floor)
    area = max(h * w, 1)
    # exact cores need, on every axis that is cut, tiles wider than the two margins they drop
    if all(t >= 2 * margin + m for t, size in zip(tile_hw, (Hp, Wp)) if size > t):
        rows, cols = _grid(Hp, Wp, tile_hw, 2 * margin, m)
        if len(rows.starts) * len(cols.starts) * rows.tile * cols.tile <= max_ratio * area:
            return Tiling("exact", (h, w), rows, cols, margin)
    for overlap in range(min(2 * margin, min(tile_hw) // 2) // m * m, -1, -m):  # the largest overlap within budget
        rows, cols = _grid(Hp, Wp, tile_hw, overlap, m)
        if len(rows.starts) * len(cols.starts) * rows.tile * cols.tile <= max_ratio * area:
            break
    return Tiling("blend", (h, w), rows, cols, margin)
