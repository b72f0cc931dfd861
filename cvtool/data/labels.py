"""Instance labels (polygons, RLE) -> class-index masks in memory: what COCO JSON and YOLO segmentation share.

Rasterisation is pycocotools' (imported here, lazily: only reading these formats needs it). Its convention: a
pixel (x, y) covers [x, x+1) x [y, y+1) and is inside a polygon when its centre (x + 0.5, y + 0.5) is; several
polygons of one instance are united (a hole is an RLE, or one polygon that walks round the hole along a slit).

How instances become one mask (the documented rule):
- class 0 is the background: every pixel no instance covers;
- crowd regions (COCO iscrowd = 1) become IGNORE (255): painted first, so any instance drawn over them wins;
- instances are painted largest first, so a smaller one lying on a larger one stays visible; equal areas keep
  the file's order (the later over the earlier).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from cvtool.data.folder import FileSource, Item, image_notes
from cvtool.data.io import IGNORE, read_image, voc_palette
from cvtool.data.loader import Sample
from cvtool.data.transforms import to_chw
from cvtool.data.validate import Record, record_from_mask
from cvtool.errors import DataError, UsageError

INSTALL_HINT = "install it: pip install pycocotools (it decodes COCO polygons and RLE)"


class Shape(NamedTuple):
    """One instance: its class (1..K-1, or 0 for an explicit background label), and its region as pycocotools
    takes it: a list of flat [x1, y1, x2, y2, ...] polygons in pixels, or an RLE dict {"size": [H, W], "counts"}."""

    cls: int
    region: list | dict
    crowd: bool = False


class Labels(NamedTuple):
    """An image's instances, the size they were drawn on (H, W) and the file they came from."""

    shapes: list[Shape]
    hw: tuple[int, int]
    source: Path


def coco_mask():
    """pycocotools.mask, or one clear error."""
    try:
        from pycocotools import mask
    except ImportError:
        raise UsageError("reading COCO / YOLO labels needs pycocotools, which is not installed",
                         hint=INSTALL_HINT) from None
    return mask


def region_rle(region, H: int, W: int) -> dict:
    """One instance's region as a compressed RLE (polygons united)."""
    mask = coco_mask()
    if not isinstance(region, dict):
        return mask.merge(mask.frPyObjects([list(map(float, p)) for p in region], H, W))
    if isinstance(region["counts"], list):  # uncompressed: column-major run lengths
        return mask.frPyObjects(region, H, W)
    counts = region["counts"]
    return {"size": region["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def decode(rle: dict) -> np.ndarray:
    """bool (H, W) of a compressed RLE."""
    with warnings.catch_warnings():  # pycocotools 2.0.11 under numpy 2: a DeprecationWarning about copy=False
        warnings.simplefilter("ignore", DeprecationWarning)
        return coco_mask().decode(rle).astype(bool)


def rasterise(labels: Labels) -> np.ndarray:
    """uint8 (H, W) class-index mask of one image's instances, by the rule in this module's docstring. Areas come
    from the RLEs, so one instance's pixels are decoded at a time (many large instances need no more memory)."""
    H, W = labels.hw
    out = np.zeros((H, W), np.uint8)
    rles = [region_rle(s.region, H, W) for s in labels.shapes]
    for s, r in zip(labels.shapes, rles):
        if s.crowd:
            out[decode(r)] = IGNORE
    objects = [k for k, s in enumerate(labels.shapes) if not s.crowd]
    area = {k: int(coco_mask().area(rles[k])) for k in objects}
    for k in sorted(objects, key=lambda k: (-area[k], k)):  # largest first; ties: file order (later on top)
        out[decode(rles[k])] = labels.shapes[k].cls
    return out


def unique_names(paths: list[Path], bases: list[Path]) -> list[str]:
    """Each image's name: its stem, or where stems repeat, its path below its base folder ('a/001' -> 'a__001')."""
    stems = [p.stem for p in paths]
    seen: dict[str, int] = {}
    for s in stems:
        seen[s] = seen.get(s, 0) + 1
    out: list[str] = []
    taken: set[str] = set()
    for p, base, s in zip(paths, bases, stems):
        name = s
        if seen[s] > 1:
            rel = p.relative_to(base) if p.is_relative_to(base) else p
            name = "__".join(rel.with_suffix("").parts[-4:])
        while name in taken:  # one file listed twice: the second gets a number
            name += f"__{len(out)}"
        out.append(name)
        taken.add(name)
    return out


@dataclass
class LabelItem:
    """One image and how to get its instances (from a JSON already parsed, or a label file read on demand)."""

    item: Item  # name, image file, annotation file (the fingerprint cache keys on both)
    labels: Callable[[tuple[int, int]], Labels]  # given the image file's (H, W): normalised coordinates need it


class LabelDataset:
    """Images whose masks are rasterised from instance labels; class indices directly (value_map: identity)."""

    ignore_index = IGNORE
    colour_masks = False

    def __init__(self, entries: list[LabelItem], source: FileSource, *, classes: list[str], in_channels: int,
                 description: str, check_size: bool = True):
        self.entries, self.source = entries, source
        self.items = [e.item for e in entries]
        self.classes = list(classes)
        self.colors = voc_palette(len(classes))
        self.in_channels, self.description = in_channels, description
        self.check_size = check_size  # COCO stores each image's size: it must be the file's
        self._records: dict[int, Record] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def value_map(self, values: np.ndarray) -> np.ndarray:
        """Rasterised masks already hold classes: values 0..K-1 and IGNORE stay, anything else is -1."""
        v = np.asarray(values, np.int64)
        return np.where((v >= 0) & (v < len(self.classes)) | (v == IGNORE), v, -1)

    def mask(self, i: int, image_hw: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 (H, W) class-index mask of image i; DataError when the labels' size is not the image's."""
        e = self.entries[i]
        hw = image_hw if image_hw is not None else self.source.header(e.item.image)[1]
        hw = (int(hw[0]), int(hw[1]))
        lab = e.labels(hw)
        if self.check_size and tuple(lab.hw) != tuple(hw):
            raise DataError(f"{lab.source}: image '{e.item.image.name}' is {lab.hw[1]}x{lab.hw[0]} there but the "
                            f"file {e.item.image} is {hw[1]}x{hw[0]}",
                            hint="re-export the labels from the images as they are (rotated or resized images "
                                 "need their labels exported again)")
        return rasterise(Labels(lab.shapes, hw, lab.source))

    def __getitem__(self, i: int) -> Sample:
        it = self.items[i]
        image = read_image(it.image, self.in_channels)
        return Sample(to_chw(image), self.mask(i, image.shape[:2]).astype(np.int64), it.name)

    def scan(self, i: int) -> Record:
        if i not in self._records:  # by index: a JSON may list one file twice, with other labels
            it, m = self.items[i], self.mask(i)
            self._records[i] = record_from_mask(it.name, str(it.image), str(it.mask), m.shape, m)
        return self._records[i]


def label_views(root: Path, kind: str, train: list[LabelItem], val: list[LabelItem], classes: list[str],
                check_size: bool) -> tuple[LabelDataset, LabelDataset, int, list[str]]:
    """The train and val LabelDatasets over one FileSource (image headers read once), their channel count and the
    notes on what reading the images converts."""
    source = FileSource()
    C, notes = image_notes(source, [e.item for e in train + val])
    K, what = len(classes), "RGB" if C == 3 else "grayscale"

    def view(entries, part):
        return LabelDataset(entries, source, classes=classes, in_channels=C, check_size=check_size,
                            description=f"{root} [{part}]: {kind}, {len(entries)} images, {K} classes, {what}")

    return view(train, "train"), view(val, "val"), C, notes


def split_name(name: str) -> str:
    """'train', 'val' or 'test' from a file or folder name (instances_train2017, valid, ...); '' when none."""
    n = name.lower()
    for key, words in (("train", ("train",)), ("val", ("val", "valid", "validation")), ("test", ("test",))):
        if any(w in n for w in words):
            return key
    return ""


class Split(NamedTuple):
    train: list
    val: list
    how: str  # for DataInfo.split
    notes: list[str]


def choose_split(groups: dict[str, list], val_split: float, seed: int, sources: str) -> Split:
    """Train and val from items grouped by split_name(): the export's own train and val when it has both, else a
    seeded hold-out (folder.split_items) from its train split, or from everything when it names no split.
    A test split is never trained on (a note says so); `sources` names where the split came from (for `how`)."""
    from cvtool.data.folder import split_items

    notes: list[str] = []
    train, val, test, other = (groups.get(k, []) for k in ("train", "val", "test", ""))
    if not train and not val:  # no train/val split: everything is one pool
        pool = train + val + test + other
        tr, va = split_items(pool, val_split, seed)
        return Split(tr, va, f"{len(va)} of {len(pool)} held out (seed {seed}, val_split {val_split})", notes)
    if test:
        notes.append(f"{len(test)} images of the test split not used (neither trained on nor validated)")
    if other:
        notes.append(f"{len(other)} images outside the train/val split trained on")
    if train and val:
        return Split(train + other, val, f"the export's train and val ({sources})", notes)
    pool = train + val + other
    tr, va = split_items(pool, val_split, seed)
    return Split(tr, va, f"{len(va)} of the {len(pool)} images of one split held out (seed {seed})", notes)


__all__ = ["Shape", "Labels", "LabelItem", "LabelDataset", "rasterise", "region_rle", "decode", "coco_mask", "unique_names",
           "label_views", "split_name", "choose_split", "Split", "INSTALL_HINT"]
