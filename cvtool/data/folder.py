"""Folder datasets: DIR/images/* and DIR/masks/* paired by file stem, optionally split as DIR/train/... and
DIR/val/..., class names and colours from an optional DIR/classes.json.

Opening reads every image header (size, mode) and every mask once; the summaries are cached in a
FileSource shared by the train and val views, so check_dataset() afterwards reads nothing again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvtool.data.io import (IGNORE, IMAGE_SUFFIXES, image_channels, is_image_file, open_pil, read_image, read_mask,
                            read_mask_info, voc_palette)
from cvtool.data.loader import DataInfo, Sample
from cvtool.data.transforms import to_chw
from cvtool.data.validate import Record, check_pair, record_from_mask
from cvtool.errors import DataError

LAYOUT_HINT = ("expected DIR/images + DIR/masks (optionally DIR/train/... and DIR/val/...), "
               "or a PASCAL VOC folder (JPEGImages, SegmentationClass)")


@dataclass(frozen=True)
class Item:
    name: str
    image: Path
    mask: Path | None  # None: no mask file (an error that check_dataset reports)


class FileSource:
    """Per-file summaries shared by the views of one dataset: image headers and mask records, each read once."""

    def __init__(self):
        self.headers: dict[Path, tuple[str, tuple[int, int]]] = {}  # image -> (mode, (H, W))
        self.records: dict[Path, Record] = {}  # image -> its mask's Record
        self.mask_modes: dict[Path, str] = {}
        self.palette: list[int] | None = None  # the first palette mask's palette

    def header(self, path: Path) -> tuple[str, tuple[int, int]]:
        if path not in self.headers:
            with open_pil(path) as im:
                self.headers[path] = (im.mode, (im.size[1], im.size[0]))
        return self.headers[path]

    def scan(self, it: Item) -> Record:
        if it.image not in self.records:
            mask = None
            if it.mask is not None:
                mask, mode, palette = read_mask_info(it.mask)
                self.mask_modes[it.mask] = mode
                if palette is not None and self.palette is None:
                    self.palette = palette
            self.records[it.image] = record_from_mask(it.name, str(it.image), it.mask and str(it.mask),
                                                      self.header(it.image)[1], mask)
        return self.records[it.image]


class FileDataset:
    """Image/mask file pairs. ds[i] reads both files; binary=True maps mask value 255 to class 1."""

    ignore_index = IGNORE

    def __init__(self, items: list[Item], source: FileSource, *, classes: list[str], colors, in_channels: int,
                 binary: bool, description: str):
        self.items, self.source = items, source
        self.classes, self.colors = list(classes), list(colors)
        self.in_channels, self.binary, self.description = in_channels, binary, description

    def __len__(self) -> int:
        return len(self.items)

    def value_map(self, values: np.ndarray) -> np.ndarray:
        return np.where(values == 255, 1, values) if self.binary else values

    def __getitem__(self, i: int) -> Sample:
        it = self.items[i]
        image = read_image(it.image, self.in_channels)
        mask = read_mask(it.mask) if it.mask is not None else None
        check_pair(it.name, str(it.image), it.mask and str(it.mask), image.shape[:2],
                   None if mask is None else mask.shape)
        return Sample(to_chw(image), self.value_map(mask.astype(np.int64)), it.name)

    def scan(self, i: int) -> Record:
        return self.source.scan(self.items[i])


def files_by_stem(d: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in sorted(d.iterdir()):
        if is_image_file(p):
            if p.stem in out:
                raise DataError(f"{d}: two files named '{p.stem}' ({out[p.stem].name}, {p.name})",
                                hint="keep one file per image name")
            out[p.stem] = p
    return out


def list_pairs(d: Path) -> tuple[list[Item], int]:
    """Items of d/images paired with d/masks by stem, sorted by name; and how many masks have no image."""
    img_dir, mask_dir = d / "images", d / "masks"
    for sub in (img_dir, mask_dir):
        if not sub.is_dir():
            raise DataError(f"{sub}: no such folder", hint=LAYOUT_HINT)
    images, masks = files_by_stem(img_dir), files_by_stem(mask_dir)
    if not images:
        raise DataError(f"{img_dir}: no images (looked for {', '.join(IMAGE_SUFFIXES)})")
    return [Item(n, images[n], masks.get(n)) for n in sorted(images)], len(set(masks) - set(images))


def split_items(items: list, val_split: float, seed: int) -> tuple[list, list]:
    """Deterministic hold-out: round(n * val_split) items (at least 1, at most n-1) chosen by seed, order kept."""
    n = len(items)
    n_val = round(n * val_split)
    if val_split > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    held = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    return [x for k, x in enumerate(items) if k not in held], [x for k, x in enumerate(items) if k in held]


def read_classes_json(path: Path) -> tuple[list[str] | None, list | None]:
    """({"classes": [...], "colors": [[r,g,b], ...]}) -> (names, colours); (None, None) when the file is absent."""
    if not path.is_file():
        return None, None
    try:
        doc = json.loads(path.read_text())
        names = doc["classes"]
        colors = doc.get("colors")
        ok = isinstance(names, list) and names and all(isinstance(c, str) for c in names)
        ok = ok and (colors is None or (len(colors) == len(names) and all(len(c) == 3 for c in colors)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: cannot read classes ({e})",
                        hint='write {"classes": [...], "colors": [[r,g,b], ...]}') from None
    if not ok:
        raise DataError(f"{path}: 'classes' must be a list of names and 'colors' one [r, g, b] per class")
    return names, colors


def describe(root: Path, part: str, n: int, K: int, C: int) -> str:
    return f"{root} [{part}]: {n} images, {K} classes, {'RGB' if C == 3 else 'grayscale'}"


def image_notes(source: FileSource, items: list[Item]) -> tuple[int, list[str]]:
    """in_channels (3 if any image is colour) and notes on what reading converts."""
    modes = [source.header(it.image)[0] for it in items]
    C = 3 if any(image_channels(m) == 3 for m in modes) else 1
    notes = []
    if n := sum(m in ("RGBA", "LA", "PA") for m in modes):
        notes.append(f"{n} images with alpha: alpha dropped (RGBA -> RGB)")
    if C == 3 and (n := sum(image_channels(m) == 1 for m in modes)):
        notes.append(f"{n} grayscale images repeated to 3 channels (the others are colour)")
    return C, notes


def mask_classes(source: FileSource, items: list[Item], names, colors, notes: list[str]):
    """Read every mask once; decide binary 0/255 or class index, class names and colours -> (names, colors, binary)."""
    recs = [source.scan(it) for it in items if it.mask is not None]
    seen = np.unique(np.concatenate([r.values for r in recs])) if recs else np.zeros(0, np.int64)
    palette_masks = any(m == "P" for m in source.mask_modes.values())
    binary = (not palette_masks and 255 in seen and set(seen.tolist()) <= {0, 255}
              and (names is None or len(names) == 2))
    if binary:
        notes.append("binary 0/255 masks mapped to 0/1")
    if palette_masks:
        notes.append("palette masks: the palette index is the class")
    if names is None:
        labels = seen[seen != IGNORE]
        K = 2 if binary else max(int(labels.max()) + 1 if labels.size else 0, 2)
        names = ["background", "foreground"] if binary else [f"class{k}" for k in range(K)]
        notes.append(f"no classes.json: {K} classes named {names[0]}..{names[-1]}")
        if K > 64 and not palette_masks:
            notes.append(f"mask values reach {K - 1}: are these class indices? (JPEG masks or grey images are not)")
    K = len(names)
    if colors is None:
        pal = source.palette
        colors = ([tuple(pal[3 * k:3 * k + 3]) for k in range(K)] if pal is not None and len(pal) >= 3 * K
                  else voc_palette(K))
    return list(names), [tuple(int(v) for v in c) for c in colors], binary


def open_folder(root: Path, *, val_split: float, seed: int) -> tuple[FileDataset, FileDataset, DataInfo]:
    names, colors = read_classes_json(root / "classes.json")
    if (root / "train").is_dir():
        train, orphans = list_pairs(root / "train")
        if (root / "val").is_dir():
            val, o = list_pairs(root / "val")
            orphans += o
            split = "train/ and val/ subfolders"
        else:
            train, val = split_items(train, val_split, seed)
            split = f"train/ only: {len(val)} of {len(train) + len(val)} held out (seed {seed})"
    else:
        train, orphans = list_pairs(root)
        train, val = split_items(train, val_split, seed)
        split = f"{len(val)} of {len(train) + len(val)} held out (seed {seed}, val_split {val_split})"

    source = FileSource()
    C, notes = image_notes(source, train + val)
    names, colors, binary = mask_classes(source, train + val, names, colors, notes)
    K = len(names)
    if orphans:
        notes.append(f"{orphans} masks without an image ignored")

    def view(items, part):
        return FileDataset(items, source, classes=names, colors=colors, in_channels=C, binary=binary,
                           description=describe(root, part, len(items), K, C))

    info = DataInfo("folder", str(root), list(names), colors, C, len(train), len(val), split, notes,
                    description=f"folder {root}: {K} classes, {'RGB' if C == 3 else 'grayscale'}")
    return view(train, "train"), view(val, "val"), info


__all__ = ["Item", "FileSource", "FileDataset", "list_pairs", "split_items", "read_classes_json", "open_folder",
           "LAYOUT_HINT"]
