"""What a trained network needs to label images besides its graph and weights: class names and colours, the
input normalisation and the preprocessing. One record, written into and read from a checkpoint's metadata and
an ONNX export's alike (the same JSON keys: classes, colors, normalization, preprocess)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cvtool.errors import DataError


@dataclass(frozen=True)
class ModelMeta:
    classes: list[str]
    colors: list[list[int]]  # RGB per class, for masks and overlays
    mean: list[float]  # per input channel: the net sees (image/255 - mean) / std
    std: list[float]
    scale: float = 1.0  # inputs are resampled by this factor before the net (cvtool.model.inference.segment_logits)
    tta: str = "none"  # test-time augmentation segment applies: none | flip | dihedral

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "colors": [list(map(int, c)) for c in self.colors],
                "normalization": {"mean": list(map(float, self.mean)), "std": list(map(float, self.std))},
                "preprocess": {"scale": float(self.scale), "tta": self.tta}}

    @classmethod
    def from_dict(cls, meta: dict[str, Any], in_channels: int) -> ModelMeta:
        """From a file's metadata. Files written before normalisation or preprocessing were stored get the
        identity; a missing `classes` or `colors` raises KeyError (the caller names the file)."""
        norm = meta.get("normalization", {})
        return cls(classes=list(meta["classes"]), colors=[list(c) for c in meta["colors"]],
                   mean=list(norm.get("mean", [0.0] * in_channels)), std=list(norm.get("std", [1.0] * in_channels)),
                   scale=input_scale(meta), tta=model_tta(meta))


def input_scale(meta: dict) -> float:
    """The resampling factor a model's metadata asks for (1.0 for files written before it existed)."""
    s = float((meta.get("preprocess") or {}).get("scale", 1.0))
    if not 0 < s <= 16:
        raise DataError(f"the model's input scale {s} is not a resampling factor")
    return s


def model_tta(meta: dict) -> str:
    """The test-time augmentation a model's metadata asks for ("none" for files written before it existed)."""
    from cvtool.model.inference import TTA

    t = (meta.get("preprocess") or {}).get("tta", "none")
    if t not in TTA:
        raise DataError(f"the model asks for an unknown test-time augmentation {t!r}")
    return t
