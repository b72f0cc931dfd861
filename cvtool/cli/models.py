"""Finding and opening trained models for the commands (segment, export, bench, convcalc --model)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from cvtool.errors import CvtoolError, DataError, UsageError
from cvtool.model.meta import ModelMeta
from cvtool.model.schema import validate_meta
from cvtool.model.spec import ModelSpec

if TYPE_CHECKING:
    from cvtool_backends.base import Backend, Runner

RUNS = Path("runs") / "train"


@dataclass
class Model:
    """A checkpoint or an export, opened alike: its ModelMeta is read from either file's metadata."""

    spec: ModelSpec
    params: dict[str, np.ndarray]
    meta: ModelMeta
    path: Path
    kind: str  # "checkpoint" | "onnx"
    precision: str = "fp32"  # an export's: fp32 | fp16 | int8 (cvtool.model.precision)
    data: object = None  # a checkpoint's training data (cvtool.model.checkpoint.DataSource), if it remembers it


def latest_checkpoint(root: Path = RUNS) -> Path:
    """best.safetensors of the latest run: the highest-numbered runs/train/expN that has one, or the demo's
    runs/demo/expN/train when that one is newer (so the model a `make demo` just trained is found right after it)."""
    found = []
    for folder, pattern in ((root, "exp*/best.safetensors"), (root.parent / "demo", "exp*/train/best.safetensors")):
        runs = []
        for p in folder.glob(pattern) if folder.is_dir() else []:
            m = re.fullmatch(r"exp(\d+)", p.relative_to(folder).parts[0])
            if m and p.is_file():
                runs.append((int(m.group(1)), p))
        if runs:
            p = max(runs)[1]  # the numbers are the order the runs were started in
            found.append((p.stat().st_mtime, p))
    if not found:
        raise UsageError(f"no trained model found under {root}/ or {root.parent / 'demo'}/",
                         hint="train one with 'cvtool train', or pass --model")
    return max(found)[1]


def open_model(path: Path | None) -> Model:
    """A .safetensors checkpoint or a cvtool .onnx export; None: the latest training run's best."""
    from cvtool.model import checkpoint as ckpt_io

    path = Path(path) if path is not None else latest_checkpoint()
    if not path.exists():
        raise DataError(f"model {path} does not exist")
    if path.suffix.lower() == ".onnx":
        spec, params, meta, precision = _onnx_model(path)
        return Model(spec, params, meta, path, "onnx", precision)
    ck = ckpt_io.load(path)
    return Model(ck.spec, ck.params, ck.meta, path, "checkpoint", data=ck.data)


NOT_OURS_HINT = "export a checkpoint with 'cvtool export CHECKPOINT -o model.onnx', or pass the .safetensors checkpoint"


def _onnx_model(path: Path) -> tuple[ModelSpec, dict[str, np.ndarray], ModelMeta, str]:
    import json

    import onnx

    from cvtool_backends.onnx_format.export import META_KEY, precision, to_params

    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf's DecodeError and friends for corrupt files
        raise DataError(f"{path} is not a readable ONNX file ({type(e).__name__})") from None
    raw = {p.key: p.value for p in model.metadata_props}.get(META_KEY)
    if raw is None:  # any other ONNX model: segment needs the net's spec, classes and normalisation
        raise DataError(f"{path} is an ONNX model but not a cvtool model: it has no '{META_KEY}' metadata (the net's "
                        f"spec, classes, colours and input normalisation)", hint=NOT_OURS_HINT)
    try:
        meta = json.loads(raw)
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
        what = "is not a JSON object" if not isinstance(meta, dict) else "has no 'spec' (the network's layout)"
        raise DataError(f"{path} is not a cvtool model: its '{META_KEY}' metadata {what}", hint=NOT_OURS_HINT)
    validate_meta(meta, str(path))  # once, here, as a checkpoint's in cvtool.model.checkpoint.read_meta
    try:
        spec, params, meta = to_params(model)
        return spec, params, ModelMeta.from_dict(meta, spec.in_channels), precision(meta)
    except (ValueError, KeyError, TypeError) as e:  # garbled metadata
        raise DataError(f"{path} is not a cvtool model: its '{META_KEY}' metadata lacks or garbles {e}",
                        hint=NOT_OURS_HINT) from None
    except CvtoolError as e:  # weights that do not fit the spec in its metadata
        raise DataError(f"{path}: {e.message}") from None


def onnx_meta(model: Model) -> dict:
    """What an exported file carries in metadata_props besides the spec: enough to run it alone."""
    from cvtool import __version__
    from cvtool_backends.onnx_format.export import INPUT, OUTPUT

    src = file_digest(model.path) if model.kind == "checkpoint" else None
    return {**model.meta.to_dict(), "cvtool_version": __version__, "source_sha256": src, "input": INPUT,
            "output": OUTPUT}


def build_onnx(model: Model, opset: int, half: bool = False):
    """The model as an onnx.ModelProto (weights inside) with its metadata."""
    from cvtool_backends.onnx_format.export import build_model

    return build_model(model.spec, model.params, onnx_meta(model), opset=opset, half=half)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Network(Protocol):
    """What runner_for needs of a model: a Model, or bench's network (spec, params, and an .onnx path or none)."""

    @property
    def spec(self) -> ModelSpec: ...
    @property
    def params(self) -> dict[str, np.ndarray]: ...
    @property
    def path(self) -> Path: ...
    @property
    def kind(self) -> str: ...  # "checkpoint" | "onnx"


def runner_for(be: Backend, model: Network) -> Runner:
    """The one way from a backend and a model to a Runner (segment, export's checks, bench, val): an .onnx export runs
    as its file on a backend that runs ONNX files; anything else through the backend's runner(spec, params) (the ort
    backend exports a checkpoint itself, cached). A backend that runs no networks: one UsageError."""
    from cvtool_backends.base import Runs, hook

    load_onnx = hook(be, "load_onnx")
    if model.kind == "onnx" and load_onnx is not None:
        return load_onnx(model.path)
    if getattr(model, "precision", "fp32") == "int8":  # int8 weights, BatchNorm folded: not the spec's parameters
        raise UsageError(f"{model.path} is an int8 export: only a backend that runs ONNX files runs it",
                         hint=f"use --backend ort, or the float32 checkpoint with --backend {be.name}")
    if isinstance(be, Runs) and be.capabilities.extra.get("networks", True):
        return be.runner(model.spec, model.params)
    raise UsageError(f"backend {be.name!r} runs no networks", hint="use --backend torch, numpy or ort")
