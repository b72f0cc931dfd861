"""What a trained network needs to label images besides its graph and weights: class names and colours, the
input normalisation and the preprocessing. One record, written into and read from a checkpoint's metadata and
an ONNX export's alike (the same JSON keys: classes, colors, normalization, preprocess)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
        """From a file's metadata, validated when the file was opened (cvtool.model.schema). Files written before
        normalisation or preprocessing were stored get the identity."""
        norm = meta.get("normalization") or {}
        pre = meta.get("preprocess") or {}
        return cls(classes=list(meta["classes"]), colors=[list(c) for c in meta["colors"]],
                   mean=list(norm.get("mean", [0.0] * in_channels)), std=list(norm.get("std", [1.0] * in_channels)),
                   scale=float(pre.get("scale", 1.0)), tta=pre.get("tta", "none"))
