"""A third-party backend as a plug-in would ship it: its own module, found through the entry-point
group `cvtool.backends`. test_backends_registry.py copies it to a temporary folder next to a
`*.dist-info` that declares `toy = toy_backend:Backend`. Activations only; the rest refuses."""

from __future__ import annotations

import numpy as np

from cvtool.errors import BackendUnavailable, CvtoolError
from cvtool_backends.base import Capabilities, Status


class Backend:
    name = "toy"
    capabilities = Capabilities(ops=False)

    def __init__(self, device: str = "cpu"):
        if device != "cpu":
            raise BackendUnavailable(f"toy runs on the CPU only, not {device!r}")
        self.device = device

    @classmethod
    def status(cls) -> Status:
        return Status(name=cls.name, available=True, version="0.1", devices=("cpu",), notes=("a test plug-in",))

    def _none(self, *args, **kwargs):
        raise CvtoolError("the toy backend has activations only")

    conv2d = conv_transpose2d = max_pool2d = avg_pool2d = _none

    def relu(self, x):
        return np.maximum(x, 0)

    def sigmoid(self, x):
        return 1 / (1 + np.exp(-np.asarray(x)))

    def tanh(self, x):
        return np.tanh(x)
