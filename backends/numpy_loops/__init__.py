"""`naive`: the lecture's loops, a second pure-NumPy backend a student can step through.

Every layer is its formula, one output (or one input pixel) at a time: conv.py (convolution; transposed
convolution as stamps), pool.py, layers.py (activations, BatchNorm, softmax cross-entropy), each with its
backward. Operations only (no networks): it is the oracle the fast `numpy` backend is tested against on small
shapes, and it shows the plug-in interface works for a second implementation. It never imports `numpy_fast`.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from cvtool.errors import BackendUnavailable
from cvtool_backends.base import Capabilities, Status
from cvtool_backends.numpy_loops import conv, layers, pool

MAX_OUTPUTS = 1 << 22  # loops over outputs: beyond this many a call takes minutes; refuse instead


def _check_size(*shape: int) -> None:
    n = int(np.prod(shape))
    if n > MAX_OUTPUTS:
        from cvtool.errors import UsageError

        raise UsageError(f"the naive backend loops over every output: {n:,} is too many (at most {MAX_OUTPUTS:,})",
                         hint="use a smaller input, or --backend numpy")


class Backend:
    name: ClassVar[str] = "naive"
    capabilities: ClassVar[Capabilities] = Capabilities(backward=True, train=False, float64=True,
                                                        extra={"networks": False, "cpu_only": True, "backward_by": "loops",
                                                               "max_outputs": MAX_OUTPUTS})

    def __init__(self, device: str = "cpu"):
        if device not in ("cpu", "auto"):
            raise BackendUnavailable(f"backend 'naive' runs on the CPU only, not {device!r}", hint="use --device cpu")
        self.device = "cpu"

    @classmethod
    def status(cls) -> Status:
        return Status(name=cls.name, available=True, version=np.__version__, devices=("cpu",), threads=1,
                      notes=("explicit loops, the formulas as written: small sizes only",))

    def conv2d(self, x, w, b=None, *, stride=1, padding=0, dilation=1, groups: int = 1) -> np.ndarray:
        _check_size(x.shape[0], w.shape[0], *x.shape[2:])
        return conv.conv2d_forward(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)[0]

    def conv_transpose2d(self, x, w, b=None, *, stride=1, padding=0, output_padding=0, dilation=1,
                         groups: int = 1) -> np.ndarray:
        _check_size(*x.shape)
        return conv.conv_transpose2d_forward(x, w, b, stride=stride, padding=padding, output_padding=output_padding,
                                             dilation=dilation, groups=groups)[0]

    def max_pool2d(self, x, *, kernel, stride=None, padding=0, dilation=1, ceil_mode: bool = False) -> np.ndarray:
        _check_size(*x.shape)
        return pool.max_pool2d_forward(x, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                                       ceil_mode=ceil_mode)[0]

    def avg_pool2d(self, x, *, kernel, stride=None, padding=0, ceil_mode: bool = False,
                   count_include_pad: bool = True) -> np.ndarray:
        _check_size(*x.shape)
        return pool.avg_pool2d_forward(x, kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                                       count_include_pad=count_include_pad)[0]

    def gradients(self, op: str, x, w=None, b=None, dy=None, **params) -> dict[str, np.ndarray]:
        """y, dL/dx (and dL/dw, dL/db) by the loops run backwards (backends.base.layer_gradients)."""
        from types import SimpleNamespace

        from cvtool_backends.base import layer_gradients

        lib = SimpleNamespace(**{n: getattr(m, n) for m in (conv, pool, layers) for n in dir(m) if "_forward" in n or "_backward" in n})
        return layer_gradients(lib, op, x, w, b, dy, **params)

    def relu(self, x) -> np.ndarray:
        return layers.relu_forward(x)[0]

    def sigmoid(self, x) -> np.ndarray:
        return layers.sigmoid_forward(x)[0]

    def tanh(self, x) -> np.ndarray:
        return layers.tanh_forward(x)[0]
