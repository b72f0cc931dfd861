"""Shared fixtures: one `backend` fixture parametrised over every built-in backend, and the tolerance
each one is held to.

torch and ort are installed here, so they must never be skipped silently: if they are unavailable the
test fails. numpy (backends/numpy_fast) is skipped while it is unavailable.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import cvtool_backends as registry

# ../shared from the repository root; a checkout elsewhere (a git worktree) names it with CVTOOL_SHARED
DATASETS = Path(os.environ.get("CVTOOL_SHARED", Path(__file__).resolve().parents[1].parent / "shared")) / "datasets"


def cuda_available(name: str = "torch") -> bool:
    """Whether backend `name` really has a CUDA device here (tests that expect none are skipped where it does)."""
    return "cuda" in registry.status(name).devices


gpu = pytest.mark.gpu  # needs a usable GPU: skipped elsewhere (pytest -m gpu runs only these)


def pytest_collection_modifyitems(config, items):
    if not cuda_available():
        skip = pytest.mark.skip(reason="needs a usable CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def shared_dataset(name: str) -> Path:
    """A real data set from ../shared/datasets. Missing: skipped on a developer's checkout, a failure under CI
    (CI lays shared/ beside the clone, so a missing one means the tests would silently not run)."""
    path = DATASETS / name
    if not (path / "images").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI must have ../shared/datasets beside the clone")
        pytest.skip(f"{path} absent")
    return path

BACKENDS = ("numpy", "torch", "ort", "naive")
MUST_RUN = BACKENDS  # all four are built in and installed here: one that does not load fails, never skips

# Tolerance per backend for float32 results against float64 oracles and hand-worked literals (inputs
# and weights are scaled so that outputs are O(1)). All three compute in float32 and differ only in
# summation order: numpy (one matmul per kernel offset), torch (oneDNN), ort (MLAS, fused
# multiply-add). Worst case seen over 400 hypothesis examples per op and backend: 4.9e-7 absolute,
# at most 0.14 of these tolerances.
TOL: dict[str, dict[str, float]] = {
    "numpy": {"rtol": 2e-6, "atol": 2e-6},
    "torch": {"rtol": 2e-6, "atol": 2e-6},
    "ort": {"rtol": 2e-6, "atol": 2e-6},
    "naive": {"rtol": 2e-6, "atol": 2e-6},  # one tensordot per output: the same float32 sums, in another order
}


def load_backend(name: str, device: str = "cpu"):
    try:
        st = registry.status(name)
    except Exception as e:  # a plug-in that does not import: skipped; a built-in: a failure
        if name in MUST_RUN:
            raise
        pytest.skip(f"backend {name!r} does not load: {type(e).__name__}: {e}")
    if not st.available:
        if name in MUST_RUN:
            pytest.fail(f"backend {name!r} must be available here: {st.reason}")
        pytest.skip(f"backend {name!r} unavailable: {st.reason}")
    return registry.get(name, device)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request):
    """An instance of each built-in backend on the CPU (session-scoped: hypothesis tests may use it)."""
    return load_backend(request.param)


def assert_close(actual, expected, tol: dict[str, float], what: str = "") -> None:
    """Same shape, and values within tol; the message says what differs and by how much."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), err_msg=what, **tol)


@pytest.fixture(scope="session")
def close(backend):
    """close(actual, expected, what): assert_close with this backend's tolerance."""
    return lambda actual, expected, what="": assert_close(actual, expected, TOL[backend.name], f"{backend.name} {what}")


@pytest.fixture(autouse=True)
def budget_starts_at_the_call(monkeypatch):
    """`cvtool train --time` counts from its process's start (cvtool.cli.train.process_age); called in-process, the
    process is pytest, started minutes before: the budget counts from the call instead."""
    monkeypatch.setattr("cvtool.cli.train.process_age", lambda: 0.0)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """The console script in-process (main() with its own error handling): (exit code, stdout, stderr)."""
    from cvtool.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    out, err = capsys.readouterr()
    return e.value.code, out, err


class FakeClock:
    """A clock that moves `tick` seconds each time it is read: budgets tested without waiting for them."""

    def __init__(self, tick: float):
        self.t, self.tick = 1000.0, tick

    def __call__(self) -> float:
        self.t += self.tick
        return self.t

    def start(self) -> dict:
        """clock= and t0= for train(): the budget counts from now, on this clock."""
        return {"clock": self, "t0": self()}


@pytest.fixture(autouse=True, scope="session")
def onnx_exports_in_tmp(tmp_path_factory):
    """The ort backend's export cache (runs/.cache/onnx under the working folder) kept out of the repository."""
    from cvtool_backends.ort_backend import export_cache

    export_cache.CACHE = tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(autouse=True)
def budgets_start_now(monkeypatch):
    """`cvtool train` run in-process counts its budget from the process start, which is pytest's: from now instead."""
    import cvtool.cli.train

    monkeypatch.setattr(cvtool.cli.train, "process_age", lambda: 0.0)


def one_line(err: str) -> str:
    """The single `error: ...` line a refused command prints on stderr (no traceback, nothing else)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]
