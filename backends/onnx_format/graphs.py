"""One-node ONNX models built with onnx.helper.

The ORT backend runs them; the tests run the same builders through onnx.reference.ReferenceEvaluator.
Attributes are ONNX's own: pads = [top, left, bottom, right]. N, H and W stay symbolic so that one
session serves every batch and image size; what an attribute or a weight fixes is written in.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

OPSET = 21  # Conv/ConvTranspose/MaxPool/AveragePool as in opset 19+ (AveragePool has dilations)
IR_VERSION = 10  # the IR that goes with opset 21; onnxruntime >= 1.18 reads it
NCHW, NCOO = ["N", "C", "H", "W"], ["N", "C", "OH", "OW"]  # pooling keeps N and C
ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


def one_node(op_type: str, inputs: list[tuple[str, list]], out: list, dtype, **attrs) -> onnx.ModelProto:
    """A model `y = op_type(*inputs)`; inputs are (name, shape), a str in a shape is a symbolic size."""
    elem = ELEM[np.dtype(dtype)]
    ins = [helper.make_tensor_value_info(n, elem, shape) for n, shape in inputs]
    y = helper.make_tensor_value_info("y", elem, out)
    node = helper.make_node(op_type, [n for n, _ in inputs], ["y"], **attrs)
    graph = helper.make_graph([node], op_type.lower(), ins, [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=IR_VERSION, producer_name="cvtool")
    onnx.checker.check_model(model)
    return model


def conv(*, C: int, M: int, kernel, strides, pads, dilations, group: int, bias: bool, dtype) -> onnx.ModelProto:
    """x (N, C, H, W) * w (M, C/group, KH, KW) [+ b (M,)] -> (N, M, OH, OW)."""
    KH, KW = kernel
    inputs = [("x", ["N", C, "H", "W"]), ("w", [M, C // group, KH, KW])] + ([("b", [M])] if bias else [])
    return one_node("Conv", inputs, ["N", M, "OH", "OW"], dtype, kernel_shape=[KH, KW], strides=list(strides), pads=list(pads),
                    dilations=list(dilations), group=group)


def conv_transpose(*, C: int, M: int, kernel, strides, pads, dilations, group: int, bias: bool, dtype,
                   output_padding=(0, 0)) -> onnx.ModelProto:
    """x (N, C, H, W) with w (C, M/group, KH, KW) [+ b (M,)] -> (N, M, OH, OW); w is IOHW, as in torch."""
    KH, KW = kernel
    inputs = [("x", ["N", C, "H", "W"]), ("w", [C, M // group, KH, KW])] + ([("b", [M])] if bias else [])
    return one_node("ConvTranspose", inputs, ["N", M, "OH", "OW"], dtype, kernel_shape=[KH, KW], strides=list(strides),
                    pads=list(pads), dilations=list(dilations), group=group, output_padding=list(output_padding))


def max_pool(*, kernel, strides, pads, dilations, ceil_mode: int, dtype) -> onnx.ModelProto:
    return one_node("MaxPool", [("x", NCHW)], NCOO, dtype, kernel_shape=list(kernel),
                    strides=list(strides), pads=list(pads), dilations=list(dilations), ceil_mode=ceil_mode)


def avg_pool(*, kernel, strides, pads, ceil_mode: int, count_include_pad: int, dtype) -> onnx.ModelProto:
    return one_node("AveragePool", [("x", NCHW)], NCOO, dtype, kernel_shape=list(kernel),
                    strides=list(strides), pads=list(pads), ceil_mode=ceil_mode,
                    count_include_pad=count_include_pad)


def unary(*, op: str, rank: int, dtype) -> onnx.ModelProto:
    """Relu, Sigmoid or Tanh on an array of any size with `rank` dimensions."""
    dims = [f"d{i}" for i in range(rank)]
    return one_node(op, [("x", dims)], dims, dtype)
