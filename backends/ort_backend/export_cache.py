"""The ort backend's own export of a network: built once per (spec, weights, opset, cvtool version) and kept in
runs/.cache/onnx/ (relative to the working folder, as the fingerprint cache is), because building a large net's
graph costs about as much as creating its session (docs/benchmarks.md). Nowhere writable: the export stays in memory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

CACHE = Path("runs") / ".cache" / "onnx"
KEEP = 8  # newest exports kept; older ones are removed when a new one is written


def key(spec, params: dict[str, np.ndarray], opset: int) -> str:
    from cvtool import __version__

    h = hashlib.sha256(json.dumps({"spec": spec.to_dict(), "opset": opset, "cvtool": __version__},
                                  sort_keys=True).encode())
    for name in sorted(params):
        h.update(name.encode())
        h.update(np.ascontiguousarray(params[name], np.float32).tobytes())
    return h.hexdigest()[:32]


def cached_export(spec, params: dict[str, np.ndarray], opset: int, cache: Path | None = None,
                  rebuild: bool = False) -> tuple[Path | bytes, str]:
    """(the export's path, or its bytes where nothing could be written; what happened: reusing | exported ...).
    rebuild: export again even where a file is cached (one that ONNX Runtime could not load)."""
    from cvtool.errors import CvtoolError
    from cvtool.fsutil import atomic_write_bytes
    from cvtool_backends.onnx_format.export import build_model

    cache = CACHE if cache is None else cache
    path = cache / f"{key(spec, params, opset)}.onnx"
    if path.is_file() and not rebuild:
        return path, "reusing"
    data = build_model(spec, params, {}, opset=opset).SerializeToString()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
    except (CvtoolError, OSError) as e:
        return data, f"exported in memory ({getattr(e, 'message', e)})"
    old = sorted(cache.glob("*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)[KEEP:]
    for p in old:
        p.unlink(missing_ok=True)
    return path, "exported"
