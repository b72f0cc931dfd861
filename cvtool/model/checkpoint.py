"""Checkpoints: safetensors files (never pickles) whose metadata carry everything else.

Tensors: the model's parameters by torch-style name, plus optimiser state under `optim.<slot>.<name>`.
Metadata (safetensors allows str -> str): one key "cvtool" holding JSON with the spec, the ModelMeta
(class names and colours, input normalisation, preprocessing: cvtool/model/meta.py) and training state
(epoch, step, RNG state, config), and the data it was trained on ("data": DataSource, its folder made absolute
when saved, so that `cvtool export --precision int8` finds the training images from anywhere).
The NumPy backend reads these without torch. Written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from cvtool import __version__
from cvtool.errors import CvtoolError, DataError
from cvtool.fsutil import atomic_path, write_error
from cvtool.model.meta import ModelMeta
from cvtool.model.schema import validate_meta
from cvtool.model.spec import ModelSpec, check_params

META_KEY = "cvtool"
FORMAT = "cvtool-checkpoint/1"
OPTIM_PREFIX = "optim."


class DataSource(NamedTuple):
    """The data a checkpoint was trained on, enough to open its split again (cvtool.data.open_datasets)."""

    root: str | None  # absolute folder; None: the built-in synthetic shapes
    val_split: float
    seed: int
    synth_size: int = 128
    synth_n: tuple[int, int] = (2400, 64)  # synthetic: (train, val) images

    @classmethod
    def from_train_state(cls, state: dict[str, Any], *, base: Path | None = None) -> DataSource | None:
        """From the training config a checkpoint stores (every checkpoint since the first one); a relative folder is
        taken from `base` (the current directory: where the training ran, for a checkpoint saved just now)."""
        cfg = state.get("config") if isinstance(state, dict) else None
        if not isinstance(cfg, dict) or "val_split" not in cfg:
            return None
        root = cfg.get("data")
        if root in (None, "synth"):
            root = None
        else:
            root = str((base or Path.cwd()) / root) if not Path(root).is_absolute() else str(root)
        return cls(root, float(cfg["val_split"]), int(cfg.get("seed", 0)), int(cfg.get("synth_size", 128)),
                   (int(cfg.get("synth_train", 2400)), int(cfg.get("synth_val", 64))))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSource:
        return cls(d.get("root"), float(d["val_split"]), int(d["seed"]), int(d.get("synth_size", 128)),
                   _pair(d.get("synth_n", (2400, 64))))


@dataclass
class Checkpoint:
    spec: ModelSpec
    params: dict[str, np.ndarray]
    meta: ModelMeta  # classes, colours, normalisation, preprocessing: the same record an ONNX export carries
    train_state: dict[str, Any] = field(default_factory=dict)  # epoch, step, rng, config, metrics
    optim_state: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None
    data: DataSource | None = None  # None on save: from train_state's config, if it has one

    def header(self) -> dict[str, Any]:
        """The file's metadata (JSON under META_KEY)."""
        data = self.data or DataSource.from_train_state(self.train_state)
        return {"format": FORMAT, "cvtool_version": __version__, "spec": self.spec.to_dict(), **self.meta.to_dict(),
                "train_state": self.train_state, **({"data": data._asdict()} if data else {})}


def save(ckpt: Checkpoint, path: str | Path) -> Path:
    from safetensors import SafetensorError
    from safetensors.numpy import save_file

    tensors = {k: np.ascontiguousarray(v) for k, v in ckpt.params.items()}
    for k, v in ckpt.optim_state.items():
        tensors[OPTIM_PREFIX + k] = np.ascontiguousarray(v)
    meta = {META_KEY: json.dumps(ckpt.header(), default=_json_default)}
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=meta)
        except SafetensorError as e:  # its own type for a full disk ("No space left on device"): not an OSError
            raise write_error(path, e) from None
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
    return validate_meta(meta, str(path))  # once, here: every reader of a checkpoint comes through


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
        state = meta.get("train_state", {})
        data = DataSource.from_dict(meta["data"]) if "data" in meta else DataSource.from_train_state(state)
        return Checkpoint(spec=spec, params=params, meta=ModelMeta.from_dict(meta, spec.in_channels),
                          train_state=state, optim_state=optim, path=path, data=data)
    except CvtoolError as e:
        raise DataError(f"{path}: {e.message}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise DataError(f"{path}: the checkpoint metadata lacks or garbles {e}") from None


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a checkpoint file")
    return path


def _pair(v) -> tuple[int, int]:
    """(train, val) synthetic image counts from a checkpoint's JSON list."""
    a, b = v
    return int(a), int(b)
