"""Check a dataset before training: every image has a mask of its size, every mask value is a class or IGNORE.

A dataset offers scan(i) -> Record (what its mask file holds, read once and cached) and value_map(values)
(raw mask values -> class indices or IGNORE, e.g. binary 255 -> 1; -1 for a value that is no class), and
optionally colour_masks = True when its raw values are r<<16|g<<8|b colour codes (errors then show #rrggbb).
The first problem is a one-line DataError naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from cvtool.data.io import IGNORE, hex_color
from cvtool.errors import DataError


class Record(NamedTuple):
    name: str
    image: str  # image file (or a synthetic id)
    mask: str | None  # mask file; None: the image has none
    image_hw: tuple[int, int]
    mask_hw: tuple[int, int] | None
    values: np.ndarray  # distinct raw mask values, ascending
    counts: np.ndarray  # pixels holding each value


def record_from_mask(name: str, image: str, mask_path: str | None, image_hw, mask: np.ndarray | None) -> Record:
    """A Record from a mask array (bincount: one pass over the pixels)."""
    if mask is None:
        return Record(name, image, mask_path, tuple(image_hw), None, np.zeros(0, np.int64), np.zeros(0, np.int64))
    flat = mask.ravel()
    if flat.size and (flat.min() < 0 or flat.max() >= 1 << 16):  # negative, or colour codes: no huge bincount
        vals, cnts = np.unique(flat, return_counts=True)
    else:
        hist = np.bincount(flat, minlength=1)
        vals = np.flatnonzero(hist)
        cnts = hist[vals]
    return Record(name, image, mask_path, tuple(image_hw), tuple(mask.shape), vals.astype(np.int64),
                  cnts.astype(np.int64))


@dataclass
class DataStats:
    classes: list[str]
    pixels: np.ndarray  # (K,) labelled pixels per class
    present: np.ndarray  # (K,) images holding each class
    images: int = 0
    ignored: int = 0  # pixels with value IGNORE

    @property
    def total(self) -> int:
        return int(self.pixels.sum()) + self.ignored

    def fractions(self) -> np.ndarray:
        """(K,) share of each class among the labelled (not ignored) pixels."""
        n = self.pixels.sum()
        return self.pixels / n if n else np.zeros(len(self.classes))

    def to_dict(self) -> dict:
        return {"images": self.images, "pixels": self.total, "ignored_pixels": self.ignored,
                "classes": [{"index": k, "name": c, "pixels": int(self.pixels[k]), "fraction": float(f),
                             "images": int(self.present[k])}
                            for k, (c, f) in enumerate(zip(self.classes, self.fractions()))]}


def values_text(vals: np.ndarray, limit: int = 12, colour: bool = False) -> str:
    """'0, 38, 75' (at most limit shown, then the count); colour=True: '#000000, #ff0000' for rgb codes."""
    fmt = hex_color if colour else (lambda v: str(int(v)))
    shown = ", ".join(fmt(v) for v in vals[:limit])
    return shown + (f", ... ({len(vals)} values)" if len(vals) > limit else "")


def check_pair(name: str, image: str, mask: str | None, image_hw, mask_hw) -> None:
    """An image needs a mask, of its size."""
    if mask is None:
        raise DataError(f"{image}: image without a mask (no mask file named '{name}.*')")
    if tuple(mask_hw) != tuple(image_hw):
        (mh, mw), (ih, iw) = mask_hw, image_hw
        raise DataError(f"{mask}: mask is {mw}x{mh} but its image {image} is {iw}x{ih}")


def check_values(r: Record, mapped: np.ndarray, K: int, colour: bool = False) -> None:
    """DataError naming r's mask file, its bad values and all its values, if any mapped value is no class."""
    bad = (mapped >= K) & (mapped != IGNORE) | (mapped < 0)
    if not bad.any():
        return
    if colour:
        raise DataError(f"{r.mask}: mask colours {values_text(r.values[bad], colour=True)} are not in the "
                        f"\"colors\" (or \"ignore_color\") of classes.json; colours found: "
                        f"{values_text(r.values, colour=True)}",
                        hint='give every class colour in "colors" (in class order), or the colour to skip '
                             'as "ignore_color": [r, g, b]')
    raise DataError(f"{r.mask}: mask values {values_text(r.values[bad])} are not classes 0..{K - 1} or "
                    f"{IGNORE} (ignore); values found: {values_text(r.values)}",
                    hint="fix the mask, or list every class in classes.json")


def check_record(r: Record, mapped: np.ndarray, K: int, colour: bool = False) -> None:
    """Raise the DataError for the first thing wrong with one image/mask pair."""
    check_pair(r.name, r.image, r.mask, r.image_hw, r.mask_hw)
    check_values(r, mapped, K, colour)


def check_dataset(ds, on_item: Callable[[int], None] | None = None) -> DataStats:
    """Scan every mask of ds once; raise DataError at the first bad pair, else return per-class pixel counts."""
    K = len(ds.classes)
    colour = bool(getattr(ds, "colour_masks", False))
    st = DataStats(list(ds.classes), np.zeros(K, np.int64), np.zeros(K, np.int64))
    for i in range(len(ds)):
        r = ds.scan(i)
        mapped = ds.value_map(r.values)
        check_record(r, mapped, K, colour)
        lab = mapped != IGNORE
        np.add.at(st.pixels, mapped[lab], r.counts[lab])
        st.present[np.unique(mapped[lab])] += 1
        st.ignored += int(r.counts[~lab].sum())
        st.images += 1
        if on_item is not None:
            on_item(i)
    return st


__all__ = ["Record", "record_from_mask", "DataStats", "values_text", "check_pair", "check_values", "check_record",
           "check_dataset"]
