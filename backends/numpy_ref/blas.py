"""How many threads NumPy's BLAS uses, asked of the library itself (cheap; None when unknown)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

_GETTERS = ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads", "openblas_get_num_threads64_",
            "openblas_get_num_threads")


def blas_threads() -> int | None:
    """OpenBLAS as bundled in NumPy's wheels (numpy.libs/); other builds -> None."""
    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(libs.glob("*openblas*")):
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        for name in _GETTERS:
            getter = getattr(lib, name, None)
            if getter is not None:
                return int(getter())
    return None
