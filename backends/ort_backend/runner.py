"""Running an exported network in ONNX Runtime: all graph optimisations, explicit threads,
IO binding on CUDA (inputs copied once, outputs left on the device until fetched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from cvtool_backends.onnx_format.export import INPUT, OUTPUT
from cvtool_backends.ort_backend import session


class OrtRunner:
    def __init__(self, model: bytes | str | Path, device: str, threads: int | None = None):
        so = session.options()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "1")  # whole networks: spinning pays
        if threads:
            so.intra_op_num_threads = threads
        src = model if isinstance(model, bytes) else str(model)
        self.sess = ort.InferenceSession(src, so, providers=session.PROVIDERS[device])
        self.device = device
        self.providers = self.sess.get_providers()  # what the session really uses
        self.threads = so.intra_op_num_threads
        self.note: str | None = None  # how the model got here (the backend says whether its export was reused)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, np.float32)
        if self.device == "cuda":
            io = self.sess.io_binding()
            io.bind_cpu_input(INPUT, x)
            io.bind_output(OUTPUT, "cuda")
            self.sess.run_with_iobinding(io)
            return io.copy_outputs_to_cpu()[0]
        return self.sess.run([OUTPUT], {INPUT: x})[0]
