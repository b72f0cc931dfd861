"""The one validator: every validation image segmented whole, exactly as `cvtool segment` does (scale, tiles, TTA),
into one confusion matrix; and the cross-entropy of the same logits."""

from __future__ import annotations

from typing import Callable

import numpy as np

from cvtool.metrics import SegMetrics, confusion_matrix
from cvtool.model.spec import ModelSpec


def softmax_ce(logits: np.ndarray, y: np.ndarray, ignore: int = 255) -> float:
    """Mean cross-entropy over non-ignored pixels (validation loss; no weights)."""
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    keep = y != ignore
    if not keep.any():
        return float("nan")
    yk = np.where(keep, y, 0)
    picked = np.take_along_axis(logp, yk[:, None], axis=1)[:, 0]
    return float(-(picked[keep]).mean())


def evaluate_images(predict, images, masks, spec: ModelSpec, mean, std, scale: float, K: int, ignore: int,
                    tta: str = "none", should_stop: Callable[[], bool] | None = None,
                    per_image: list[np.ndarray] | None = None) -> dict | None:
    """Whole-image validation: one confusion matrix over every image, each segmented as `cvtool segment` would, and
    the mean cross-entropy over the labelled pixels of all images. None when should_stop() says yes between two
    images (Ctrl-C during a validation stops it there). per_image: a list that receives each image's (K, K) confusion
    (to score a subset of the images again without running them: cvtool.train.loop's replan)."""
    from cvtool.model.inference import segment_logits

    m = SegMetrics(K, ignore)
    ce_sum, ce_n = 0.0, 0
    for img, msk in zip(images, masks):
        if should_stop is not None and should_stop():
            return None
        lg = segment_logits(predict, img, spec, mean, std, scale=scale, tta=tta)  # (K, H, W) at the image's size
        cm = confusion_matrix(lg.argmax(0), msk, K, ignore)
        m.cm += cm
        if per_image is not None:
            per_image.append(cm)
        n = int((msk != ignore).sum())
        if n:
            ce_sum += softmax_ce(lg[None], msk[None].astype(np.int64), ignore) * n
            ce_n += n
    out = m.summary()
    out["loss"] = ce_sum / ce_n if ce_n else float("nan")
    out["absent"] = [k for k, v in enumerate(out["iou"]) if v is None]  # in neither truth nor prediction: not averaged
    out["confusion"] = m.cm.tolist()
    return out
