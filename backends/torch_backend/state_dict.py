"""Reading a torch state dict file (.pth, .pt) as NumPy arrays, without unpickling anything but tensors.

torch.load(weights_only=True) refuses every object that is not a tensor, a container or a plain value, so a file
cannot run code on load. Kept here: torch is imported by this backend only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cvtool.errors import DataError


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """name -> array of a state dict file; a {"state_dict": {...}} wrapper (a training checkpoint) is opened."""
    path = Path(path)
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises pickle, zip and runtime errors alike
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{path} is not a readable torch state dict: {first}",
                        hint="pass a .pth saved with torch.save(model.state_dict()), or a .safetensors") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
        raise DataError(f"{path} holds no state dict (a mapping of names to tensors)")
    return {k: v.detach().cpu().numpy() for k, v in sd.items()}


__all__ = ["read_state_dict"]
