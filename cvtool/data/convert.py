"""Any dataset cvtool reads -> the folder format: images/ (the files as they were), palette-PNG masks/ (pixel =
class, 255 = ignore), classes.json with names and colours. Written into a temp folder renamed at the end, so the
target holds the whole dataset or nothing.

    summary = write_folder(train, val, info, Path("out"), on_item=advance)

A dataset with a validation split becomes out/train/ + out/val/, one without becomes out/images + out/masks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from cvtool.data.io import IGNORE, write_image_png, write_mask_png
from cvtool.data.loader import DataInfo
from cvtool.data.memory import to_hwc_uint8
from cvtool.errors import UsageError
from cvtool.fsutil import atomic_dir, atomic_write_bytes


class Converted(NamedTuple):
    out: Path
    parts: dict[str, int]  # folder below out ('' when flat) -> images written
    pixels: np.ndarray  # (K,) labelled pixels per class, over all images
    images: np.ndarray  # (K,) images holding each class
    ignored: int  # pixels of value IGNORE


def check_target(out: Path) -> None:
    """An existing non-empty folder (or a file) is never written into: nothing a user had is touched."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError(f"{out} already exists and is not empty", hint="choose a new folder for --to")


def write_part(ds, folder: Path, tally: list, on_item: Callable[[int], None] | None) -> int:
    """images/ and masks/ of one split into folder; adds per-class pixel and image counts to tally."""
    items = getattr(ds, "items", None)
    pixels, present, ignored = tally
    for i in range(len(ds)):
        s = ds[i]
        src = items[i].image if items is not None else None
        if src is not None:  # the file itself: no re-encoding (a JPEG stays the same JPEG)
            atomic_write_bytes(folder / "images" / f"{s.name}{src.suffix.lower()}", src.read_bytes())
        else:
            write_image_png(folder / "images" / f"{s.name}.png", to_hwc_uint8(s.image))
        write_mask_png(folder / "masks" / f"{s.name}.png", s.mask.astype(np.uint8), ds.colors)
        counts = np.bincount(s.mask.ravel(), minlength=IGNORE + 1)
        pixels += counts[: len(pixels)]
        present += counts[: len(present)] > 0
        ignored[0] += int(counts[IGNORE])
        if on_item is not None:
            on_item(i)
    return len(ds)


def write_folder(train, val, info: DataInfo, out: Path, on_item: Callable[[int], None] | None = None) -> Converted:
    check_target(out)
    K = len(info.classes)
    if K > IGNORE:
        raise UsageError(f"{K} classes do not fit palette masks (at most {IGNORE}: value {IGNORE} means ignore)")
    tally: list[Any] = [np.zeros(K, np.int64), np.zeros(K, np.int64), [0]]  # pixels, images, ignored
    parts = {"train": train, "val": val} if len(val) else {"": train}
    with atomic_dir(out) as tmp:
        written = {name: write_part(ds, tmp / name if name else tmp, tally, on_item) for name, ds in parts.items()}
        doc = {"classes": list(info.classes), "colors": [list(map(int, c)) for c in train.colors],
               "source": {"converted_from": info.root, "format": info.format, "split": info.split}}
        atomic_write_bytes(tmp / "classes.json", (json.dumps(doc, indent=2) + "\n").encode())
    return Converted(out, written, tally[0], tally[1], tally[2][0])


__all__ = ["write_folder", "check_target", "Converted"]
