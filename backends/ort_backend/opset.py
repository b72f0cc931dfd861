"""The newest ONNX opset that the installed ONNX Runtime really runs (asked, not assumed)."""

from __future__ import annotations

import functools

import onnx
from onnx import TensorProto, helper


@functools.lru_cache(maxsize=1)
def newest_opset() -> int:
    import onnxruntime as ort

    from backends.ort_backend.export import _max_ir_for_opset

    so = ort.SessionOptions()
    so.log_severity_level = 4
    for opset in range(onnx.defs.onnx_opset_version(), 12, -1):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])
        g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "probe", [x], [y])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
        m.ir_version = min(m.ir_version, _max_ir_for_opset(opset))
        try:
            ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
            return opset
        except Exception:
            continue
    return 13
