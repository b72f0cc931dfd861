"""Checkpoints: safetensors files (never pickles) whose metadata carry everything else.

Tensors: the model's parameters by torch-style name, plus optimiser state under `optim.<slot>.<name>`.
Metadata (safetensors allows str -> str): one key "cvtool" holding JSON with the spec, class names
and colours, input normalisation, and training state (epoch, step, RNG state, config).
The NumPy backend reads these without torch. Written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvtool import __version__
from cvtool.errors import CvtoolError, DataError
from cvtool.fsutil import atomic_path
from cvtool.spec import ModelSpec, check_params

META_KEY = "cvtool"
FORMAT = "cvtool-checkpoint/1"
OPTIM_PREFIX = "optim."


@dataclass
class Checkpoint:
    spec: ModelSpec
    params: dict[str, np.ndarray]
    classes: list[str]
    colors: list[list[int]]
    norm_mean: list[float]
    norm_std: list[float]
    train_state: dict[str, Any] = field(default_factory=dict)  # epoch, step, rng, config, metrics
    optim_state: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None
    scale: float = 1.0  # inputs are resampled by this factor before the net (cvtool.inference.segment_logits)
    tta: str = "none"  # test-time augmentation segment applies: none | flip | dihedral

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "cvtool_version": __version__,
            "spec": self.spec.to_dict(),
            "classes": list(self.classes),
            "colors": [list(map(int, c)) for c in self.colors],
            "normalization": {"mean": list(map(float, self.norm_mean)), "std": list(map(float, self.norm_std))},
            "preprocess": {"scale": float(self.scale), "tta": self.tta},
            "train_state": self.train_state,
        }


def save(ckpt: Checkpoint, path: str | Path) -> Path:
    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(v) for k, v in ckpt.params.items()}
    for k, v in ckpt.optim_state.items():
        tensors[OPTIM_PREFIX + k] = np.ascontiguousarray(v)
    meta = {META_KEY: json.dumps(ckpt.meta(), default=_json_default)}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata alone (no tensors read)."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise DataError(f"{path} is not a readable safetensors checkpoint: {e}") from None
    if raw is None:
        raise DataError(f"{path} is a safetensors file but not a cvtool checkpoint (no '{META_KEY}' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise DataError(f"{path}: the checkpoint metadata is corrupt") from None
    if not isinstance(meta, dict) or not str(meta.get("format", "")).startswith(FORMAT.split("/")[0] + "/"):
        raise DataError(f"{path}: the checkpoint metadata is not in the {FORMAT} format")
    return meta


def load(path: str | Path) -> Checkpoint:
    from safetensors.numpy import load_file

    path = _existing(path)
    meta = read_meta(path)
    try:
        tensors = load_file(str(path))
    except Exception as e:
        raise DataError(f"{path} is not a readable safetensors checkpoint: {e}") from None
    params = {k: v for k, v in tensors.items() if not k.startswith(OPTIM_PREFIX)}
    optim = {k[len(OPTIM_PREFIX):]: v for k, v in tensors.items() if k.startswith(OPTIM_PREFIX)}
    try:  # a damaged or hand-edited header is the file's fault: DataError, never a KeyError
        spec = ModelSpec.from_dict(meta["spec"])
        check_params(spec, params)
        norm = meta.get("normalization", {})
        return Checkpoint(spec=spec, params=params, classes=list(meta["classes"]), colors=list(meta["colors"]),
                          norm_mean=norm.get("mean", [0.0] * spec.in_channels),
                          norm_std=norm.get("std", [1.0] * spec.in_channels),
                          train_state=meta.get("train_state", {}), optim_state=optim, path=path,
                          scale=input_scale(meta), tta=model_tta(meta))
    except CvtoolError as e:
        raise DataError(f"{path}: {e.message}") from None
    except (KeyError, TypeError, AttributeError) as e:
        raise DataError(f"{path}: the checkpoint metadata lacks or garbles {e}") from None


def input_scale(meta: dict) -> float:
    """The resampling factor a model's metadata asks for (1.0 for files written before it existed)."""
    s = float((meta.get("preprocess") or {}).get("scale", 1.0))
    if not 0 < s <= 16:
        raise DataError(f"the model's input scale {s} is not a resampling factor")
    return s


def model_tta(meta: dict) -> str:
    """The test-time augmentation a model's metadata asks for ("none" for files written before it existed)."""
    from cvtool.inference import TTA

    t = (meta.get("preprocess") or {}).get("tta", "none")
    if t not in TTA:
        raise DataError(f"the model asks for an unknown test-time augmentation {t!r}")
    return t


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a checkpoint file")
    return path
