"""Reduced precision: fp16 and int8 exports that ONNX Runtime runs, int8 masks against float32's on a tiny trained
model, the training data a checkpoint remembers, bf16 on torch only where the CPU has it, and bad values refused.

Oracles: the float32 network (ORT and the NumPy reference), onnx.checker, the files' own node and tensor types, and
masks the test draws itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import cli  # tests/ is on sys.path under pytest
from onnx import TensorProto
from PIL import Image
from test_inference import tiny_checkpoint

import cvtool_backends as registry
from cvtool.compare import MASK_TOLERANCE
from cvtool.errors import BackendUnavailable
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.meta import ModelMeta
from cvtool.model.precision import cpu_bf16, parse_precisions
from cvtool.model.spec import ModelSpec, init_params
from cvtool.train.optim import OptimConfig

S = 32  # image side of the test's dataset


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def discs(root: Path, n: int = 24, seed: int = 0) -> Path:
    """A dataset a tiny net learns in a few steps: a bright disc (class 1) on a dark, noisy background (class 0)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:S, :S]
    for i in range(n):
        cy, cx, r = rng.uniform(8, S - 8), rng.uniform(8, S - 8), rng.uniform(4, 9)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        img = rng.normal(60, 15, (S, S, 3)) + mask[..., None] * rng.uniform(90, 140)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A width-4 depth-1 U-Net trained for 60 steps on `discs`, saved with the training config that `cvtool train`
    stores (so the checkpoint remembers its data, as a trained one does)."""
    from cvtool.data import open_datasets

    root = discs(tmp_path_factory.mktemp("discs") / "data")
    train, _, _ = open_datasets(str(root), val_split=0.25, seed=0)
    x = np.stack([train[i].image for i in range(len(train))])
    mean, std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    x = (x - mean[:, None, None]) / std[:, None, None]
    y = np.stack([train[i].mask for i in range(len(train))])
    spec = ModelSpec(in_channels=3, num_classes=2, width=4, depth=1)
    trainer = registry.get("torch", "cpu").trainer(spec, init_params(spec, 0), optim=OptimConfig(), seed=0)
    for step in range(60):
        idx = np.arange(8) + (step * 8) % (len(x) - 8)
        trainer.step(x[idx].astype(np.float32), y[idx], 1e-2)
    meta = ModelMeta(["background", "disc"], [[0, 0, 0], [255, 0, 0]], mean.tolist(), std.tolist())
    state = {"config": {"data": str(root), "val_split": 0.25, "seed": 0}}
    path = tmp_path_factory.mktemp("ck") / "best.safetensors"
    return ckpt_io.save(ckpt_io.Checkpoint(spec, trainer.params(), meta, train_state=state), path)


# --- what a checkpoint remembers ------------------------------------------------------------------------

def test_a_checkpoint_remembers_its_data_as_an_absolute_folder(tmp_path, monkeypatch):
    spec = ModelSpec(in_channels=1, num_classes=2, width=4, depth=1)
    meta = ModelMeta(["a", "b"], [[0, 0, 0], [1, 1, 1]], [0.0], [1.0])
    monkeypatch.chdir(tmp_path)
    state = {"config": {"data": "data", "val_split": 0.3, "seed": 4}}
    path = ckpt_io.save(ckpt_io.Checkpoint(spec, init_params(spec, 0), meta, train_state=state), tmp_path / "c.safetensors")
    assert ckpt_io.read_meta(path)["data"]["root"] == str(tmp_path / "data")  # resolved where training ran
    monkeypatch.chdir("/")
    data = ckpt_io.load(path).data
    assert (data.root, data.val_split, data.seed) == (str(tmp_path / "data"), 0.3, 4)
    synth = {"config": {"data": None, "val_split": 0.2, "seed": 1, "synth_size": 64, "synth_train": 10, "synth_val": 3}}
    p2 = ckpt_io.save(ckpt_io.Checkpoint(spec, init_params(spec, 0), meta, train_state=synth), tmp_path / "s.safetensors")
    assert ckpt_io.load(p2).data == ckpt_io.DataSource(None, 0.2, 1, 64, (10, 3))
    bare = tiny_checkpoint(tmp_path / "bare.safetensors")  # no training state: remembers nothing
    assert ckpt_io.load(bare).data is None and "data" not in ckpt_io.read_meta(bare)


# --- exports --------------------------------------------------------------------------------------------

def test_fp16_export_is_float16_inside_float32_outside_and_ort_runs_it(trained, tmp_path, capsys):
    out = tmp_path / "h.onnx"
    code, stdout, err = cli(capsys, "export", str(trained), "-o", str(out), "--precision", "fp16", "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["precision"] == "fp16" and doc["passed"]
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    assert {t.data_type for t in m.graph.initializer} == {TensorProto.FLOAT16}
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    masks = doc["masks"]  # judged on the 6 validation images the checkpoint remembers
    assert masks["images"] == 6 and masks["pixels"] == 6 * S * S and masks["agreement"] >= 0.99
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 24)).astype(np.float32)
    y = registry.get("ort", "cpu").load_onnx(out)(x)
    assert y.shape == (2, 2, 16, 24) and y.dtype == np.float32


def test_int8_export_is_quantized_and_its_masks_agree_with_float32(trained, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    code, stdout, err = cli(capsys, "export", str(trained), "-o", str(out), "--precision", "int8",
                            "--calibration-images", "8", "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["precision"] == "int8" and doc["passed"] and doc["verify"] == []  # no logits tolerance for int8
    assert doc["calibration"]["images"] == 8 and "train images of" in doc["calibration"]["what"]
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    ops = {n.op_type for n in m.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "BatchNormalization" not in ops  # QDQ, BN folded
    assert TensorProto.INT8 in {t.data_type for t in m.graph.initializer}
    # the masks, recomputed here: the file against the float32 network on the validation images, pixel by pixel
    from cvtool.data import open_datasets
    from cvtool.model.inference import segment_logits

    ck = ckpt_io.load(trained)
    _, val, _ = open_datasets(str(ck.data.root), val_split=0.25, seed=0)
    ort = registry.get("ort", "cpu")
    f32, q = ort.runner(ck.spec, ck.params), ort.load_onnx(out)
    same = total = 0
    for i in range(len(val)):
        img = (val[i].image.transpose(1, 2, 0) * 255).round().astype(np.uint8)
        a, b = (segment_logits(r, img, ck.spec, ck.meta.mean, ck.meta.std).argmax(0) for r in (f32, q))
        same, total = same + int((a == b).sum()), total + a.size
    assert doc["masks"]["agreement"] == pytest.approx(same / total)
    assert same / total >= MASK_TOLERANCE["int8"].agreement
    assert doc["masks"]["miou_ref"] > 0.6  # really trained: the agreement is about a model that segments
    assert abs(doc["masks"]["miou_change"]) <= MASK_TOLERANCE["int8"].miou_change
    code, stdout, err = cli(capsys, "export", str(trained), "-o", str(out), "--verify-only", "--json")
    assert code == 0 and json.loads(stdout)["precision"] == "int8", err
    img = Path(ck.data.root) / "images" / "000.png"
    code, stdout, err = cli(capsys, "segment", str(img), "--model", str(out), "--backend", "numpy",
                            "--out", str(tmp_path / "seg"))
    assert code == 2 and "int8 export" in one_error_line(err)  # its weights are int8, not the spec's
    code, stdout, err = cli(capsys, "segment", str(img), "--model", str(out), "--backend", "ort",
                            "--out", str(tmp_path / "seg"), "--json")
    assert code == 0 and json.loads(stdout)["images"][0]["size"] == [S, S], err


def test_int8_export_of_a_checkpoint_without_data_needs_calibrate(tmp_path, capsys):
    ck = tiny_checkpoint(tmp_path / "m.safetensors", in_channels=3, num_classes=2, depth=1)
    out = tmp_path / "q.onnx"
    code, _, err = cli(capsys, "export", str(ck), "-o", str(out), "--precision", "int8")
    assert code == 2 and "--calibrate" in one_error_line(err) and not out.exists()
    images = discs(tmp_path / "d", n=6)
    code, stdout, err = cli(capsys, "export", str(ck), "-o", str(out), "--precision", "int8", "--calibrate",
                            str(images / "images"), "--json")
    assert code in (0, 1), err  # random weights: the masks may or may not agree; the report is what is checked
    doc = json.loads(stdout)
    assert doc["calibration"]["images"] == 6 and doc["masks"]["miou"] is None  # a plain folder: no masks to score
    assert doc["masks"]["images"] == 6 and 0 <= doc["masks"]["agreement"] <= 1
    assert out.exists() == (code == 0)  # a failed judgement writes nothing


def test_int8_keeps_the_head_and_transposed_convs_in_float32():
    from cvtool_backends.onnx_format.export import build_model
    from cvtool_backends.ort_backend.quantize import head, quantize_int8

    spec = ModelSpec(in_channels=3, num_classes=3, width=4, depth=1)
    params = init_params(spec, 0)
    rng = np.random.default_rng(0)
    calib = [rng.standard_normal((1, 3, 16, 16), dtype=np.float32) for _ in range(4)]
    q = quantize_int8(build_model(spec, params, {"classes": []}, opset=17), calib)
    producer = {o: n for n in q.graph.node for o in n.output}
    inits = {t.name: t for t in q.graph.initializer}

    def float_weights(node) -> bool:  # weights read straight from a float32 initializer, not through DequantizeLinear
        return node.input[1] in inits and inits[node.input[1]].data_type == TensorProto.FLOAT

    head_node = next(n for n in q.graph.node if n.name == head(q))
    assert head_node.op_type == "Conv" and float_weights(head_node)
    tconvs = [n for n in q.graph.node if n.op_type == "ConvTranspose"]
    assert tconvs and all(float_weights(n) for n in tconvs)
    convs = [n for n in q.graph.node if n.op_type == "Conv" and n is not head_node]
    assert convs and all(producer[n.input[1]].op_type == "DequantizeLinear" for n in convs)  # the rest: int8
    run = registry.get("ort", "cpu").precision_runner(spec, params, "int8", calib)
    x = rng.standard_normal((1, 3, 16, 16), dtype=np.float32)
    ref = registry.get("numpy", "cpu").runner(spec, params, dtype=np.float64)(x.astype(np.float64))
    y = run(x)
    assert y.shape == ref.shape and np.abs(y - ref).max() <= 0.25 * np.abs(ref).max()  # int8: close, not float-close


def test_subpixel_is_the_transposed_convolution_it_replaces():
    """A kernel-2 stride-2 ConvTranspose (with and without bias, Ci != Co) is a 1x1 Conv and a depth-to-space
    shuffle, to float rounding, on any input size; a kernel-3 stride-2 one is left alone. Oracle: ONNX's own
    ReferenceEvaluator on the original graph."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    from cvtool_backends.ort_backend.quantize import subpixel

    rng = np.random.default_rng(0)
    Ci, Co = 3, 5
    w2 = rng.standard_normal((Ci, Co, 2, 2)).astype(np.float32)
    w3 = rng.standard_normal((Co, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(Co).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("ConvTranspose", ["x", "w2", "b"], ["u"], name="up", kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("ConvTranspose", ["u", "w3"], ["y"], name="odd", kernel_shape=[3, 3], strides=[2, 2]),
         helper.make_node("ConvTranspose", ["x", "w2"], ["v"], name="nobias", kernel_shape=[2, 2], strides=[2, 2])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, Ci, None, None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2, None, None]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [None, Co, None, None])],
        [numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(w3, "w3"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    s = subpixel(m)
    ops = [n.op_type for n in s.graph.node]
    assert ops.count("ConvTranspose") == 1 and ops.count("Conv") == 2 and ops.count("Transpose") == 2
    onnx.checker.check_model(s)
    for shape in [(1, Ci, 4, 6), (2, Ci, 7, 3)]:
        x = rng.standard_normal(shape).astype(np.float32)
        want = ReferenceEvaluator(m).run(None, {"x": x})
        got = ReferenceEvaluator(s).run(None, {"x": x})
        for a, c in zip(want, got):
            assert a.shape == c.shape
            np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-5)


# --- bf16 -------------------------------------------------------------------------------------------------

def test_cpu_bf16_reads_the_flags():
    assert cpu_bf16({"avx512f", "avx512_bf16"}).ok and cpu_bf16({"amx_bf16"}).ok
    no = cpu_bf16({"avx512f", "avx512_vnni"})
    assert not no.ok and "avx512_bf16" in no.how
    assert not cpu_bf16(set()).ok


def test_bf16_segment_refused_without_native_bf16(trained, tmp_path, capsys, monkeypatch):
    import cvtool_backends.torch_backend as torch_backend

    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((S, S, 3), np.uint8)).save(img)
    monkeypatch.setattr(torch_backend, "native_bf16", lambda device: (False, "no avx512_bf16 (test)"))
    code, out, err = cli(capsys, "segment", str(img), "--model", str(trained), "--precision", "bf16",
                         "--out", str(tmp_path / "o"))
    assert code == 2 and out == "" and "no avx512_bf16 (test)" in one_error_line(err)
    code, _, err = cli(capsys, "segment", str(img), "--model", str(trained), "--precision", "bf16", "--backend", "ort")
    assert code == 2 and "bfloat16" in one_error_line(err)
    with pytest.raises(BackendUnavailable):
        registry.get("torch", "cpu").precision_runner(ModelSpec(width=4, depth=1), init_params(ModelSpec(width=4, depth=1)), "bf16")


def test_bf16_segment_where_native(trained, tmp_path, capsys):
    from cvtool_backends.torch_backend import native_bf16

    if not native_bf16("cpu")[0]:
        pytest.skip("this CPU has no native bfloat16")
    img = tmp_path / "a.png"
    Image.open(Path(ckpt_io.load(trained).data.root) / "images" / "000.png").save(img)
    runs = {}
    for p in ("fp32", "bf16"):
        code, out, err = cli(capsys, "segment", str(img), "--model", str(trained), "--precision", p,
                             "--out", str(tmp_path / p), "--json")
        assert code == 0, err
        assert json.loads(out)["precision"] == p
        runs[p] = np.asarray(Image.open(tmp_path / p / "a_mask.png"))
    assert (runs["fp32"] == runs["bf16"]).mean() >= 0.98


def test_bf16_runs_a_one_channel_net_close_to_float32():
    """A grayscale net's skip convolutions (conv + add + ReLU) once hit torch's add_relu, which has no bfloat16."""
    from cvtool_backends.torch_backend import native_bf16

    if not native_bf16("cpu")[0]:
        pytest.skip("this CPU has no native bfloat16")
    spec = ModelSpec(in_channels=1, num_classes=2, width=4, depth=1)
    params = init_params(spec, 0)
    x = np.random.default_rng(1).standard_normal((2, 1, 32, 32)).astype(np.float32)
    torch_be = registry.get("torch", "cpu")
    ref, got = torch_be.runner(spec, params)(x), torch_be.precision_runner(spec, params, "bf16")(x)
    assert got.dtype == np.float32 and np.abs(got - ref).max() <= 0.05 * np.abs(ref).max()
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95


# --- bench and bad values ---------------------------------------------------------------------------------

def test_bench_times_precisions_side_by_side(trained, capsys):
    code, out, err = cli(capsys, "bench", "--model", str(trained), "--backend", "ort,numpy", "--precision", "fp32,int8",
                         "--sizes", "32", "--min-time", "0", "--warmup", "1", "--gemm-size", "0", "--json")
    assert code == 0, err
    rows = {(r["backend"], r["precision"]): r for r in json.loads(out)["rows"] if r["device"] == "cpu"}
    assert rows[("ort", "int8")]["status"] == "pass" and rows[("ort", "int8")]["vs_fp32"] > 0
    assert rows[("ort", "int8")]["vs_fp32"] == pytest.approx(rows[("ort", "fp32")]["p50_ms"] / rows[("ort", "int8")]["p50_ms"])
    assert rows[("ort", "fp32")]["vs_fp32"] is None
    assert rows[("numpy", "int8")]["status"] == "unavailable" and "float32 only" in rows[("numpy", "int8")]["reason"]


@pytest.mark.parametrize("args", [
    ["export", "{ck}", "-o", "{tmp}/x.onnx", "--precision", "int4"],
    ["export", "{ck}", "-o", "{tmp}/x.onnx", "--precision", "bf16"],  # bf16 is torch's, at run time: no file
    ["export", "{ck}", "-o", "{tmp}/x.onnx", "--calibrate", "{tmp}"],  # --calibrate without int8
    ["export", "{ck}", "-o", "{tmp}/x.onnx", "--precision", "int8", "--half"],
    ["segment", "{tmp}", "--model", "{ck}", "--precision", "fp64"],
    ["segment", "{tmp}", "--model", "{ck}", "--precision", "int8"],  # int8 is an export
    ["bench", "--model", "{ck}", "--precision", "fp32,half"],
    ["bench", "--op", "conv2d", "--precision", "int8"],
])
def test_bad_precision_values_get_one_line_and_exit_2(args, tmp_path, capsys):
    ck = tiny_checkpoint(tmp_path / "m.safetensors", in_channels=3)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    code, out, err = cli(capsys, *[a.format(ck=ck, tmp=tmp_path) for a in args])
    assert code == 2 and out == "", err
    one_error_line(err)
    assert not (tmp_path / "x.onnx").exists()


def test_parse_precisions_keeps_order_and_drops_repeats():
    assert parse_precisions("int8, fp32,int8,BF16") == ["int8", "fp32", "bf16"]
