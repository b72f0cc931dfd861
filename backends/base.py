"""The one backend interface. Every command dispatches through it; three built-ins implement it.

Arrays cross the interface as NumPy, NCHW, float32 (float64 where a backend supports it, for
gradient checks). Shape maths is never done here: it lives in `cvtool.arithmetic`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from cvtool.optim import OptimConfig  # noqa: F401  (re-exported: part of the trainer contract)


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


# --- networks (a ModelSpec from cvtool.spec, parameters as dict[str, np.ndarray]) -------------

@runtime_checkable
class Runner(Protocol):
    """Inference: x (N, C, H, W) float32, normalised -> logits (N, K, H, W) float32."""

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class Trainer(Protocol):
    """One network being trained. Optimiser state is named `<slot>.<param>` (exp_avg, exp_avg_sq,
    momentum_buffer) on every backend, so checkpoints resume anywhere."""

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float: ...  # one update; the batch loss

    def predict(self, x: np.ndarray) -> np.ndarray: ...  # eval-mode logits

    def params(self) -> dict[str, np.ndarray]: ...  # parameters and BN buffers, float32 copies

    def optim_state(self) -> tuple[dict[str, np.ndarray], int]: ...  # (named slots, step count)

    def load_optim_state(self, state: dict[str, np.ndarray], step: int) -> None: ...

# A backend that can train also has:
#   trainer(spec, params, *, optim: OptimConfig, class_weights: np.ndarray | None, seed: int,
#           distributed: bool = False, dice: float = 0.0) -> Trainer
#   whose loss is the class-weighted cross-entropy (ignore label 255) + dice * soft Dice (numpy_ref/loss.py)
# and one that runs networks:
#   runner(spec, params) -> Runner


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
