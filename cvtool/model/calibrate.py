"""Images for a reduced-precision model: a calibration sample, and the masks it is judged by.

Calibration (int8): up to `n` images spread evenly over the training split the checkpoint remembers
(cvtool.model.checkpoint.DataSource), or over any folder given (`--calibrate DIR`: a dataset's training split, or
a plain folder of images), each prepared exactly as `cvtool segment` prepares it (the model's scale, normalised,
padded to the net's multiple; an image larger than a tile is cut to its central tile, as segment would tile it).

Judgement (compare_masks): the validation images segmented by the float32 model and by the reduced one along the
same path as `cvtool segment` and training's validation (cvtool.model.inference.segment_logits: scale, tiles, the
model's test-time augmentation); the share of pixels whose class is the same, and each model's mIoU against the
true masks (one confusion matrix over all images, as in training).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from cvtool.errors import DataError
from cvtool.model.checkpoint import DataSource
from cvtool.model.meta import ModelMeta
from cvtool.model.spec import ModelSpec

CALIBRATION_IMAGES = 32  # ORT's MinMax calibration settles within a few dozen images (docs/benchmarks.md)
TILE = 512  # segment's default --tile


class Images(NamedTuple):
    """uint8 (H, W[, C]) images, with masks (H, W) where they are known (None: agreement only, no mIoU)."""

    images: list[np.ndarray]
    masks: list[np.ndarray] | None
    what: str  # where they come from, for the report


def spread(n: int, k: int) -> list[int]:
    """k indices spread evenly over range(n) (all of them when k >= n): a sample that covers the whole split."""
    if k >= n:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


def from_dataset(ds, limit: int | None, what: str) -> Images:
    from cvtool.data.memory import to_hwc_uint8

    idx = spread(len(ds), limit) if limit else list(range(len(ds)))
    samples = [ds[i] for i in idx]
    return Images([to_hwc_uint8(s.image) for s in samples], [s.mask for s in samples], what)


def open_source(data: DataSource) -> tuple:
    """(train_ds, val_ds) of the data a checkpoint remembers; DataError when its folder is gone."""
    from cvtool.data import open_datasets

    if data.root is not None and not Path(data.root).is_dir():
        raise DataError(f"the checkpoint was trained on {data.root}, which is not there any more",
                        hint="give the training images with --calibrate DIR")
    return open_datasets(data.root, val_split=data.val_split, seed=data.seed, synth_size=data.synth_size,
                         synth_n=data.synth_n)[:2]


def _name(data: DataSource) -> str:
    return data.root or f"synthetic shapes (seed {data.seed})"


def remembered(data: DataSource, split: str, limit: int | None) -> Images:
    """The checkpoint's training ('train') or validation ('val') images, `limit` of them spread evenly (None: all)."""
    train, val = open_source(data)
    ds = train if split == "train" else val
    if len(ds) == 0:
        raise DataError(f"the {split} split of {_name(data)} is empty")
    return from_dataset(ds, limit, f"{len(ds) if limit is None else min(limit, len(ds))} {split} images of "
                                    f"{_name(data)}")


def folder(root: Path, limit: int | None) -> Images:
    """--calibrate DIR: a dataset's training split (DIR/images + DIR/masks, or VOC), else every image in DIR."""
    from cvtool.data import open_datasets
    from cvtool.data.io import is_image_file, read_image

    if not root.is_dir():
        raise DataError(f"--calibrate {root}: no such folder", hint="a folder of images, or a dataset folder")
    if (root / "images").is_dir() or (root / "JPEGImages").is_dir():
        train = open_datasets(str(root))[0]
        return from_dataset(train, limit, f"{min(limit or len(train), len(train))} training images of {root}")
    files = sorted(p for p in root.iterdir() if is_image_file(p))
    if not files:
        raise DataError(f"--calibrate {root}: the folder holds no images")
    picked = [files[i] for i in spread(len(files), limit or len(files))]
    return Images([read_image(p) for p in picked], None, f"{len(picked)} images of {root}")


def net_inputs(images: Images, spec: ModelSpec, meta: ModelMeta, tile: int = TILE) -> list[np.ndarray]:
    """Each image as the net sees it in `cvtool segment`: (1, C, H, W) float32, resampled by the model's scale,
    normalised, cut to its central tile when larger than one, edge-padded to the net's multiple."""
    from cvtool.arithmetic import ceil_div
    from cvtool.data.memory import resize_image, scaled_hw
    from cvtool.model.inference import prepare

    out = []
    for img in images.images:
        if meta.scale != 1.0:
            img = resize_image(np.ascontiguousarray(img), scaled_hw(img.shape[:2], meta.scale))
        x = prepare(img, spec.in_channels, meta.mean, meta.std).x
        H, W = x.shape[1:]
        t = tile - tile % spec.multiple
        top, left = max(0, (H - t) // 2), max(0, (W - t) // 2)
        x = x[:, top:top + t, left:left + t]
        h, w = x.shape[1:]
        pad = ((0, 0), (0, ceil_div(h, spec.multiple) * spec.multiple - h), (0, ceil_div(w, spec.multiple) * spec.multiple - w))
        out.append(np.ascontiguousarray(np.pad(x, pad, mode="edge")[None]))  # bottom/right edge padding, as segment
    return out


class MaskReport(NamedTuple):
    images: int
    pixels: int
    agreement: float  # share of pixels whose class is the same under both models
    miou_ref: float | None  # the float32 model's mIoU against the true masks (None: no masks)
    miou: float | None  # the reduced model's
    what: str

    @property
    def miou_change(self) -> float | None:
        return None if self.miou is None or self.miou_ref is None else self.miou - self.miou_ref

    def to_dict(self) -> dict:
        return {**self._asdict(), "miou_change": self.miou_change}


def compare_masks(ref: Callable, got: Callable, data: Images, spec: ModelSpec, meta: ModelMeta, *, tta: str | None = None,
                  num_classes: int | None = None, ignore: int = 255,
                  on_image: Callable[[], None] | None = None) -> MaskReport:
    """Both predictors (x (N, C, H, W) -> logits) over every image along segment's path; masks where known."""
    from cvtool.metrics import SegMetrics
    from cvtool.model.inference import segment_logits

    K = num_classes or spec.num_classes
    tta = meta.tta if tta is None else tta
    scores = [SegMetrics(K, ignore), SegMetrics(K, ignore)] if data.masks is not None else None
    same = total = 0
    for i, img in enumerate(data.images):
        pred = [segment_logits(run, img, spec, meta.mean, meta.std, scale=meta.scale, tta=tta).argmax(0)
                for run in (ref, got)]
        same += int((pred[0] == pred[1]).sum())
        total += pred[0].size
        if scores is not None:
            assert data.masks is not None  # scores are kept only where the data has masks
            for m, p in zip(scores, pred):
                m.update(p, data.masks[i])
        if on_image is not None:
            on_image()
    miou = [m.summary()["mean_iou"] for m in scores] if scores is not None else [None, None]
    return MaskReport(len(data.images), total, same / max(total, 1), miou[0], miou[1], data.what)


__all__ = ["Images", "MaskReport", "compare_masks", "net_inputs", "remembered", "folder", "spread",
           "CALIBRATION_IMAGES"]
