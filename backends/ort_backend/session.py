"""InferenceSessions: quiet, explicit thread count, CUDA asked for only where a GPU exists; one per model key.

`onnxruntime.get_available_providers()` lists what the wheel was built with (onnxruntime-gpu lists
CUDA and TensorRT on a machine without a GPU), so devices are decided from sessions, not from it.
"""

from __future__ import annotations

import functools
import glob
import os

import onnx
import onnxruntime as ort

ort.set_default_logger_severity(3)  # errors only: no provider-fallback warnings on CPU machines

THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
# The CUDA provider runs float32 Conv and MatMul in TF32 by default on Ampere and later (10 mantissa bits: ~1e-3);
# use_tf32=0 (onnxruntime >= 1.18) keeps IEEE float32, as the torch backend does, so the float64 cross-checks hold.
PROVIDERS: dict[str, list] = {"cpu": ["CPUExecutionProvider"],
                              "cuda": [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]}


def gpu_present() -> bool:
    """An NVIDIA device node or driver entry: only then is the CUDA provider worth asking for."""
    return os.path.exists("/dev/nvidia0") or bool(glob.glob("/proc/driver/nvidia/gpus/*"))


def options() -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = THREADS
    so.inter_op_num_threads = 1  # one node per graph: nothing to run side by side
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads sleep, not spin
    return so


def make(model: onnx.ModelProto, device: str) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), options(), providers=PROVIDERS[device])


@functools.lru_cache(maxsize=512)
def cached(device: str, builder, attrs: tuple) -> ort.InferenceSession:
    """The session for builder(**attrs) on device; attrs is a sorted tuple of (name, value) pairs."""
    return make(builder(**dict(attrs)), device)
