"""int8 through ONNX Runtime's static quantization: a float32 cvtool export in, a QDQ model out.

- quant_pre_process first: shape inference and ORT's basic graph optimisation, which folds each BatchNorm into
  the conv before it (an int8 conv then carries the folded scale, instead of a BatchNorm running in float);
- quantize_static in the QDQ format (QuantizeLinear/DequantizeLinear pairs around each op; ORT fuses every
  Q -> op -> DQ into its int8 kernel when the session is built): weights int8 symmetric, per output channel
  (a U-Net's channels differ in range by 10x and more), activations uint8 asymmetric (the U8S8 kernels that
  AVX512-VNNI runs), ranges from MinMax calibration over the images given (each one (1, C, H, W), any size);
- the output conv (the logits head: K channels, a sliver of the work) stays float32: its uint8 output would give
  the logits 256 levels, and pixels whose two best classes are close would flip on the rounding;
- transposed convolutions: the CPU provider has no int8 ConvTranspose kernel, so a quantized one runs
  DequantizeLinear -> float ConvTranspose -> QuantizeLinear, two extra passes over the upsampled activations for
  nothing (docs/benchmarks.md: excluding them took a membrane 512x512 pass from 1.37x to 1.72x float32's speed).
  A kernel-2 stride-2 one (every decoder's up-sampling here) is exactly a 1x1 convolution to 4x the channels and a
  depth-to-space shuffle (sub-pixel convolution, Shi et al. 2016): `subpixel` rewrites it so, as Conv -> Reshape
  -> Transpose -> Reshape in int8. Measured slower (docs/benchmarks.md: lite0 pets 1.28x float32 against 1.46x with
  the transposed convolutions left float32, membrane 1.08x against 1.33x), so it stays off (sub_pixel=False);
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


def subpixel(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model whose ConvTranspose nodes with kernel == stride, no padding, one group and a weight
    initializer are a 1x1 Conv to Co*k*k channels and a depth-to-space shuffle: y[co, k*i+a, k*j+b] =
    sum_ci x[ci, i, j] W[ci, co, a, b] + b[co], so W' = W (Ci, Co, k, k) -> (Co*k*k, Ci, 1, 1), b' = b per (a, b).
    The shuffle is Reshape (N, Co, k, k, h, w) -> Transpose (N, Co, h, k, w, k) -> Reshape (N, Co, h*k, w*k), its
    shapes from the input's at run time (any image size)."""
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    nodes: list[onnx.NodeProto] = []
    for n in g.node:
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        k = list(a.get("kernel_shape", []))
        if (n.op_type != "ConvTranspose" or len(k) != 2 or k[0] != k[1] or list(a.get("strides", [1, 1])) != k
                or any(a.get("pads", [0] * 4)) or any(a.get("output_padding", [0, 0])) or a.get("group", 1) != 1
                or any(d != 1 for d in a.get("dilations", [1, 1])) or n.input[1] not in inits):
            nodes.append(n)
            continue
        K = k[0]
        w = numpy_helper.to_array(inits[n.input[1]])  # (Ci, Co, K, K)
        Ci, Co = w.shape[:2]
        p = n.name or n.output[0]
        conv_ins = [n.input[0], f"{p}.subpixel.weight"]
        g.initializer.append(numpy_helper.from_array(
            np.ascontiguousarray(w.transpose(1, 2, 3, 0).reshape(Co * K * K, Ci, 1, 1)), conv_ins[1]))
        if len(n.input) > 2 and n.input[2]:
            b = numpy_helper.to_array(inits[n.input[2]])
            conv_ins.append(f"{p}.subpixel.bias")
            g.initializer.append(numpy_helper.from_array(np.repeat(b, K * K).astype(b.dtype), conv_ins[2]))
        c = lambda name, v: g.initializer.append(numpy_helper.from_array(np.asarray(v, np.int64), name))  # noqa: E731
        c(f"{p}.subpixel.cokk", [Co, K, K])
        c(f"{p}.subpixel.co", [Co])
        c(f"{p}.subpixel.k", [K])
        c(f"{p}.subpixel.b0", [0])
        c(f"{p}.subpixel.b1", [1])
        c(f"{p}.subpixel.b2", [2])
        c(f"{p}.subpixel.b4", [4])
        t = lambda s: f"{p}.subpixel.{s}"  # noqa: E731
        nodes += [
            helper.make_node("Conv", conv_ins, [t("z")], name=t("conv"), kernel_shape=[1, 1]),
            helper.make_node("Shape", [n.input[0]], [t("shape")], name=t("shape")),
            helper.make_node("Slice", [t("shape"), t("b0"), t("b1")], [t("n")], name=t("n")),
            helper.make_node("Slice", [t("shape"), t("b2"), t("b4")], [t("hw")], name=t("hw")),
            helper.make_node("Concat", [t("n"), t("cokk"), t("hw")], [t("s6")], name=t("s6"), axis=0),
            helper.make_node("Mul", [t("hw"), t("k")], [t("hwk")], name=t("hwk")),
            helper.make_node("Concat", [t("n"), t("co"), t("hwk")], [t("s4")], name=t("s4"), axis=0),
            helper.make_node("Reshape", [t("z"), t("s6")], [t("z6")], name=t("reshape6")),
            helper.make_node("Transpose", [t("z6")], [t("zt")], name=t("transpose"), perm=[0, 1, 4, 2, 5, 3]),
            helper.make_node("Reshape", [t("zt"), t("s4")], [n.output[0]], name=t("reshape4")),
        ]
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    return m


def float_nodes(model: onnx.ModelProto, float_head: bool, float_ops: tuple[str, ...]) -> list[str]:
    """The nodes quantize_static leaves in float32: the logits head and every node of float_ops."""
    names = [n.name for n in model.graph.node if n.op_type in float_ops]
    h = head(model) if float_head else None
    return names + ([h] if h else [])


def quantize_int8(model: onnx.ModelProto, batches: list[np.ndarray], *, per_channel: bool = True,
                  float_head: bool = True, method: str = "minmax",
                  float_ops: tuple[str, ...] = FLOAT_OPS, sub_pixel: bool = False) -> onnx.ModelProto:
    """The float32 model quantized to int8 (QDQ), calibrated on `batches` (each (1, C, H, W) float32, normalised);
    with sub_pixel its kernel-2 stride-2 transposed convolutions are first made sub-pixel convolutions. per_channel,
    float_head, method, float_ops and sub_pixel are there to measure the alternatives (docs/benchmarks.md)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from cvtool.errors import UsageError

    if not batches:
        raise UsageError("int8 quantization needs at least one calibration image")
    src = subpixel(model) if sub_pixel else model
    with tempfile.TemporaryDirectory(prefix="cvtool-int8-") as tmp:
        f32, pre, q = (Path(tmp) / n for n in ("f32.onnx", "pre.onnx", "int8.onnx"))
        onnx.save(src, str(f32))
        quant_pre_process(str(f32), str(pre), skip_symbolic_shape=True)  # symbolic inference: not needed, and slow
        quantize_static(str(pre), str(q), _Reader(batches), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method={"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                                          "entropy": CalibrationMethod.Entropy}[method],
                        nodes_to_exclude=float_nodes(src, float_head, float_ops),
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
