"""The habits of a well-kept project, in the fast tier: mypy (pyproject [tool.mypy]) finds nothing in cvtool/ and
backends/, whose built-ins are checked against the Protocols of backends/base.py (backends/conformance.py says which
class is what); and that check is real: a probe that breaks the contract is refused.

backends/ is imported as cvtool_backends (pyproject package-dir), a mapping mypy cannot read: each test links
cvtool_backends -> backends in a folder of its own and puts that on MYPYPATH. The cache is the repository's
.mypy_cache (git-ignored): the first run analyses torch and numpy too, the runs after it only what changed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A Runner where a Trainer is wanted: mypy must know both classes (cvtool_backends resolved, not Any) and say so.
PROBE = """\
from cvtool_backends.base import Trainer
from cvtool_backends.numpy_fast import Backend

trainer: Trainer = Backend().runner(None, {})
"""


def mypy(tmp_path: Path, *targets: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "cvtool_backends").symlink_to(ROOT / "backends", target_is_directory=True)
    env = {**os.environ, "MYPYPATH": str(shim)}
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(ROOT / ".mypy_cache"), *targets],
                          cwd=ROOT, env=env, capture_output=True, text=True)


def test_mypy_finds_nothing(tmp_path):
    r = mypy(tmp_path, "-p", "cvtool", "-p", "cvtool_backends")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success: no issues found" in r.stdout


def test_mypy_refuses_a_broken_contract(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    r = mypy(tmp_path, str(probe))
    assert r.returncode == 1, r.stdout + r.stderr
    # the file's name only: mypy's cache may name the folder of an earlier run whose probe had the same text
    assert "probe.py:4: error: Incompatible types in assignment" in r.stdout, r.stdout
    assert '"NumpyRunner"' in r.stdout and '"Trainer"' in r.stdout, r.stdout
