"""ModelSpec + parameters -> a self-contained ONNX model, built node by node with onnx.helper.

No tracing exporter: the graph is the spec's graph, so it prints no noise, needs no torch, and
works the same for checkpoints trained by any backend. Dynamic batch, height and width.

Interface (fixed, documented): input  "image"  float32 (N, C, H, W), normalised, H and W divisible by 2**depth
                                output "logits" float32 (N, K, H, W)
metadata_props["cvtool"]: JSON with spec, classes, colors, normalization, cvtool_version (and the
source checkpoint's sha256, which `cvtool segment` uses as a cache key), and its precision: "fp32", "fp16"
(weights and compute in float16 behind float32 I/O casts, `half` true too, as files before the name had it) or
"int8" (quantized by backends/ort_backend/quantize.py: its initializers are int8, not the spec's parameters).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cvtool.model.spec import (
    Activation,
    Add,
    BatchNorm2d,
    Concat,
    Conv2d,
    ConvTranspose2d,
    MaxPool2d,
    ModelSpec,
    Node,
    check_params,
)
from cvtool_backends.onnx_format.opset import max_ir

INPUT, OUTPUT = "image", "logits"
META_KEY = "cvtool"
CLIP6 = {"relu6.min": 0.0, "relu6.max": 6.0}  # Clip's bounds for ReLU6, in the weights' dtype


def _node(n: Node, dtype) -> tuple[list[onnx.NodeProto], list[str]]:
    """ONNX node(s) for one spec node, and the names of the initializers it uses."""
    L, ins, out = n.layer, list(n.inputs), n.name
    ins = [INPUT if i == "input" else i for i in ins]
    if isinstance(L, Conv2d):
        inits = [f"{n.name}.weight"] + ([f"{n.name}.bias"] if L.bias else [])
        (t, b), (left, right) = L.pads
        return [helper.make_node("Conv", ins + inits, [out], name=n.name, kernel_shape=[L.kernel_size] * 2,
                                 strides=[L.stride] * 2, pads=[t, left, b, right], dilations=[L.dilation] * 2,
                                 group=L.groups)], inits
    if isinstance(L, ConvTranspose2d):
        inits = [f"{n.name}.weight"] + ([f"{n.name}.bias"] if L.bias else [])
        p = L.padding
        return [helper.make_node("ConvTranspose", ins + inits, [out], name=n.name, kernel_shape=[L.kernel_size] * 2,
                                 strides=[L.stride] * 2, pads=[p] * 4, output_padding=[L.output_padding] * 2)], inits
    if isinstance(L, BatchNorm2d):
        inits = [f"{n.name}.{k}" for k in ("weight", "bias", "running_mean", "running_var")]
        return [helper.make_node("BatchNormalization", ins + inits, [out], name=n.name, epsilon=L.eps)], inits
    if isinstance(L, Activation):
        if L.kind == "relu6":  # Clip's bounds are inputs since opset 11: two shared scalar initializers
            return [helper.make_node("Clip", ins + list(CLIP6), [out], name=n.name)], []
        op = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[L.kind]
        return [helper.make_node(op, ins, [out], name=n.name)], []
    if isinstance(L, Add):
        return [helper.make_node("Add", ins, [out], name=n.name)], []
    if isinstance(L, MaxPool2d):
        return [helper.make_node("MaxPool", ins, [out], name=n.name, kernel_shape=[L.kernel_size] * 2,
                                 strides=[L.stride] * 2)], []
    if isinstance(L, Concat):
        return [helper.make_node("Concat", ins, [out], name=n.name, axis=1)], []
    raise TypeError(f"no ONNX mapping for {type(L).__name__}")


def build_model(spec: ModelSpec, params: dict[str, np.ndarray], meta: dict, *, opset: int,
                half: bool = False) -> onnx.ModelProto:
    """The spec's graph as ONNX. With `half`, weights and compute are float16 behind float32 I/O casts."""
    check_params(spec, params)
    wdt = np.float16 if half else np.float32
    nodes: list[onnx.NodeProto] = []
    if half:
        nodes.append(helper.make_node("Cast", [INPUT], ["image_fp16"], name="cast_in", to=TensorProto.FLOAT16))
    used: list[str] = []
    graph = spec.graph()
    for n in graph:
        ns, inits = _node(n, wdt)
        if half:
            for node in ns:
                node.input[:] = ["image_fp16" if i == INPUT else i for i in node.input]
        nodes += ns
        used += inits
    last = graph[-1].name
    if half:
        nodes.append(helper.make_node("Cast", [last], [OUTPUT], name="cast_out", to=TensorProto.FLOAT))
    else:
        nodes.append(helper.make_node("Identity", [last], [OUTPUT], name="output"))
    initializers = [numpy_helper.from_array(np.asarray(params[k], wdt), name=k) for k in used]
    if any(isinstance(n.layer, Activation) and n.layer.kind == "relu6" for n in graph):
        initializers += [numpy_helper.from_array(np.asarray(v, wdt), name=k) for k, v in CLIP6.items()]
    x = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", spec.in_channels, "height", "width"],
                                      doc_string=f"(image/255 - mean) / std; height and width divisible by {spec.multiple}")
    y = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", spec.num_classes, "height", "width"],
                                      doc_string="class scores per pixel; argmax over dim 1 = class index")
    g = helper.make_graph(nodes, "cvtool_unet", [x], [y], initializer=initializers)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="cvtool")
    model.ir_version = min(model.ir_version, max_ir(opset))
    helper.set_model_props(model, {META_KEY: json.dumps({**meta, "spec": spec.to_dict(), "half": half,
                                                         "precision": "fp16" if half else "fp32"})})
    return model


def read_meta(model: onnx.ModelProto) -> dict:
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise ValueError("not a cvtool model: no 'cvtool' metadata")
    return json.loads(props[META_KEY])


def precision(meta: dict) -> str:
    """fp32, fp16 or int8: what an export's metadata says (files before the name: `half` or float32)."""
    return meta.get("precision") or ("fp16" if meta.get("half") else "fp32")


def to_params(model: onnx.ModelProto) -> tuple[ModelSpec, dict[str, np.ndarray], dict]:
    """Back from ONNX: the spec, float32 parameters and the metadata (so any backend can run an .onnx)."""
    meta = read_meta(model)
    spec = ModelSpec.from_dict(meta["spec"])
    if precision(meta) == "int8":  # quantized and BatchNorm-folded: no spec parameters to give back
        return spec, {}, meta
    params = {t.name: numpy_helper.to_array(t).astype(np.float32) for t in model.graph.initializer
              if t.name not in CLIP6}
    check_params(spec, params)
    return spec, params, meta
