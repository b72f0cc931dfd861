"""Backend registry: a name -> a class, imported lazily so that nothing heavy loads at start-up.

Built-ins are listed here; third-party packages add backends through the entry-point group
`cvtool.backends` (name = "package.module:Class"). Only the CLI resolves names.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from cvtool.errors import BackendUnavailable, UsageError

if TYPE_CHECKING:
    from cvtool_backends.base import Backend, Status
    from cvtool_backends.numpy_fast import Backend as NumpyFast

BUILTIN: dict[str, str] = {
    "numpy": "cvtool_backends.numpy_fast:Backend",
    "torch": "cvtool_backends.torch_backend:Backend",
    "ort": "cvtool_backends.ort_backend:Backend",
    "naive": "cvtool_backends.numpy_loops:Backend",  # the lecture's loops: operations only, small sizes
}
REFERENCE = "numpy"  # the float64 oracle every other backend is checked against (bench, export, convcalc --verify)
ENTRY_POINT_GROUP = "cvtool.backends"
DEVICES = ("auto", "cpu", "cuda")


def _plugins() -> dict[str, object]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in BUILTIN}


def names() -> list[str]:
    """Every known backend name: the built-ins first, then plug-ins."""
    return list(BUILTIN) + sorted(_plugins())


def backend_class(name: str) -> type[Backend]:
    """The backend class for `name`, imported now. Unknown name -> UsageError."""
    if name in BUILTIN:
        module, _, attr = BUILTIN[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    plugins = _plugins()
    if name in plugins:
        return plugins[name].load()  # type: ignore[attr-defined]
    raise UsageError(f"unknown backend {name!r}", hint=f"choose one of: {', '.join(names())}")


def status(name: str) -> Status:
    """Status of a backend, also for one whose framework is missing (available=False, reason)."""
    from cvtool_backends.base import Status

    try:
        cls = backend_class(name)
    except ImportError as e:
        return Status(name=name, available=False, reason=f"cannot import: {e}")
    return cls.status()


def resolve_device(name: str, device: str, devices) -> str:
    """The one place 'auto' becomes a device: cuda where this backend can use one, else cpu."""
    from cvtool_backends.base import require_device

    if device not in DEVICES:
        raise UsageError(f"unknown device {device!r}", hint="use auto, cpu or cuda")
    if device == "auto":
        return "cuda" if "cuda" in devices else "cpu"
    return require_device(name, device, devices)


def get(name: str, device: str = "auto") -> Backend:
    """An instance of backend `name` on `device`; a clear error when it cannot run here."""
    st = status(name)
    if not st.available:
        raise BackendUnavailable(f"backend {name!r} is not available: {st.reason}")
    cls = backend_class(name)
    return cls(device=resolve_device(name, device, st.devices))


def reference() -> NumpyFast:
    """The float64 oracle (REFERENCE) on the CPU, typed as its own class: its runner also takes a dtype, which the
    contract's Runs.runner does not."""
    from cvtool_backends.numpy_fast import Backend as NumpyFast

    be = get(REFERENCE, "cpu")
    assert isinstance(be, NumpyFast)
    return be


def parse_list(spec: str) -> list[str]:
    """'all' -> every known name; 'numpy,torch' -> those (validated)."""
    if spec.strip().lower() == "all":
        return names()
    out = [s.strip() for s in spec.split(",") if s.strip()]
    known = names()
    for n in out:
        if n not in known:
            raise UsageError(f"unknown backend {n!r}", hint=f"choose from: {', '.join(known)}, or all")
    return out
