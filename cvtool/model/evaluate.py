"""Score a model on a labelled dataset: what `cvtool val` computes.

Every image is segmented exactly as `cvtool segment` and training's validation segment it
(cvtool.model.inference.segment_logits: the model's scale, tiles, test-time augmentation, logits brought back to
the image's pixels), and one confusion matrix is summed over all images, ignored pixels excluded, as training's
validation scores (cvtool.metrics). Each image also gets its own pixel accuracy and mean IoU, so the worst ones
can be shown. Pure NumPy: `predict` is any backend's runner (x (N, C, H, W) float32 -> logits (N, K, H, W));
the CLI resolves the backend.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, NamedTuple

import numpy as np

from cvtool.data.io import IGNORE, overlay, to_uint8_hwc
from cvtool.data.memory import to_hwc_uint8
from cvtool.errors import DataError
from cvtool.metrics import confusion_matrix, dice_per_class, iou_per_class, nan_mean, pixel_accuracy
from cvtool.model.inference import segment_logits


class Selection:
    """Items of one dataset's views (its train and val parts share classes and value map) seen as one dataset:
    what val scores. pairs: (view, index in that view)."""

    def __init__(self, pairs: list[tuple[Any, int]], first: Any):
        self.pairs, self.first = list(pairs), first
        self.classes, self.colors, self.in_channels = list(first.classes), list(first.colors), first.in_channels
        self.ignore_index = getattr(first, "ignore_index", IGNORE)
        self.colour_masks = bool(getattr(first, "colour_masks", False))
        self.value_mapping = getattr(first, "value_mapping", None)  # raw mask value -> class (folder datasets)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int):
        view, i = self.pairs[k]
        return view[i]

    def scan(self, k: int):
        view, i = self.pairs[k]
        return view.scan(i)

    def value_map(self, values: np.ndarray) -> np.ndarray:
        return self.first.value_map(values)


class Labelled(NamedTuple):
    data: Selection  # the images that have a mask: what is scored
    unlabelled: list[str]  # image files without a mask: listed and skipped


def labelled(views: list) -> Labelled:
    """Split the views' images into those with a mask and those without (Record.mask None); DataError when no
    image has one."""
    views = [v for v in views if len(v)]
    if not views:
        raise DataError("the dataset holds no images to score")
    found, missing = [], []
    for v in views:
        for i in range(len(v)):
            r = v.scan(i)
            if r.mask is None:
                missing.append(r.image)
            else:
                found.append((r.image, v, i))
    pairs = [(v, i) for _, v, i in sorted(found, key=lambda t: t[0])]  # by file, whichever split it came from
    missing.sort()
    if not pairs:
        raise DataError(f"none of the {len(missing)} images has a mask, so there is nothing to score against",
                        hint="val needs labelled images: each image a mask of the same name")
    return Labelled(Selection(pairs, views[0]), missing)


def _names(classes: list[str], limit: int = 6) -> str:
    return ", ".join(classes[:limit]) + (", ..." if len(classes) > limit else "")


def match_classes(ds: Selection, classes: list[str]) -> list[str]:
    """DataError (exit 2) when the masks' classes cannot be the model's `classes`; notes on what differs but still
    scores (class k of the masks is scored as the model's class k)."""
    K, Kd = len(classes), len(ds.classes)
    if Kd > K:
        raise DataError(f"the masks hold {Kd} classes ({_names(ds.classes)}) but the model predicts {K} "
                        f"({_names(classes)})",
                        hint="score the model on data labelled with its own classes (class k = mask value k)")
    mapping = ds.value_mapping or {}
    renumbered = {v: c for v, c in mapping.items() if c != IGNORE and v != c}
    binary = mapping == {0: 0, 255: 1}
    if renumbered and not binary and not ds.colour_masks and Kd != K:
        raise DataError(f"the mask values {', '.join(map(str, mapping))} were renumbered to classes 0..{Kd - 1} "
                        f"in ascending order, but the model has {K} classes, so which value is which class is "
                        f"ambiguous (a value missing from these masks shifts the others)",
                        hint="write masks that hold the class index (0..K-1), or score on data holding every class")
    if ds.classes != classes[:Kd]:
        return [f"class names differ: the data's {_names(ds.classes)}, the model's {_names(classes)}; "
                f"scored by index (mask class k as the model's class k)"]
    return []


class ImageScore(NamedTuple):
    item: int  # its position in the Selection
    name: str
    pixels: int  # labelled pixels (ignored ones excluded)
    pixel_accuracy: float
    mean_iou: float  # over the classes in this image's mask or prediction; NaN when every pixel is ignored


class Worst(NamedTuple):
    score: ImageScore
    pred: np.ndarray  # (H, W) class indices at the image's pixels


class Evaluation(NamedTuple):
    cm: np.ndarray  # (K, K) int64, cm[t, p]: pixels of true class t predicted as p, over every image
    images: list[ImageScore]
    worst: list[Worst]  # lowest mean IoU first (ties: the earlier image)


def evaluate(predict: Callable[[np.ndarray], np.ndarray], ds, spec, meta, *, tta: str, tile: int | None = None,
             batch_size: int = 4, worst: int = 0,
             on_image: Callable[[ImageScore, np.ndarray], None] | None = None) -> Evaluation:
    """Segment every image of ds as `cvtool segment` does and score it against its mask.
    meta: the model's ModelMeta (normalisation, scale); tta overrides meta.tta; worst: how many of the lowest
    per-image mean IoUs keep their prediction; on_image(score, confusion matrix so far) after each image."""
    K = spec.num_classes
    total = np.zeros((K, K), np.int64)
    scores: list[ImageScore] = []
    kept: list = []  # heap of (-mIoU, -index, pred): the `worst` lowest so far, the highest of them on top
    for k in range(len(ds)):
        s = ds[k]
        logits = segment_logits(predict, to_hwc_uint8(s.image), spec, meta.mean, meta.std, scale=meta.scale,
                                tta=tta, tile=tile, batch_size=batch_size, name=s.name)
        pred = logits.argmax(0).astype(np.uint8 if K <= 256 else np.int32)
        del logits
        cm = confusion_matrix(pred, s.mask, K, ds.ignore_index)
        total += cm
        sc = ImageScore(k, s.name, int(cm.sum()), pixel_accuracy(cm), nan_mean(iou_per_class(cm)))
        scores.append(sc)
        if worst > 0 and np.isfinite(sc.mean_iou):
            item = (-sc.mean_iou, -k, pred)  # indices are distinct: the arrays are never compared
            if len(kept) < worst:
                heapq.heappush(kept, item)
            elif item > kept[0]:
                heapq.heapreplace(kept, item)
        if on_image is not None:
            on_image(sc, total)
    ordered = sorted(kept, key=lambda t: (-t[0], -t[1]))
    return Evaluation(total, scores, [Worst(scores[-neg_k], pred) for _, neg_k, pred in ordered])


def finite(v: float | None) -> float | None:
    """NaN -> None: JSON has no NaN."""
    return None if v is None or not np.isfinite(v) else float(v)


def summary(cm: np.ndarray, classes: list[str]) -> dict:
    """The figures of one confusion matrix: pixel accuracy, per-class IoU and Dice with their means over the
    classes that occur (a class in neither the masks nor the predictions is named in "absent" and left out)."""
    iou, dice = iou_per_class(cm), dice_per_class(cm)
    truth, predicted = cm.sum(1), cm.sum(0)
    return {"pixel_accuracy": finite(pixel_accuracy(cm)), "mean_iou": finite(nan_mean(iou)),
            "mean_dice": finite(nan_mean(dice)),
            "classes": [{"index": k, "name": c, "iou": finite(iou[k]), "dice": finite(dice[k]), "pixels": int(truth[k]),
                         "predicted": int(predicted[k])} for k, c in enumerate(classes)],
            "absent": [c for k, c in enumerate(classes) if np.isnan(iou[k])],
            "confusion": cm.tolist()}


def worst_panel(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, colors, alpha: float = 0.5,
                gap: int = 4) -> np.ndarray:
    """uint8 (H, 3W + 2 gap, 3): the image with the true mask | with the prediction | the errors (red where the
    prediction is wrong, grey where the mask says ignore, the image dimmed elsewhere)."""
    rgb = to_uint8_hwc(image)
    wrong = (pred != truth) & (truth != IGNORE)
    errors = (rgb.astype(np.float32) * 0.4).round().astype(np.uint8)
    errors[truth == IGNORE] = (128, 128, 128)
    errors[wrong] = (255, 0, 0)
    sep = np.full((rgb.shape[0], gap, 3), 255, np.uint8)
    return np.concatenate([overlay(rgb, truth, colors, alpha), sep, overlay(rgb, pred, colors, alpha), sep, errors],
                          axis=1)


__all__ = ["Selection", "Labelled", "labelled", "match_classes", "ImageScore", "Worst", "Evaluation", "evaluate",
           "summary", "worst_panel", "finite"]
