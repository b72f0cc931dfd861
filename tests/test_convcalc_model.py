"""`cvtool convcalc --model`: a network traced layer by layer, from the default spec, a checkpoint or a cvtool ONNX
export (the same numbers from each), and a foreign ONNX file refused in one line. Oracle: cvtool.model.spec's own
parameter shapes and total_flops, the hand count of the default U-Net's parameters in the README (482,788), and
lite0's receptive field summed block by block (tests/test_lite0.py)."""

from __future__ import annotations

import json

import onnx
from conftest import cli  # tests/ is on sys.path under pytest
from onnx import TensorProto, helper

from cvtool.model import checkpoint as ckpt_io
from cvtool.model.meta import ModelMeta
from cvtool.model.spec import ModelSpec, init_params, total_flops, trainable


def traced(capsys, model: str, hw: str = "64") -> dict:
    code, out, err = cli(capsys, "convcalc", "--model", model, "--input", hw, "--json")
    assert code == 0, err
    return json.loads(out)


def test_default_model_counts_and_flops(capsys):
    doc = traced(capsys, "default", "256")
    spec = ModelSpec()
    assert doc["params"] == 482_788 == sum(v.size for k, v in init_params(spec).items() if trainable(k))
    assert doc["conv_flops"] == total_flops(spec, (256, 256))
    assert doc["input"] == [3, 256, 256] and doc["shape"] == [spec.num_classes, 256, 256]


def test_checkpoint_and_export_trace_alike_and_a_foreign_onnx_is_refused(capsys, tmp_path):
    spec = ModelSpec(in_channels=1, num_classes=2, width=8, depth=2)
    ck = ckpt_io.Checkpoint(spec, init_params(spec, 0), ModelMeta(["bg", "fg"], [[0, 0, 0], [255, 0, 0]], [0.5], [0.25]))
    path = ckpt_io.save(ck, tmp_path / "m.safetensors")
    code, _, err = cli(capsys, "export", str(path), "-o", str(tmp_path / "m.onnx"))
    assert code == 0, err
    a, b = traced(capsys, str(path)), traced(capsys, str(tmp_path / "m.onnx"))
    assert a["spec"] == b["spec"] == spec.to_dict() and a["layers"] == b["layers"] and a["params"] == b["params"]
    relu = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                               [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]))
    onnx.save(relu, tmp_path / "relu.onnx")
    code, out, err = cli(capsys, "convcalc", "--model", str(tmp_path / "relu.onnx"))
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and "not a cvtool model" in lines[0] and "Traceback" not in err


def test_lite0_shows_its_strides_and_receptive_field(capsys):
    doc = traced(capsys, "lite0", "224")
    spec = ModelSpec(encoder="lite0", depth=5)
    assert doc["params"] == spec.num_params() and doc["spec"]["encoder"] == "lite0"
    layers = {r["name"]: r for r in doc["layers"]}
    feats = ("enc.stem.conv", "enc.b2.add", "enc.b4.add", "enc.b10.add", "enc.b15.bn2")
    assert [layers[n]["jump"] for n in feats] == [2, 4, 8, 16, 32] == [224 // layers[n]["shape"][1] for n in feats]
    assert layers["enc.b1.dw"]["detail"] == "k3 s2 p0,1,0,1 g96"  # TF SAME: the extra pixel at the bottom/right
    assert doc["max_jump"] == 32 and doc["receptive_field"] >= layers["enc.b15.bn2"]["receptive_field"] == 851
    code, out, _ = cli(capsys, "convcalc", "--model", "lite0", "--input", "64")
    assert code == 0 and "deepest stride 32" in out and "EfficientNet-Lite0" in out
