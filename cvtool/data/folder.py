"""Folder datasets: DIR/images/* and DIR/masks/* paired by file stem, optionally split as DIR/train/... and
DIR/val/..., class names (and colours) from an optional DIR/classes.json or DIR/classes.txt.

Opening reads every image header (size, mode) and every mask once; the summaries are cached in a
FileSource shared by the train and val views, so check_dataset() afterwards reads nothing again. From the
distinct values of all masks it decides, once per dataset, how raw mask values become classes (a ValueMap
shared by both views): class indices as they are, binary 0/255 -> 0/1, sparse or 16-bit values -> 0..n-1 in
ascending order, colour masks -> the class of each colour in classes.json. Each conversion adds a note.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cvtool.data.classes import CLASSES_HINT, ClassSpec, read_classes, read_classes_json, read_classes_txt
from cvtool.data.io import (
    COLOUR_MASK_MODES,
    IGNORE,
    IMAGE_SUFFIXES,
    hex_color,
    image_channels,
    is_image_file,
    open_pil,
    read_image,
    read_mask,
    read_mask_info,
    rgb_code,
    voc_palette,
)
from cvtool.data.loader import DataInfo, Sample
from cvtool.data.transforms import to_chw
from cvtool.data.validate import Record, check_pair, check_values, record_from_mask, values_text
from cvtool.errors import DataError

LAYOUT_HINT = ("expected DIR/images + DIR/masks (optionally DIR/train/... and DIR/val/...), "
               "a PASCAL VOC folder (JPEGImages, SegmentationClass), COCO JSON (annotations/*.json or "
               "_annotations.coco.json) or YOLO segmentation (images/ + labels/, data.yaml)")


@dataclass(frozen=True)
class Item:
    name: str
    image: Path
    mask: Path | None  # None: no mask file (an error that check_dataset reports)


class FileSource:
    """Per-file summaries shared by the views of one dataset: image headers and mask records, each read once."""

    def __init__(self, colour: bool = False):
        self.colour = colour  # read RGB(A) masks as colour codes (classes.json gives "colors"); else refuse them
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
                mask, mode, palette = read_mask_info(it.mask, self.colour)
                self.mask_modes[it.mask] = mode
                if palette is not None and self.palette is None:
                    self.palette = palette
            self.records[it.image] = record_from_mask(it.name, str(it.image), None if it.mask is None else str(it.mask),
                                                      self.header(it.image)[1], mask)
        return self.records[it.image]


class ValueMap:
    """Raw mask value -> class index or IGNORE; a value it does not hold -> -1 (check_values reports it).

    Vectorised: a look-up table for values in 0..65535 (8- and 16-bit masks), np.searchsorted beyond (colour codes)."""

    def __init__(self, mapping: dict[int, int]):
        self.mapping = {int(k): int(v) for k, v in sorted(mapping.items())}
        self.keys = np.fromiter(self.mapping, np.int64, len(self.mapping))
        self.targets = np.fromiter(self.mapping.values(), np.int64, len(self.mapping))
        self._lut: np.ndarray | None = None

    @classmethod
    def identity(cls, K: int, ignore: int | None = IGNORE) -> ValueMap:
        return cls({**{k: k for k in range(K)}, **({} if ignore is None else {ignore: IGNORE})})

    def lut(self) -> np.ndarray:
        if self._lut is None:
            lut = np.full(1 << 16, -1, np.int64)
            small = (self.keys >= 0) & (self.keys < 1 << 16)
            lut[self.keys[small]] = self.targets[small]
            self._lut = lut
        return self._lut

    def __call__(self, values: np.ndarray) -> np.ndarray:
        v = np.asarray(values)
        if v.dtype in (np.uint8, np.uint16) or v.size and v.min() >= 0 and v.max() < 1 << 16:
            return self.lut()[v]
        v = v.astype(np.int64)
        if not self.keys.size or not v.size:
            return np.full(v.shape, -1, np.int64)
        idx = np.minimum(np.searchsorted(self.keys, v), self.keys.size - 1)
        return np.where(self.keys[idx] == v, self.targets[idx], -1)


class FileDataset:
    """Image/mask file pairs. ds[i] reads both files and maps the mask's raw values to classes through
    value_map (value_mapping: the raw -> class dict, IGNORE = 255 for ignored values)."""

    ignore_index = IGNORE

    def __init__(self, items: list[Item], source: FileSource, *, classes: list[str], colors, in_channels: int,
                 value_map: ValueMap | dict[int, int], description: str, colour_masks: bool = False):
        self.items, self.source = items, source
        self.classes, self.colors = list(classes), list(colors)
        self.in_channels, self.description = in_channels, description
        self._map = value_map if isinstance(value_map, ValueMap) else ValueMap(value_map)
        self.colour_masks = colour_masks  # raw values are r<<16|g<<8|b codes (errors show #rrggbb)

    @property
    def value_mapping(self) -> dict[int, int]:
        """raw mask value -> class index (IGNORE: not counted); other values are errors."""
        return dict(self._map.mapping)

    def __len__(self) -> int:
        return len(self.items)

    def value_map(self, values: np.ndarray) -> np.ndarray:
        """int64 class indices (or IGNORE) of raw mask values; -1 where a value is no class."""
        return self._map(values)

    def __getitem__(self, i: int) -> Sample:
        it = self.items[i]
        image = read_image(it.image, self.in_channels)
        mask = read_mask(it.mask, self.source.colour) if it.mask is not None else None
        check_pair(it.name, str(it.image), None if it.mask is None else str(it.mask), image.shape[:2],
                   None if mask is None else mask.shape)
        assert mask is not None  # check_pair refuses an image without one
        y = self.value_map(mask)
        if (y < 0).any():  # a value check_dataset would refuse: say which, never hand out -1
            r = record_from_mask(it.name, str(it.image), str(it.mask), image.shape[:2], mask)
            check_values(r, self.value_map(r.values), len(self.classes), self.colour_masks)
        return Sample(to_chw(image), y, it.name)

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
    if not masks:
        raise DataError(f"{mask_dir}: no masks for the {len(images)} images in {img_dir} (looked for "
                        f"{', '.join(IMAGE_SUFFIXES)})", hint="each image needs a mask of the same name in masks/")
    if not set(images) & set(masks):  # masks there, none paired: a naming scheme, not a few missing files
        first = images[min(images)]
        held = ", ".join(masks[n].name for n in sorted(masks)[:3]) + (", ..." if len(masks) > 3 else "")
        raise DataError(f"{img_dir}: none of its {len(images)} images has a mask of the same name in {mask_dir} "
                        f"({first.name} pairs with a mask named {first.stem}.*; masks/ holds {held})",
                        hint="name each mask like its image: images/a.jpg pairs with masks/a.png")
    return [Item(n, images[n], masks.get(n)) for n in sorted(images)], len(set(masks) - set(images))


def split_items(items: list, val_split: float, seed: int) -> tuple[list, list]:
    """Deterministic hold-out: round(n * val_split) items (at least 1, at most n-1) chosen by seed, order kept."""
    n = len(items)
    n_val = round(n * val_split)
    if val_split > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    held = set(np.random.default_rng(seed).permutation(n)[:n_val].tolist())
    return [x for k, x in enumerate(items) if k not in held], [x for k, x in enumerate(items) if k in held]


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
    if n := sum(m.startswith("I") for m in modes):
        notes.append(f"{n} 16-bit images read as 8-bit: value >> 8 (65535 -> 255; 12-bit data, 0..4095, becomes 0..15)")
    if n := sum(m == "CMYK" for m in modes):
        notes.append(f"{n} CMYK images converted to RGB: R = (255 - C)(255 - K) / 255, G and B likewise from M and Y")
    return C, notes


MAX_REMAP = 64  # more distinct values than this are not a handful of labels (grey images, JPEG masks)


@dataclass
class MaskClasses:
    """How one dataset's masks become classes: names, colours, the shared value map, colour masks or not."""

    names: list[str]
    colors: list[tuple[int, int, int]]
    value_map: ValueMap
    colour_masks: bool = False


def _colour_map(pairs, spec: ClassSpec, notes: list[str]) -> ValueMap:
    """RGB masks: each palette colour -> its class, ignore_color -> IGNORE. Refuses mixed kinds and clashing colours."""
    first = next(it for it, _, m in pairs if m in COLOUR_MASK_MODES)
    other = next(((it, m) for it, _, m in pairs if m not in COLOUR_MASK_MODES), None)
    if other is not None:
        raise DataError(f"{other[0].mask}: mask is {other[1]} but {first.mask} is an RGB colour mask",
                        hint="store every mask the same way: colour-coded RGB, or one channel holding the class")
    codes = rgb_code(spec.colors).tolist()
    mapping: dict[int, int] = {}
    for k, c in enumerate(codes):
        if c in mapping:
            raise DataError(f"{spec.path}: classes '{spec.names[mapping[c]]}' and '{spec.names[k]}' have the same "
                            f"colour {hex_color(c)}, so colour masks cannot tell them apart",
                            hint="give each class its own colour")
        mapping[c] = k
    note = f"colour masks: each colour in {spec.path.name} \"colors\" is its class"
    if spec.ignore_color is not None:
        c = int(rgb_code([spec.ignore_color])[0])
        if c in mapping:
            raise DataError(f"{spec.path}: \"ignore_color\" {hex_color(c)} is also the colour of class "
                            f"'{spec.names[mapping[c]]}'", hint="give the ignored pixels a colour of their own")
        mapping[c] = IGNORE
        note += f", {hex_color(c)} (ignore_color) is ignored"
    notes.append(note)
    return ValueMap(mapping)


def _label_map(recs: list[Record], seen: np.ndarray, names, spec: ClassSpec | None, palette_masks: bool,
               notes: list[str]) -> tuple[ValueMap, int, bool]:
    """Grayscale / palette / 16-bit masks -> (value map, number of classes, binary 0/255)."""
    wide = not palette_masks and seen.size and int(seen.max()) > 255  # 16-bit labels: 65535 is the ignore value
    ignore = 65535 if wide else IGNORE
    labels = seen[seen != ignore]
    K = None if names is None else len(names)
    if (not palette_masks and 255 in seen and set(seen.tolist()) <= {0, 255} and K in (None, 2)):
        notes.append("binary 0/255 masks mapped to 0/1")
        return ValueMap({0: 0, 255: 1}), 2, True
    top = int(labels.max()) + 1 if labels.size else 0
    if palette_masks or not labels.size or labels.min() < 0:
        identity = True  # palette index = class; negative values are reported by check_dataset
    elif K is not None:
        identity = top <= K
    else:  # no names: class indices unless sparse (more than half of 0..max unused) or 16-bit
        identity = not wide and top <= 2 * labels.size
    n = labels.size
    if K is not None and identity and not palette_masks and labels.size and top < K:
        assert spec is not None  # K counts its names
        raise DataError(f"{spec.path}: names {K} classes but no mask holds a value above {top - 1} (values found: "
                        f"{values_text(labels)}), so {', '.join(repr(c) for c in names[top:][:5])}"
                        f"{', ...' if K - top > 5 else ''} would never be trained",
                        hint=f"list one name per mask value in {spec.path.name} (class k = mask value k), or check "
                             f"that these are the right masks")
    if n > MAX_REMAP and (names is None or not identity):  # with names, ADE20K-like 150 class indices are fine
        r = max(recs, key=lambda r: r.values.size)
        raise DataError(f"{r.mask}: masks hold {n} distinct values: these look like images, not class-index masks "
                        f"(this one holds {values_text(r.values)})",
                        hint="masks need one value per class (PNG, not JPEG), or RGB colours listed in classes.json; "
                             "if they are class indices, name the classes in classes.json or classes.txt")
    if identity:
        K = K if K is not None else max(top, 2)
        if names is None and not palette_masks and 0 < labels.size < top:
            absent = sorted(set(range(top)) - set(labels.tolist()))
            notes.append(f"mask values {values_text(labels)} taken as class indices "
                         f"(no mask holds {values_text(np.array(absent))})")
        return ValueMap.identity(K, None if wide and ignore not in seen else ignore), K, False
    if K is not None and n != K:  # some value is >= K (else identity): name the first mask holding one
        assert spec is not None  # K counts its names
        r, bad = next((r, b) for r in recs if (b := r.values[(r.values >= K) & (r.values != ignore)]).size)
        also = f" or {ignore} (ignore)" if ignore == IGNORE or ignore in seen else ""
        raise DataError(f"{r.mask}: mask values {values_text(bad)} are not classes 0..{K - 1}{also}; values found: "
                        f"{values_text(r.values)} (all masks hold {n} distinct values, {spec.path.name} names "
                        f"{K} classes)",
                        hint=f"fix the masks, or name one class per mask value in {spec.path.name} (values then "
                             f"map to classes in ascending order)")
    mapping = {int(v): k for k, v in enumerate(labels.tolist())}
    note = f"mask values {', '.join(map(str, mapping))} remapped to classes {', '.join(map(str, range(n)))}"
    if ignore in seen or ignore == IGNORE:  # 8-bit masks: 255 always means ignore
        mapping[ignore] = IGNORE
    if ignore in seen:
        note += f" ({ignore} = ignore)" if ignore == IGNORE else f" ({ignore} -> {IGNORE}, ignore)"
    notes.append(note)
    return ValueMap(mapping), max(n, 2) if names is None else n, False


def mask_classes(source: FileSource, items: list[Item], spec: ClassSpec | None, notes: list[str]) -> MaskClasses:
    """Read every mask once; decide from all their distinct values how raw values map to classes, the class names
    and colours. Dataset-level refusals (wrong class count, image-like masks, mixed mask kinds) raise here;
    values of single masks that are no class are left to check_dataset."""
    pairs = [(it, source.scan(it), source.mask_modes[it.mask]) for it in items if it.mask is not None]
    recs = [r for _, r, _ in pairs]
    seen = np.unique(np.concatenate([r.values for r in recs])) if recs else np.zeros(0, np.int64)
    names = None if spec is None else spec.names
    colors = None if spec is None else spec.colors
    colour_masks = any(m in COLOUR_MASK_MODES for _, _, m in pairs)
    palette_masks = any(m == "P" for _, _, m in pairs)
    binary = False
    if colour_masks:
        assert spec is not None, "RGB masks are read only when classes.json gives colours (FileSource(colour=...))"
        vmap, K = _colour_map(pairs, spec, notes), len(spec.names)
    else:
        vmap, K, binary = _label_map(recs, seen, names, spec, palette_masks, notes)
        if palette_masks:
            notes.append("palette masks: the palette index is the class")
    if names is None:
        names = ["background", "foreground"] if binary else [f"class{k}" for k in range(K)]
        notes.append(f"no classes.json or classes.txt: {K} classes named {names[0]}..{names[-1]}")
        if K > MAX_REMAP and not palette_masks:
            notes.append(f"mask values reach {K - 1}: are these class indices? (JPEG masks or grey images are not)")
    if colors is None:
        pal = source.palette
        colors = ([(pal[3 * k], pal[3 * k + 1], pal[3 * k + 2]) for k in range(K)]
                  if pal is not None and len(pal) >= 3 * K
                  else voc_palette(K))
    return MaskClasses(list(names), [(int(r), int(g), int(b)) for r, g, b in colors], vmap, colour_masks)


def open_folder(root: Path, *, val_split: float, seed: int) -> tuple[FileDataset, FileDataset, DataInfo]:
    spec = read_classes(root)
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

    source = FileSource(colour=spec is not None and spec.colors is not None)
    C, notes = image_notes(source, train + val)
    mc = mask_classes(source, train + val, spec, notes)
    names, colors, K = mc.names, mc.colors, len(mc.names)
    if orphans:
        notes.append(f"{orphans} masks without an image ignored")

    def view(items, part):
        return FileDataset(items, source, classes=names, colors=colors, in_channels=C, value_map=mc.value_map,
                           colour_masks=mc.colour_masks, description=describe(root, part, len(items), K, C))

    info = DataInfo("folder", str(root), list(names), colors, C, len(train), len(val), split, notes,
                    description=f"folder {root}: {K} classes, {'RGB' if C == 3 else 'grayscale'}")
    return view(train, "train"), view(val, "val"), info


__all__ = ["Item", "FileSource", "ValueMap", "FileDataset", "list_pairs", "split_items", "ClassSpec", "read_classes",
           "read_classes_json", "read_classes_txt", "mask_classes", "open_folder", "LAYOUT_HINT", "CLASSES_HINT"]
