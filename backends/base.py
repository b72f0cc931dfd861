"""The one backend interface. Every command dispatches through it; four built-ins implement it.

Declared as Protocols, nothing else: `Backend` (the operations, required of all), `Runner` and `Trainer` (what
a backend's networks answer to), the abilities `Runs`, `Trains` and `Gradients` (present exactly when the
backend can), and the optional hooks in HOOKS, each a Protocol of its own, reached through `hook(obj, name)`.
tests/test_contract.py checks every built-in (and a plug-in) against these signatures.

Arrays cross the interface as NumPy, NCHW, float32 (float64 where a backend supports it, for
gradient checks). Shape maths is never done here: it lives in `cvtool.arithmetic`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

import numpy as np

from cvtool.errors import BackendUnavailable, CvtoolError
from cvtool.train.optim import OptimConfig  # re-exported: part of the trainer contract
from cvtool.train.ranks import MaxOverRanks, SyncBuffers  # the trainers' hooks


@dataclass(frozen=True)
class Status:
    """What a backend can really do on this machine (not what its wheel was built with)."""

    name: str
    available: bool
    reason: str | None = None  # why not available
    version: str | None = None
    devices: tuple[str, ...] = ()  # 'cpu', and 'cuda' only when a GPU is actually usable
    providers: tuple[str, ...] = ()  # ORT execution providers a session really uses
    threads: int | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("devices", "providers", "notes"):
            d[k] = list(d[k])
        return d


@dataclass(frozen=True)
class Capabilities:
    ops: bool = True  # the layer operations below
    backward: bool = False  # hand-written or autograd dL/dx for the operations
    train: bool = False  # can train a network
    float64: bool = False  # accepts float64 arrays
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Backend(Protocol):
    """Operations on NCHW arrays. `padding` accepts every form of `cvtool.arithmetic.resolve_padding`."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    device: str

    def __init__(self, device: str = "cpu") -> None: ...  # how the registry builds one (not checked by isinstance)

    @classmethod
    def status(cls) -> Status: ...

    def conv2d(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *,
               stride=1, padding=0, dilation=1, groups: int = 1) -> np.ndarray: ...

    def conv_transpose2d(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *,
                         stride=1, padding=0, output_padding=0, dilation=1, groups: int = 1) -> np.ndarray: ...

    def max_pool2d(self, x: np.ndarray, *, kernel, stride=None, padding=0, dilation=1,
                   ceil_mode: bool = False) -> np.ndarray: ...

    def avg_pool2d(self, x: np.ndarray, *, kernel, stride=None, padding=0, ceil_mode: bool = False,
                   count_include_pad: bool = True) -> np.ndarray: ...

    def relu(self, x: np.ndarray) -> np.ndarray: ...

    def sigmoid(self, x: np.ndarray) -> np.ndarray: ...

    def tanh(self, x: np.ndarray) -> np.ndarray: ...


OPS = ("conv2d", "conv_transpose2d", "max_pool2d", "avg_pool2d", "relu", "sigmoid", "tanh")


# --- networks (a ModelSpec from cvtool.model.spec, parameters as dict[str, np.ndarray]) -------------

@runtime_checkable
class Runner(Protocol):
    """Inference: x (N, C, H, W) float32, normalised -> logits (N, K, H, W) float32."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class RunnerInfo(Protocol):
    """Optional on a Runner: what it really runs with (an ORT session's providers and threads; bench shows them)."""

    providers: list[str]
    threads: int


@runtime_checkable
class Trainer(Protocol):
    """One network being trained. Optimiser state is named `<slot>.<param>` (exp_avg, exp_avg_sq,
    momentum_buffer) on every backend, so checkpoints resume anywhere."""

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float: ...  # one update; the batch loss

    def predict(self, x: np.ndarray) -> np.ndarray: ...  # eval-mode logits

    def params(self) -> dict[str, np.ndarray]: ...  # parameters and BN buffers, float32 copies

    def optim_state(self) -> tuple[dict[str, np.ndarray], int]: ...  # (named slots, step count)

    def load_optim_state(self, state: dict[str, np.ndarray], step: int) -> None: ...


# --- what a backend does beyond the operations ------------------------------------------------
# Three abilities, each a method set a backend has exactly when it can (tests/test_contract.py checks):

@runtime_checkable
class Runs(Protocol):
    """Runs networks. One that cannot may say so with capabilities.extra["networks"] = False (bench then skips it)."""

    def runner(self, spec, params) -> Runner: ...


@runtime_checkable
class Trains(Protocol):
    """Trains networks: exactly the backends with capabilities.train. The loss is the class-weighted
    cross-entropy (ignore label 255) + dice * soft Dice (numpy_fast/loss.py)."""

    def trainer(self, spec, params, *, optim: OptimConfig, class_weights: np.ndarray | None, seed: int,
                distributed: bool = False, dice: float = 0.0) -> Trainer: ...

    def init_distributed(self) -> tuple[int, int]: ...  # (rank, world) under torchrun; UsageError where it cannot

    def finish_distributed(self) -> None: ...


@runtime_checkable
class Gradients(Protocol):
    """dL/dx (dL/dw, dL/db) of one layer, L = sum(y * dy): exactly the backends with capabilities.backward
    (convcalc --backward). op: conv2d, conv_transpose2d, max_pool2d, avg_pool2d, relu, sigmoid, tanh."""

    def gradients(self, op: str, x: np.ndarray, w: np.ndarray | None = None, b: np.ndarray | None = None,
                  dy: np.ndarray | None = None, **params) -> dict[str, np.ndarray]: ...


# --- optional hooks: used where present, never required; one Protocol each ----------------------

@runtime_checkable
class Gemm(Protocol):
    def gemm(self, n: int) -> Callable[[], object]: ...  # one float32 (n x n) @ (n x n) on our device, done on return


@runtime_checkable
class PeakMemory(Protocol):
    def peak_memory(self, fn: Callable[[], Any]) -> tuple[Any, int | None]: ...  # (fn(), peak device bytes during fn)


@runtime_checkable
class SetThreads(Protocol):
    def set_threads(self, n: int) -> None: ...  # CPU threads for what the backend runs next


@runtime_checkable
class LoadOnnx(Protocol):
    def load_onnx(self, path: str | Path | bytes) -> Runner: ...  # a cvtool export (backends.onnx_format) as a Runner


@runtime_checkable
class FreeMemory(Protocol):
    def free_memory(self) -> int | None: ...  # bytes free on our device (a GPU's); None: the host's memory is ours


@runtime_checkable
class PrecisionRunner(Protocol):
    def precision_runner(self, spec, params, precision: str, calibration: list | None = None) -> Runner: ...
    # a Runner computing in `precision` (cvtool.model.precision: fp32, fp16, int8, bf16; float32 in and out);
    # calibration: (1, C, H, W) inputs for int8; BackendUnavailable (one line, the reason) where it cannot here


# on trainers: MaxOverRanks, SyncBuffers (cvtool.train.ranks, imported above)
HOOKS: dict[str, type] = {"gemm": Gemm, "peak_memory": PeakMemory, "set_threads": SetThreads, "load_onnx": LoadOnnx,
                          "free_memory": FreeMemory, "precision_runner": PrecisionRunner,
                          "max_over_ranks": MaxOverRanks, "sync_buffers": SyncBuffers}


def require_device(name: str, device: str, devices) -> str:
    """`device` itself where the backend can use it here; else one clear error. A backend's __init__ checks its
    (already resolved) device with this; only the registry resolves 'auto' (cvtool_backends.resolve_device)."""
    if device in devices:
        return device
    if device == "cuda":
        raise BackendUnavailable(f"backend {name!r} cannot use CUDA on this machine: no usable CUDA GPU",
                                 hint="use --device cpu (or auto)")
    raise BackendUnavailable(f"backend {name!r} cannot use device {device!r} here",
                             hint="build backends through cvtool_backends.get(name, device), which resolves 'auto'")


def hook(obj, name: str) -> Callable | None:
    """obj's optional hook `name`, bound, or None where obj has none. Only names in HOOKS: a misspelt hook is an
    error here, not a silent None that switches a feature off."""
    if name not in HOOKS:
        raise CvtoolError(f"{name!r} is not an optional hook of the backend contract",
                          hint=f"declared hooks: {', '.join(HOOKS)} (backends/base.py)")
    return getattr(obj, name) if isinstance(obj, HOOKS[name]) else None


def layer_gradients(lib, op: str, x, w=None, b=None, dy=None, **params) -> dict[str, np.ndarray]:
    """y and dL/dx, dL/dw, dL/db (L = sum(y * dy)) of one layer from a module of CS231n-style pairs
    (`<op>_forward(...) -> (y, cache)`, `<op>_backward(dy, cache)`): what a backend with hand-written backward
    rules answers to `gradients` (convcalc --backward). op: conv2d, conv_transpose2d, max_pool2d, avg_pool2d,
    relu, sigmoid, tanh."""
    fwd, bwd = getattr(lib, f"{op}_forward"), getattr(lib, f"{op}_backward")
    if op in ("conv2d", "conv_transpose2d"):
        y, cache = fwd(x, w, b, **params)
        dx, dw, db = bwd(dy, cache)
        out = {"y": y, "dx": dx, "dw": dw}
        if b is not None:
            out["db"] = db
        return out
    y, cache = fwd(x, **params)
    return {"y": y, "dx": bwd(dy, cache)}
