"""`cvtool backends`, the registry (names, get, devices, parse_list) and third-party plug-ins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnxruntime
import pytest
import torch
from conftest import cli as run_cli  # tests/ is on sys.path under pytest

import cvtool_backends as registry
from cvtool.cli import output
from cvtool.errors import BackendUnavailable, UsageError
from cvtool_backends.base import Backend as BackendProtocol

PLUGIN = Path(__file__).parent / "plugin" / "toy_backend.py"


def has_cuda(name: str) -> bool:
    return "cuda" in registry.status(name).devices


# --- cvtool backends ------------------------------------------------------------------------------

def test_backends_json(capsys):
    code, out, _ = run_cli(capsys, "backends", "--json")
    assert code == 0
    doc = {b["name"]: b for b in json.loads(out)["backends"]}  # stdout is one JSON document, nothing else
    assert list(doc)[:3] == ["numpy", "torch", "ort"]

    t = doc["torch"]
    assert t["available"] and t["version"] == torch.__version__
    assert "cpu" in t["devices"] and t["threads"] == torch.get_num_threads()

    o = doc["ort"]
    assert o["available"] and o["version"] == onnxruntime.__version__
    assert "cpu" in o["devices"] and "CPUExecutionProvider" in o["providers"]
    assert isinstance(o["threads"], int) and o["threads"] >= 1
    if not has_cuda("ort"):  # the GPU wheel lists CUDA as available; a session here does not use it
        assert "CUDAExecutionProvider" not in o["providers"] and "cuda" not in o["devices"]
        assert any("no NVIDIA GPU" in n or "falls back" in n or "fails" in n for n in o["notes"])


def test_backends_table(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich reads the width when its console is made
    monkeypatch.setattr(output, "_out", None)
    code, out, _ = run_cli(capsys, "backends")
    assert code == 0
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 2}
    assert {"torch", "ort"} <= set(rows)
    assert torch.__version__ in rows["torch"] and f"{torch.get_num_threads()} threads" in rows["torch"]
    assert onnxruntime.__version__ in rows["ort"] and "CPUExecutionProvider" in rows["ort"]
    assert "yes" in rows["torch"] and "yes" in rows["ort"]


# --- registry -------------------------------------------------------------------------------------

def test_unknown_backend_is_usage_error():
    with pytest.raises(UsageError, match="unknown backend 'nope'"):
        registry.get("nope")
    with pytest.raises(UsageError, match="unknown backend 'nope'"):
        registry.parse_list("torch,nope")
    with pytest.raises(UsageError, match="unknown device"):
        registry.get("torch", "tpu")


def test_parse_list():
    assert registry.parse_list("all") == registry.names() == registry.parse_list(" ALL ")
    assert registry.names()[:3] == ["numpy", "torch", "ort"]
    assert registry.parse_list(" torch , ort,") == ["torch", "ort"]


@pytest.mark.parametrize("name", ["torch", "ort"])
def test_cuda_without_gpu_is_a_clear_error(name):
    b = registry.get(name, "auto")
    assert isinstance(b, BackendProtocol) and b.name == name
    if has_cuda(name):
        pytest.skip("a usable CUDA GPU is here")
    assert b.device == "cpu"  # auto falls back to the CPU
    with pytest.raises(BackendUnavailable, match="CUDA"):
        registry.get(name, "cuda")
    with pytest.raises(BackendUnavailable):
        registry.backend_class(name)(device="cuda")  # also when built directly, not through the registry


@pytest.mark.parametrize("module, heavy", [
    ("cvtool.cli", ("torch", "onnx", "onnxruntime")),  # start-up: `cvtool --help`, `cvtool convcalc`
    ("cvtool_backends.torch_backend", ("onnx", "onnxruntime")),
    ("cvtool_backends.ort_backend", ("torch", "onnx", "onnxruntime")),  # its class and capabilities: frameworks load on use
    ("cvtool_backends.onnx_format.export", ("torch", "onnxruntime")),  # building or reading a file: onnx alone
])
def test_imports_stay_light(module, heavy):
    code = (f"import sys, cvtool_backends as backends, cvtool_backends.base, cvtool, {module}; backends.names(); "
            f"print([m for m in {heavy!r} if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", f"importing {module} loads {r.stdout.strip()}"


# --- plug-ins -------------------------------------------------------------------------------------

def install_plugin(root: Path, entries: str) -> Path:
    """What `pip install cvtool-toy` would leave in site-packages: a module and its *.dist-info."""
    root.mkdir()
    (root / "toy_backend.py").write_text(PLUGIN.read_text())
    dist = root / "cvtool_toy-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cvtool-toy\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[cvtool.backends]\n" + entries)
    return root


ENTRIES = ("toy = toy_backend:Backend\n"
           "broken = toy_backend_missing:Backend\n"  # a plug-in whose module is gone: listed, not available
           "torch = toy_backend:Backend\n")  # a plug-in may not replace a built-in


@pytest.mark.slow
def test_plugin_listed_by_cvtool_backends(tmp_path):
    root = install_plugin(tmp_path / "site", ENTRIES)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    r = subprocess.run([sys.executable, "-m", "cvtool", "backends", "--json"], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    doc = {b["name"]: b for b in json.loads(r.stdout)["backends"]}
    assert list(doc) == ["numpy", "torch", "ort", "naive", "broken", "toy"]  # built-ins first, then plug-ins sorted
    assert doc["toy"]["available"] and doc["toy"]["version"] == "0.1" and doc["toy"]["devices"] == ["cpu"]
    assert not doc["broken"]["available"] and "toy_backend_missing" in doc["broken"]["reason"]
    assert doc["torch"]["version"] == torch.__version__  # still the real torch backend


def test_plugin_through_registry(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(install_plugin(tmp_path / "site", ENTRIES)))
    monkeypatch.delitem(sys.modules, "toy_backend", raising=False)
    try:
        assert "toy" in registry.names() and "toy" in registry.parse_list("all")
        b = registry.get("toy", "auto")
        assert isinstance(b, BackendProtocol) and b.name == "toy" and b.device == "cpu"
        assert b.relu([-1.0, 2.0]).tolist() == [0.0, 2.0]
        with pytest.raises(BackendUnavailable):
            registry.get("toy", "cuda")
        with pytest.raises(BackendUnavailable, match="not available"):
            registry.get("broken")
        assert registry.backend_class("torch").__module__ == "cvtool_backends.torch_backend"
    finally:
        sys.modules.pop("toy_backend", None)
