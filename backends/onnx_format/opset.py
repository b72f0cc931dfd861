"""Opsets: the IR version that goes with one, and the newest one the installed ONNX Runtime really runs.

Only `newest_opset` asks onnxruntime (imported inside it): building or reading a file needs just `onnx`.
"""

from __future__ import annotations

import functools

import onnx
from onnx import TensorProto, helper

OLDEST = 13  # the oldest opset cvtool exports to (`cvtool export --opset` refuses lower)


def max_ir(opset: int) -> int:
    """The IR version that goes with an opset (older runtimes refuse a newer IR)."""
    irs = [ir for (_, ir, op, *_rest) in helper.VERSION_TABLE if op == opset]
    return max(irs) if irs else onnx.IR_VERSION


@functools.lru_cache(maxsize=1)
def newest_opset() -> int:
    """Asked, not assumed: the newest opset whose one-node probe the installed ONNX Runtime loads."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 4
    for opset in range(onnx.defs.onnx_opset_version(), OLDEST - 1, -1):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])
        g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = min(m.ir_version, max_ir(opset))
        try:
            ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
            return opset
        except Exception:
            continue
    return OLDEST
