"""Start-up stays light: the CLI and every convcalc mode but --verify leave torch, onnxruntime and
onnx unloaded (and numpy too, except --matrix), and the labelling tools' readers (pycocotools, yaml) too.
Checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import contextlib, io, json, sys
import cvtool.cli
from cvtool.cli import main
args = json.loads(sys.argv[1])
HEAVY = ("torch", "onnxruntime", "onnx", "numpy", "pycocotools", "yaml")
loaded = {"import": sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)}
for a in args:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            main(a)
        except SystemExit as e:
            code = e.code
    loaded[" ".join(a)] = [code, sorted({m.split(".")[0] for m in sys.modules} & set(HEAVY))]
print(json.dumps(loaded))
"""


def probe(runs: list[list[str]]) -> dict:
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(runs)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


LIGHT = [
    ["--help"],
    ["data", "--help"],
    ["convcalc", "--help"],
    ["convcalc", "-i", "32", "-k", "3"],
    ["convcalc", "-k", "2", "-s", "2"],
    ["convcalc", "-i", "32", "-k", "4", "--same"],
    ["convcalc", "-i", "32", "-o", "16", "--solve"],
    ["convcalc", "-i", "32", "-c", "3", "--chain", "conv k3 p1 c8; pool k2 s2; tconv k2 s2"],
    ["convcalc", "-i", "32", "-k", "3", "-t", "-s", "2", "--json"],
    ["convcalc", "-i", "3", "-k", "5"],  # an error
]
EXIT = {"convcalc -i 3 -k 5": 2}  # every other run succeeds


def test_cli_and_convcalc_modes_import_nothing_heavy():
    res = probe(LIGHT)
    assert res.pop("import") == []
    for run, (code, mods) in res.items():
        assert (code or 0) == EXIT.get(run, 0), run
        assert mods == [], f"{run!r} imported {mods}"


def test_matrix_imports_numpy_and_verify_the_backend():
    """--matrix needs numpy only; --verify really does load torch (so the probe can see an import)."""
    res = probe([["convcalc", "--matrix", "-i", "4", "-k", "3"],
                 ["convcalc", "-i", "8", "-k", "3", "--verify", "--backend", "numpy,torch"]])
    assert res["convcalc --matrix -i 4 -k 3"] == [0, ["numpy"]]
    code, mods = res["convcalc -i 8 -k 3 --verify --backend numpy,torch"]
    assert code == 0 and "torch" in mods


def test_backward_loads_only_the_backends_with_a_backward():
    """--backward reads every backend's capabilities, but runs (and so imports the framework of) only those with a
    backward: torch's autograd, not ONNX Runtime."""
    res = probe([["convcalc", "-i", "4", "-k", "3", "--backward"]])
    code, mods = res["convcalc -i 4 -k 3 --backward"]
    assert code == 0 and "torch" in mods and "onnxruntime" not in mods and "onnx" not in mods, mods
