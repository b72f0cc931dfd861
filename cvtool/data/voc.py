"""The PASCAL VOC segmentation layout: JPEGImages/*.jpg, SegmentationClass/*.png (palette masks, 255 = object
boundary, ignored), ImageSets/Segmentation/{train,val}.txt. 21 classes with VOC's own names and colours."""

from __future__ import annotations

from pathlib import Path

from cvtool.data.folder import FileDataset, FileSource, Item, ValueMap, split_items
from cvtool.data.io import voc_palette
from cvtool.data.loader import DataInfo

VOC_CLASSES = ["background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]
VOC_COLORS = voc_palette(len(VOC_CLASSES))


def is_voc(root: Path) -> bool:
    return (root / "JPEGImages").is_dir() and (root / "SegmentationClass").is_dir()


def find_voc(root: Path) -> Path | None:
    """root itself, or the newest VOC20xx folder in it or in its VOCdevkit/ (as the archives unpack)."""
    if is_voc(root):
        return root
    found = sorted(p for base in (root, root / "VOCdevkit") if base.is_dir()
                   for p in base.glob("VOC20*") if is_voc(p))
    return found[-1] if found else None


def _names(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def open_voc(root: Path, *, val_split: float, seed: int) -> tuple[FileDataset, FileDataset, DataInfo]:
    sets = root / "ImageSets" / "Segmentation"
    if (sets / "train.txt").is_file() and (sets / "val.txt").is_file():
        train_names, val_names = _names(sets / "train.txt"), _names(sets / "val.txt")
        split = "ImageSets/Segmentation/train.txt and val.txt"
    else:
        names = sorted(p.stem for p in (root / "SegmentationClass").glob("*.png"))
        train_names, val_names = split_items(names, val_split, seed)
        split = f"no ImageSets lists: {len(val_names)} of {len(names)} masks held out (seed {seed})"

    def items(names):
        out = []
        for n in names:
            mask = root / "SegmentationClass" / f"{n}.png"
            out.append(Item(n, root / "JPEGImages" / f"{n}.jpg", mask if mask.is_file() else None))
        return out

    source = FileSource()  # nothing read now: VOC's classes are known; check_dataset reads each mask once
    vmap = ValueMap.identity(len(VOC_CLASSES))  # palette index = class, 255 = ignore

    def view(names, part):
        return FileDataset(items(names), source, classes=VOC_CLASSES, colors=VOC_COLORS, in_channels=3,
                           value_map=vmap, description=f"{root} [{part}]: PASCAL VOC, {len(names)} images, 21 classes")

    notes = ["VOC masks: palette index = class, 255 = object boundary (ignored)"]
    info = DataInfo("voc", str(root), list(VOC_CLASSES), list(VOC_COLORS), 3, len(train_names), len(val_names),
                    split, notes, description=f"PASCAL VOC {root}: 21 classes, RGB")
    return view(train_names, "train"), view(val_names, "val"), info


__all__ = ["VOC_CLASSES", "VOC_COLORS", "is_voc", "find_voc", "open_voc"]
