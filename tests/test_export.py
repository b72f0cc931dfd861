"""`cvtool export`: one self-contained ONNX file with dynamic shapes and metadata, a parity report that
catches a tampered weight, float16, opsets, checkpoints from both trainers, and every bad input.

Oracles: the NumPy reference in float64 and onnx.reference.ReferenceEvaluator (ONNX's own evaluator).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import cuda_available  # tests/ is on sys.path under pytest
from onnx import TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator
from test_data_cli import cli  # tests/ is on sys.path under pytest
from test_inference import tiny_checkpoint

import cvtool_backends as registry
from cvtool import __version__
from cvtool.cli import main
from cvtool.cli.models import file_digest, open_model
from cvtool.model import checkpoint as ckpt_io
from cvtool.model.meta import ModelMeta
from cvtool_backends.onnx_format.export import INPUT, OUTPUT, read_meta
from cvtool_backends.onnx_format.opset import newest_opset


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ck") / "m.safetensors", in_channels=3, num_classes=4)


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory) -> tuple[Path, dict, str]:
    """The default export, verified: (file, JSON report, stderr). capsys is per test: redirect instead."""
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    so, se = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(so), contextlib.redirect_stderr(se), pytest.raises(SystemExit) as e:
        main(["export", str(ckpt), "-o", str(out), "--json"])
    assert e.value.code == 0, se.getvalue()
    return out, json.loads(so.getvalue()), se.getvalue()


def reference64(ckpt_path: Path, x: np.ndarray) -> np.ndarray:
    ck = ckpt_io.load(ckpt_path)
    return registry.get("numpy", "cpu").runner(ck.spec, ck.params, dtype=np.float64)(x.astype(np.float64))


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_export_is_one_checked_file_with_a_passing_report(exported):
    path, doc, err = exported
    assert err == ""  # --json: nothing but the JSON document, no noise of our own or of the frameworks
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.onnx"]  # no side file, no temp left
    m = onnx.load(str(path), load_external_data=False)
    onnx.checker.check_model(m, full_check=True)
    assert all(t.data_location == TensorProto.DEFAULT and not t.external_data for t in m.graph.initializer)
    assert doc["opset"] == newest_opset() == m.opset_import[0].version and doc["passed"] and doc["checker"] == "passed"
    runs = sorted({r["backend"] for r in doc["verify"]})
    expected = sorted(["numpy", "ort cpu", "torch"] + (["ort cuda"] if cuda_available("ort") else [])
                      + (["torch cuda"] if cuda_available("torch") else []))
    assert runs == expected  # every way this machine can run the model
    assert len(doc["verify"]) == 3 * len(expected) and {r["shape"][0] for r in doc["verify"]} == {1, 2}
    for r in doc["verify"]:
        assert r["ok"] and r["max_rel"] < 1e-5 and r["label_agreement"] == 1.0
    (inp,), (outp,) = m.graph.input, m.graph.output
    assert (inp.name, outp.name) == (INPUT, OUTPUT) == ("image", "logits")
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert dims(inp) == ["batch", 3, "height", "width"] and dims(outp) == ["batch", 4, "height", "width"]


def test_dynamic_shapes_in_ort_and_onnx_reference(exported, ckpt):
    path = exported[0]
    run = registry.get("ort", "cpu").load_onnx(path)
    rng = np.random.default_rng(3)
    for n, h, w in [(1, 4, 4), (3, 8, 12), (2, 36, 20), (1, 100, 4)]:
        x = rng.standard_normal((n, 3, h, w)).astype(np.float32)
        ref = reference64(ckpt, x)
        got = run(x)
        assert got.shape == (n, 4, h, w) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
    x = rng.standard_normal((2, 3, 12, 8)).astype(np.float32)
    ev = ReferenceEvaluator(onnx.load(str(path)))
    np.testing.assert_allclose(ev.run(None, {INPUT: x})[0], reference64(ckpt, x), rtol=1e-4, atol=1e-5)


def test_metadata_round_trip(exported, ckpt):
    path = exported[0]
    meta = read_meta(onnx.load(str(path), load_external_data=False))
    ck = ckpt_io.load(ckpt)
    assert meta["spec"] == ck.spec.to_dict() and meta["classes"] == ck.meta.classes and meta["colors"] == ck.meta.colors
    assert meta["normalization"] == {"mean": ck.meta.mean, "std": ck.meta.std}
    assert meta["cvtool_version"] == __version__ and meta["source_sha256"] == file_digest(ckpt)
    assert (meta["input"], meta["output"], meta["half"]) == ("image", "logits", False)
    m = open_model(path)  # the .onnx alone gives back the network, its weights and its labels
    assert m.kind == "onnx" and m.spec == ck.spec and m.meta == ck.meta  # the same record from either file
    assert m.params.keys() == ck.params.keys()
    for k, v in ck.params.items():
        np.testing.assert_array_equal(m.params[k], v)


def test_reading_an_export_loads_no_runtime(exported):
    """open_model (segment, bench, export --verify-only) reads an .onnx with `onnx` alone: no onnxruntime, no torch."""
    import subprocess
    import sys

    code = (f"import sys; from cvtool.cli.models import open_model; m = open_model({str(exported[0])!r}); "
            "print(m.kind, [k for k in ('onnxruntime', 'torch') if k in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["onnx", "[]"]


def test_tampered_initializer_fails_the_parity_check(exported, ckpt, tmp_path, capsys):
    from cvtool.cli.export import parity_report

    path = exported[0]
    code, out, err = cli(capsys, "export", str(ckpt), "-o", str(path), "--verify-only", "--json")
    assert code == 0 and json.loads(out)["passed"] and json.loads(out)["same_source"]
    m = onnx.load(str(path))
    t = next(t for t in m.graph.initializer if t.name == "dec0.conv2.weight")
    a = numpy_helper.to_array(t).copy()
    a.flat[7] += 0.25  # one weight of 16 * 8 * 9
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    bad = tmp_path / "tampered.onnx"
    onnx.save(m, str(bad))
    rows = parity_report(open_model(ckpt), bad, half=False)
    assert all(r["ok"] for r in rows if r["backend"] != "ort cpu")
    assert not any(r["ok"] for r in rows if r["backend"] == "ort cpu")
    code, out, err = cli(capsys, "export", str(ckpt), "-o", str(bad), "--verify-only")
    assert code == 1 and "NO" in out
    assert one_error_line(err) == f"error: {bad} does not match {ckpt} within tolerance"
    assert bad.read_bytes() == onnx.load(str(bad)).SerializeToString()  # --verify-only writes nothing


def test_verify_only_refuses_another_network(exported, tmp_path, capsys):
    other = tiny_checkpoint(tmp_path / "o.safetensors", in_channels=3, num_classes=3)
    code, _, err = cli(capsys, "export", str(other), "-o", str(exported[0]), "--verify-only")
    assert code == 1 and "holds another network" in one_error_line(err)
    code, _, err = cli(capsys, "export", str(other), "-o", str(tmp_path / "none.onnx"), "--verify-only")
    assert code == 2 and "does not exist" in one_error_line(err)


def test_failed_verification_writes_nothing(ckpt, tmp_path, capsys, monkeypatch):
    from cvtool.compare import TOLERANCE, Tolerance

    monkeypatch.setitem(TOLERANCE, "float32 logits", Tolerance(max_rel=0.0, labels=1.0))  # nothing passes
    out = tmp_path / "m.onnx"
    code, stdout, err = cli(capsys, "export", str(ckpt), "-o", str(out))
    assert code == 1 and f"{out} not written" in one_error_line(err) and "NO" in stdout
    assert list(tmp_path.iterdir()) == []


def test_half_export(ckpt, tmp_path, capsys):
    out = tmp_path / "h.onnx"
    code, stdout, err = cli(capsys, "export", str(ckpt), "-o", str(out), "--half", "--json")
    assert code == 0, err
    doc = json.loads(stdout)
    assert doc["half"] and doc["passed"]
    rows = {(r["backend"], tuple(r["shape"])): r for r in doc["verify"]}
    ref = [r for (b, _), r in rows.items() if b == "onnx.ref fp16"]
    assert len(ref) == 1 and ref[0]["tol_rel"] == 2e-2  # float16 arithmetic, checked on the first shape
    assert 1e-5 < ref[0]["max_rel"] < 2e-2  # really rounded to float16, and still close
    m = onnx.load(str(out))
    assert {t.data_type for t in m.graph.initializer} == {TensorProto.FLOAT16}
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT  # float32 in and out
    assert read_meta(m)["half"] is True
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 12)).astype(np.float32)
    got = registry.get("ort", "cpu").load_onnx(out)(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, reference64(ckpt, x), atol=2e-2 * np.abs(got).max())
    code, stdout, _ = cli(capsys, "export", str(ckpt), "-o", str(out), "--verify-only", "--json")
    assert code == 0 and any(r["backend"] == "onnx.ref fp16" for r in json.loads(stdout)["verify"])


def test_opsets(ckpt, tmp_path, capsys):
    out = tmp_path / "o13.onnx"
    code, stdout, err = cli(capsys, "export", str(ckpt), "-o", str(out), "--opset", "13", "--json")
    assert code == 0 and json.loads(stdout)["passed"], err
    assert onnx.load(str(out)).opset_import[0].version == 13
    for bad in ("7", str(newest_opset() + 1)):
        code, _, err = cli(capsys, "export", str(ckpt), "-o", str(tmp_path / "x.onnx"), "--opset", bad)
        assert code == 2 and "opset" in one_error_line(err)
    assert not (tmp_path / "x.onnx").exists()


def test_human_output_is_a_table_and_one_line(ckpt, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code, stdout, err = cli(capsys, "export", str(ckpt), "-o", str(out), "--no-verify")
    assert code == 0 and stdout == ""
    assert err.strip().splitlines() == [f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, opset {newest_opset()}); "
                                        "onnx.checker passed"]


@pytest.mark.parametrize("trainer", ["numpy", "torch"])
def test_checkpoints_trained_by_either_backend(trainer, tmp_path, capsys):
    """A few real optimiser steps (BatchNorm statistics updated) by each trainer, saved, exported, verified."""
    from cvtool.model.spec import ModelSpec, init_params
    from cvtool.train.optim import OptimConfig

    spec = ModelSpec(in_channels=1, num_classes=2, width=4, depth=2)
    tr = registry.get(trainer, "cpu").trainer(spec, init_params(spec, 1), optim=OptimConfig(name="adam"), seed=0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.standard_normal((2, 1, 16, 16)).astype(np.float32)
        tr.step(x, (x[:, 0] > 0).astype(np.int64), 1e-2)
    ck = ckpt_io.Checkpoint(spec, tr.params(), ModelMeta(["bg", "fg"], [[0, 0, 0], [255, 0, 0]], [0.5], [0.25]))
    path = ckpt_io.save(ck, tmp_path / "t.safetensors")
    assert np.abs(ck.params["enc0.bn1.running_mean"]).max() > 0  # trained, not the initial state
    code, stdout, err = cli(capsys, "export", str(path), "-o", str(tmp_path / "t.onnx"), "--json")
    assert code == 0 and json.loads(stdout)["passed"], err


def test_bad_inputs_one_line_and_no_file(ckpt, tmp_path, capsys):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, not a checkpoint")
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    a_file = tmp_path / "plain.txt"
    a_file.write_text("x")
    (tmp_path / "dir.onnx").mkdir()
    out = str(tmp_path / "out.onnx")
    cases = [([str(text), "-o", out], "notes.safetensors is not a readable safetensors checkpoint"),
             ([str(cut), "-o", out], "cut.safetensors"),
             ([str(tmp_path / "none.safetensors"), "-o", out], "does not exist"),
             ([str(tmp_path / "x.onnx"), "-o", out], "already an ONNX file"),
             ([str(ckpt), "-o", "/proc/cvtool-test.onnx"], "cannot write /proc/cvtool-test.onnx"),
             ([str(ckpt), "-o", str(a_file / "m.onnx")], "cannot write"),
             ([str(ckpt), "-o", str(tmp_path / "dir.onnx")], "is a folder"),
             ([str(ckpt), "-o", str(ckpt)], "overwrite the checkpoint")]
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, needle in cases:
        code, stdout, err = cli(capsys, "export", *args)
        assert code == 2 and needle in one_error_line(err) and stdout == "", (args, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial or temporary file anywhere
    assert not Path("/proc/cvtool-test.onnx").exists()
    assert ckpt_io.load(ckpt).params  # the checkpoint is intact
