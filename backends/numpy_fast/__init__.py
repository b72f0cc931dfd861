"""The pure-NumPy reference backend: hand-written forward AND backward for every layer.

Readable and exact, and on 2 cores about as fast as torch for conv2d; the oracle the other backends
are checked against, and a backend that trains (layers.py for the maths, optim.py for the update
rules). CPU only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, NoReturn

import numpy as np

from cvtool.errors import BackendUnavailable
from cvtool_backends.base import Capabilities, Status
from cvtool_backends.numpy_fast import layers

if TYPE_CHECKING:
    from cvtool_backends.numpy_fast.model import NumpyRunner, NumpyTrainer


class Backend:
    name: ClassVar[str] = "numpy"
    capabilities: ClassVar[Capabilities] = Capabilities(backward=True, train=True, float64=True,
                                                        extra={"cpu_only": True, "backward_by": "hand-written"})

    def __init__(self, device: str = "cpu"):
        if device not in ("cpu", "auto"):
            raise BackendUnavailable(f"backend 'numpy' runs on the CPU only, not {device!r}", hint="use --device cpu")
        self.device = "cpu"
        from cvtool.glibc_malloc import keep_freed_memory

        keep_freed_memory()  # the layers allocate and free MBs per block: without it every block page-faults (4x)

    @classmethod
    def status(cls) -> Status:
        from cvtool_backends.numpy_fast.parallel import blas_threads

        return Status(name=cls.name, available=True, version=np.__version__, devices=("cpu",),
                      threads=blas_threads())

    def conv2d(self, x, w, b=None, *, stride=1, padding=0, dilation=1, groups: int = 1) -> np.ndarray:
        return layers.conv2d_forward(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)[0]

    def conv_transpose2d(self, x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1,
                         groups: int = 1) -> np.ndarray:
        return layers.conv_transpose2d_forward(x, w, b, stride=stride, padding=padding, output_padding=output_padding,
                                               dilation=dilation, groups=groups)[0]

    def max_pool2d(self, x, *, kernel, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> np.ndarray:
        return layers.max_pool2d_forward(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                                         ceil_mode=ceil_mode)[0]

    def avg_pool2d(self, x, *, kernel, stride=None, padding=0, ceil_mode: bool = False,
                   count_include_pad: bool = True) -> np.ndarray:
        return layers.avg_pool2d_forward(x, kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                                         count_include_pad=count_include_pad)[0]

    def gradients(self, op: str, x, w=None, b=None, dy=None, **params) -> dict[str, np.ndarray]:
        """y, dL/dx (and dL/dw, dL/db) by the hand-written backward rules (backends.base.layer_gradients)."""
        from cvtool_backends.base import layer_gradients

        return layer_gradients(layers, op, x, w, b, dy, **params)

    def relu(self, x) -> np.ndarray:
        return layers.relu_forward(x)[0]

    def sigmoid(self, x) -> np.ndarray:
        return layers.sigmoid_forward(x)[0]

    def tanh(self, x) -> np.ndarray:
        return layers.tanh_forward(x)[0]

    # --- networks (backends/numpy_fast/model.py) ---------------------------------------------------

    def runner(self, spec, params, dtype=np.float32) -> NumpyRunner:
        from cvtool_backends.numpy_fast.model import NumpyRunner

        return NumpyRunner(spec, params, dtype=dtype)

    def trainer(self, spec, params, *, optim, class_weights=None, seed: int = 0, distributed: bool = False,
                dice: float = 0.0) -> NumpyTrainer:
        from cvtool_backends.numpy_fast.model import NumpyTrainer

        if distributed:
            self.init_distributed()
        return NumpyTrainer(spec, params, optim=optim, class_weights=class_weights, seed=seed, dice=dice)

    def set_threads(self, n: int) -> None:
        """Recorded only, for now: set OPENBLAS_NUM_THREADS before start to choose NumPy's BLAS threads."""
        self.threads = n

    def init_distributed(self) -> NoReturn:
        from cvtool.errors import UsageError

        raise UsageError("the numpy backend trains in one process",
                         hint="run it without torchrun, or use --backend torch for several processes")

    def finish_distributed(self) -> None:
        """Nothing to finish: init_distributed never succeeds."""


__all__ = ["Backend"]
