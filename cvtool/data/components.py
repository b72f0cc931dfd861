"""Connected components of a binary mask, vectorised over runs (no scipy, no per-pixel Python loop).

A row's foreground pixels form runs [start, end). Two runs in neighbouring rows belong to the same
component when their column ranges overlap (4-connectivity). Run labels are merged by min-propagation
along those edges with pointer jumping, so the work is a few NumPy passes over the runs, not the pixels.
"""

from __future__ import annotations

import numpy as np


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row, start, end) of every horizontal run of True pixels, ordered by row then start."""
    m = np.pad(np.asarray(mask, bool), ((0, 0), (1, 1)))
    d = np.diff(m.view(np.int8), axis=1)  # +1 where a run starts, -1 one past where it ends
    r, s = np.nonzero(d == 1)
    _, e = np.nonzero(d == -1)
    return r, s, e


def run_labels(r: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Component label (the smallest run index in it) of each run."""
    n = r.size
    lab = np.arange(n)
    if n == 0:
        return lab
    W = int(e.max()) + 1
    start_key, end_key = r * W + s, r * W + e  # both ascending, since runs of a row are disjoint and sorted
    # run j in row r+1 touches the runs i of row r with s_i < e_j and e_i > s_j: a contiguous range [lo, hi)
    prev = r - 1
    lo = np.searchsorted(end_key, prev * W + s, side="right")
    hi = np.searchsorted(start_key, prev * W + e, side="left")
    lo = np.maximum(lo, np.searchsorted(r, prev, side="left"))
    hi = np.minimum(hi, np.searchsorted(r, prev, side="right"))
    cnt = np.maximum(hi - lo, 0)
    if cnt.sum() == 0:
        return lab
    a = np.repeat(np.arange(n), cnt)  # edges (a, b): b a run of the row above
    b = np.repeat(lo - np.cumsum(np.r_[0, cnt[:-1]]), cnt) + np.arange(cnt.sum())
    while True:
        m = np.minimum(lab[a], lab[b])
        new = lab.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]  # pointer jumping: follow labels to their roots
        while True:
            nxt = new[new]
            if np.array_equal(nxt, new):
                break
            new = nxt
        if np.array_equal(new, lab):
            return lab
        lab = new


def component_areas(mask: np.ndarray) -> np.ndarray:
    """Areas (pixels) of the 4-connected components of a boolean (H, W) mask, largest first."""
    r, s, e = runs(mask)
    if r.size == 0:
        return np.zeros(0, np.int64)
    lab = run_labels(r, s, e)
    areas = np.bincount(lab, weights=(e - s), minlength=r.size)
    areas = areas[areas > 0].astype(np.int64)
    return np.sort(areas)[::-1]


def boundary_pixels(mask: np.ndarray) -> int:
    """Pixels of the mask with a 4-neighbour outside it (the image border does not count as outside)."""
    m = np.asarray(mask, bool)
    p = np.pad(m, 1, mode="edge")
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return int((m & ~inner).sum())
