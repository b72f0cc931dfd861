"""Small array helpers shared by the layers: dtype policy and the kernel-offset window view."""

from __future__ import annotations

from typing import Iterator

import numpy as np


def as_float(*arrays):
    """Arrays -> one common float dtype (float32 and float64 are kept; ints become float64)."""
    found = [None if a is None else np.asarray(a) for a in arrays]
    dt = np.result_type(*[a.dtype for a in found if a is not None], np.float32)
    return [None if a is None else a.astype(dt, copy=False) for a in found]


def offsets(KH: int, KW: int) -> Iterator[tuple[int, int]]:
    """Kernel offsets (i, j) in window order: row-major, as every framework walks a window."""
    for i in range(KH):
        for j in range(KW):
            yield i, j


def window(a: np.ndarray, i: int, j: int, OH: int, OW: int, stride, dilation) -> np.ndarray:
    """View of a[..., H, W] holding, for every output pixel (oh, ow), the element that kernel
    offset (i, j) sees: a[..., oh*sh + i*dh, ow*sw + j*dw]. Shape (..., OH, OW); no copy."""
    (sh, sw), (dh, dw) = stride, dilation
    return a[..., i * dh: i * dh + (OH - 1) * sh + 1: sh, j * dw: j * dw + (OW - 1) * sw + 1: sw]
