"""Segmentation data: the built-in synthetic shapes, folder datasets, PASCAL VOC, COCO JSON, YOLO; checks; batches.

    train_ds, val_ds, info = open_datasets(None)          # or a folder path
    check_dataset(train_ds); check_dataset(val_ds)         # DataError on the first bad mask
    for x, y in batches(train_ds, 8, crop=128, augment=True, rng=rng, shuffle=True, drop_last=True): ...

numpy + Pillow only (Pillow imported inside the functions that read or write files).
"""

from __future__ import annotations

from pathlib import Path

from cvtool.data.io import IGNORE, IMAGE_SUFFIXES, read_image, read_mask, write_mask_png, write_overlay_png
from cvtool.data.loader import DataInfo, Sample, SegDataset, batches, channel_stats, num_batches, pad_to_multiple
from cvtool.data.synth import TRAIN, VAL, SynthDataset
from cvtool.data.validate import DataStats, check_dataset
from cvtool.errors import DataError, UsageError

SYNTH = "synth"


def open_synth(*, val_split: float, seed: int, size: int,
               n: int | tuple[int, int]) -> tuple[SynthDataset, SynthDataset, DataInfo]:
    """n generated images, round(n * val_split) of them for validation; or n = (n_train, n_val).
    The two splits come from disjoint seed streams."""
    if isinstance(n, (tuple, list)):
        n_train, n_val = int(n[0]), int(n[1])
    else:
        n_val = round(n * val_split)
        n_train = n - n_val
    if size < 8 or n_train < 1 or n_val < 0:
        raise UsageError(f"synthetic data needs size >= 8 and at least 1 training image (got size {size}, n {n})")
    train, val = SynthDataset(n_train, size, seed, TRAIN), SynthDataset(n_val, size, seed, VAL)
    split = f"generated: train from seeds ({seed}, {TRAIN}, i), val from ({seed}, {VAL}, i)"
    info = DataInfo(SYNTH, None, list(train.classes), list(train.colors), 3, n_train, n_val, split,
                    [f"synthetic shapes {size}x{size}, made on the fly"],
                    description=f"synthetic shapes {size}x{size} (seed {seed}), {len(train.classes)} classes")
    return train, val, info


def open_datasets(data: str | None, *, val_split: float = 0.2, seed: int = 0, synth_size: int = 128,
                  synth_n: int | tuple[int, int] = 512) -> tuple[SegDataset, SegDataset, DataInfo]:
    """(train_ds, val_ds, info). data None or "synth": the built-in set (synth_n images split by val_split, or
    synth_n = (n_train, n_val)); else a folder, its layout detected: PASCAL VOC when it holds JPEGImages +
    SegmentationClass; DIR/images + DIR/masks when there is a masks/ (or train/masks/) folder; else COCO JSON
    (cvtool.data.coco's layouts), else YOLO segmentation (labels/ folders or a data.yaml); else the folder
    format's error."""
    from cvtool.data.coco import coco_files, open_coco
    from cvtool.data.folder import LAYOUT_HINT, open_folder
    from cvtool.data.voc import find_voc, open_voc
    from cvtool.data.yolo import is_yolo, open_yolo

    if not 0 <= val_split < 1:
        raise UsageError(f"val_split must be in [0, 1), got {val_split}")
    if data is None or data == SYNTH:
        return open_synth(val_split=val_split, seed=seed, size=synth_size, n=synth_n)
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset folder", hint=f"use '{SYNTH}' or a folder: {LAYOUT_HINT}")
    voc = find_voc(root)
    if voc is not None:
        return open_voc(voc, val_split=val_split, seed=seed)
    if not any((d / "masks").is_dir() for d in (root, root / "train")):
        if files := coco_files(root):
            return open_coco(root, files, val_split=val_split, seed=seed)
        if is_yolo(root):
            return open_yolo(root, val_split=val_split, seed=seed)
    return open_folder(root, val_split=val_split, seed=seed)


__all__ = [
    "open_datasets", "open_synth", "SYNTH", "Sample", "SegDataset", "DataInfo", "DataStats", "SynthDataset",
    "check_dataset", "batches", "num_batches", "channel_stats", "pad_to_multiple",
    "read_image", "read_mask", "write_mask_png", "write_overlay_png", "IMAGE_SUFFIXES", "IGNORE",
]
