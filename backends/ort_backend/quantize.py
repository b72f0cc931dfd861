"""int8 through ONNX Runtime's static quantization: a float32 cvtool export in, a QDQ model out.

- quant_pre_process first: shape inference and ORT's basic graph optimisation, which folds each BatchNorm into
  the conv before it (an int8 conv then carries the folded scale, instead of a BatchNorm running in float);
- quantize_static in the QDQ format (QuantizeLinear/DequantizeLinear pairs around each op; ORT fuses every
  Q -> op -> DQ into its int8 kernel when the session is built): weights int8 symmetric, per output channel
  (a U-Net's channels differ in range by 10x and more), activations uint8 asymmetric (the U8S8 kernels that
  AVX512-VNNI runs), ranges from MinMax calibration over the images given (each one (1, C, H, W), any size);
- the output conv (the logits head: K channels, a sliver of the work) stays float32: its uint8 output would give
  the logits 256 levels, and pixels whose two best classes are close would flip on the rounding;
- transposed convolutions stay float32 too: the CPU provider has no int8 ConvTranspose kernel, so a quantized one
  runs DequantizeLinear -> float ConvTranspose -> QuantizeLinear, two extra passes over the upsampled activations
  for nothing (docs/benchmarks.md: excluding them took a membrane 512x512 pass from 1.37x to 1.72x float32's speed);
- the model's own metadata_props kept, its "cvtool" entry saying precision int8.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx

from cvtool_backends.onnx_format.export import INPUT, META_KEY


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader: one image a call, then None."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self.it = iter(batches)

    def get_next(self) -> dict | None:
        x = next(self.it, None)
        return None if x is None else {INPUT: np.ascontiguousarray(x, np.float32)}

    def rewind(self) -> None:  # newer ORT versions may ask; one pass is all MinMax needs
        pass


def head(model: onnx.ModelProto) -> str | None:
    """The name of the node computing the graph's output (through Identity nodes): the logits head."""
    producer = {o: n for n in model.graph.node for o in n.output}
    n = producer.get(model.graph.output[0].name)
    while n is not None and n.op_type == "Identity":
        n = producer.get(n.input[0])
    return n.name if n is not None else None


METHODS = ("minmax", "percentile", "entropy")  # ORT's calibrators; MinMax is the default (docs/benchmarks.md)


FLOAT_OPS = ("ConvTranspose",)  # left in float32: no int8 kernel for them in ORT's CPU provider


def float_nodes(model: onnx.ModelProto, float_head: bool, float_ops: tuple[str, ...]) -> list[str]:
    """The nodes quantize_static leaves in float32: the logits head and every node of float_ops."""
    names = [n.name for n in model.graph.node if n.op_type in float_ops]
    h = head(model) if float_head else None
    return names + ([h] if h else [])


def quantize_int8(model: onnx.ModelProto, batches: list[np.ndarray], *, per_channel: bool = True,
                  float_head: bool = True, method: str = "minmax",
                  float_ops: tuple[str, ...] = FLOAT_OPS) -> onnx.ModelProto:
    """The float32 model quantized to int8 (QDQ), calibrated on `batches` (each (1, C, H, W) float32, normalised).
    per_channel, float_head, method and float_ops are there to measure the alternatives (docs/benchmarks.md)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from cvtool.errors import UsageError

    if not batches:
        raise UsageError("int8 quantization needs at least one calibration image")
    with tempfile.TemporaryDirectory(prefix="cvtool-int8-") as tmp:
        f32, pre, q = (Path(tmp) / n for n in ("f32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(model, str(f32))
        quant_pre_process(str(f32), str(pre), skip_symbolic_shape=True)  # symbolic inference: not needed, and slow
        quantize_static(str(pre), str(q), _Reader(batches), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                                          "entropy": CalibrationMethod.Entropy}[method],
                        nodes_to_exclude=float_nodes(model, float_head, float_ops),
                        extra_options={"WeightSymmetric": True, "ActivationSymmetric": False})
        out = onnx.load(str(q))
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY in props:
        meta = json.loads(props[META_KEY])
        props[META_KEY] = json.dumps({**meta, "precision": "int8", "half": False,
                                      "calibration_images": len(batches)})
    del out.metadata_props[:]
    onnx.helper.set_model_props(out, props)
    return out
