"""`cvtool bench` and cvtool/timing.py.

(a) The timing statistics on a fake clock (hand-worked medians and percentiles), and the memory probes
    on allocations of known size.
(b) The agreement columns: the real backends pass against the float64 NumPy reference, while fake
    backends registered in the registry (a runner that adds noise, one that raises, one with no runner)
    show as mismatch / failed / unavailable, and the exit code says so.
(c) Output formats (JSON keys, CSV rows, Markdown table, PNG), --op against onnx.reference, --data mIoU
    against an mIoU computed here, unavailable CUDA rows, one-line usage errors.
No assertion depends on how fast anything ran.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import cli, cuda_available, gpu  # tests/ is on sys.path under pytest

import cvtool_backends as registry
from cvtool.cli.bench import compare
from cvtool.timing import gemm_flops, measure, numpy_gemm, rss_bytes, traced_peak
from cvtool_backends.base import Capabilities, Status
from cvtool_backends.numpy_fast import Backend as NumpyBackend

QUICK = ["--sizes", "32", "--min-time", "0.01", "--warmup", "1", "--width", "4", "--gemm-size", "128"]
ROW_KEYS = {"backend", "device", "input", "status", "reason", "providers", "threads", "p50_ms", "p90_ms", "spread",
            "repeats", "images_per_s", "peak_mem_mb", "mem_method", "gflops", "gemm_fraction", "max_abs_diff",
            "max_rel_diff", "label_agreement", "miou", "precision", "vs_fp32"}


def bench_json(capsys, *args: str) -> tuple[int, dict]:
    code, out, err = cli(capsys, "bench", *args, "--json")
    assert code in (0, 1), err
    return code, json.loads(out)


def by_name(doc: dict) -> dict[tuple[str, str], list[dict]]:
    rows: dict[tuple[str, str], list[dict]] = {}
    for r in doc["rows"]:
        rows.setdefault((r["backend"], r["device"]), []).append(r)
    return rows


@pytest.fixture(autouse=True)
def _no_checkpoints(tmp_path, monkeypatch):
    """Run in an empty folder: no runs/train/ here, so the default network is the seeded random one."""
    monkeypatch.chdir(tmp_path)


# --- (a) timing statistics and memory probes ------------------------------------------------------

class FakeClock:
    """Each call to fn() advances the clock by the next duration; the clock itself costs nothing."""

    def __init__(self, durations):
        self.t, self.durations, self.calls = 0.0, list(durations), 0

    def __call__(self) -> float:
        return self.t

    def fn(self) -> None:
        self.t += self.durations[self.calls]
        self.calls += 1


def test_measure_warms_up_then_repeats_until_min_time():
    # 2 warm-up calls (10 s each, untimed), then 1, 2, 3, 4 s: 1+2+3 = 6 < 8, +4 = 10 >= 8 -> 4 timed calls
    clk = FakeClock([10, 10, 1, 2, 3, 4, 100])
    t = measure(clk.fn, min_time=8, warmup=2, min_repeats=3, clock=clk)
    assert clk.calls == 6 and t.times == (1, 2, 3, 4) and t.warmup == 2
    # numpy's linear interpolation on [1, 2, 3, 4]: p50 = 2.5, p90 = 3 + 0.7 = 3.7, p25 = 1.75, p75 = 3.25
    assert t.median == pytest.approx(2.5) and t.p90 == pytest.approx(3.7) and t.min == 1 and t.total == 10
    assert t.spread == pytest.approx((3.25 - 1.75) / 2.5)


def test_measure_keeps_min_repeats_and_max_repeats():
    clk = FakeClock([5.0] * 10)  # each call alone exceeds min_time: still 3 calls
    assert measure(clk.fn, min_time=1, warmup=0, min_repeats=3, clock=clk).n == 3
    clk = FakeClock([0.0] * 100)  # calls that take no time would never reach min_time: capped
    assert measure(clk.fn, min_time=1, warmup=0, min_repeats=3, max_repeats=7, clock=clk).n == 7


def test_traced_peak_sees_numpy_arrays():
    def f():
        a = np.ones(1_000_000, np.float64)  # 8 MB, freed before returning: only the peak remembers it
        return float(a.sum())

    result, peak = traced_peak(f)
    assert result == 1e6 and 8_000_000 <= peak < 9_000_000


def test_rss_sampler_sees_touched_memory():
    """In a fresh process: one that already ran the NumPy backend keeps freed memory resident (cvtool/glibc_malloc.py),
    so a new 64 MB array may reuse pages that RSS already counts."""
    if rss_bytes() is None:
        pytest.skip("no /proc here")
    code = ("import numpy as np\nfrom cvtool.timing import RssSampler, rss_bytes\nbase = rss_bytes()\n"
            "with RssSampler(interval=0.001) as s:\n    a = np.ones(64 * 2**20 // 8)\n    a += 1\n    del a\n"
            "print(s.peak - base)")
    grew = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert grew >= 48 * 2**20


def test_gemm_flops_literal():
    assert gemm_flops(3) == 54  # 27 multiply-adds
    run = numpy_gemm(4, seed=3)
    rng = np.random.default_rng(3)  # the same operands, drawn here: the product itself is checked, not its shape
    a, b = rng.standard_normal((4, 4), dtype=np.float32), rng.standard_normal((4, 4), dtype=np.float32)
    np.testing.assert_allclose(run(), a.astype(np.float64) @ b, rtol=1e-5, atol=1e-5)


# --- (b) agreement columns ------------------------------------------------------------------------

def test_compare_literal_cases():
    ref = np.array([[[[1.0, -2.0]], [[0.5, 4.0]]]])  # (N=1, K=2, H=1, W=2): labels [0, 1]
    ok = compare(ref + 1e-6, ref, 1e-4, labels=True)
    assert ok["status"] == "pass" and ok["max_abs_diff"] == pytest.approx(1e-6)
    assert ok["max_rel_diff"] == pytest.approx(1e-6 / 4) and ok["label_agreement"] == 1.0
    y = ref.copy()
    y[0, 0, 0, 1] = 5.0  # pixel 1 now argmax class 0: one of two labels differs; |5 - (-2)| = 7
    bad = compare(y, ref, 1e-4, labels=True)
    assert bad["status"] == "mismatch" and bad["max_abs_diff"] == 7.0 and bad["label_agreement"] == 0.5
    assert bad["max_rel_diff"] == pytest.approx(7 / 4) and "tolerance" in bad["reason"]
    assert compare(ref[:, :1], ref, 1e-4, labels=True)["status"] == "mismatch"  # wrong shape
    assert compare(np.full_like(ref, np.nan), ref, 1e-4, labels=False)["status"] == "mismatch"


def _noise(y: np.ndarray, scale: float) -> np.ndarray:
    """y plus normal noise of `scale` times max |y| (seeded)."""
    e = np.random.default_rng(1).standard_normal(y.shape)
    return (y + scale * np.abs(y).max() * e).astype(y.dtype)


class NoisyBackend(NumpyBackend):
    """The NumPy backend with noise of 1e-2 of the largest |output| added to its network and conv2d outputs."""

    name, SCALE = "noisy", 1e-2

    def runner(self, spec, params, dtype=np.float32):
        run = super().runner(spec, params, dtype)
        return lambda x: _noise(run(x), self.SCALE)

    def conv2d(self, *args, **kwargs):
        return _noise(super().conv2d(*args, **kwargs), self.SCALE)


class QuietBackend(NoisyBackend):
    """Noise far below the tolerance (1e-4 relative): still a pass."""

    name, SCALE = "quiet", 1e-7


class BrokenBackend(NumpyBackend):
    name = "broken"

    def runner(self, spec, params, dtype=np.float32):
        def run(x):
            raise RuntimeError("kernel exploded")

        return run


class OpsOnlyBackend:
    """A plug-in without networks (no runner)."""

    name, capabilities = "opsonly", Capabilities()

    def __init__(self, device: str = "cpu"):
        self.device = device

    @classmethod
    def status(cls) -> Status:
        return Status(name=cls.name, available=True, devices=("cpu",))


@pytest.fixture
def fakes(monkeypatch):
    extra = {n: f"test_bench:{c}" for n, c in (("noisy", "NoisyBackend"), ("quiet", "QuietBackend"),
                                                ("broken", "BrokenBackend"), ("opsonly", "OpsOnlyBackend"))}
    monkeypatch.setattr(registry, "BUILTIN", {**registry.BUILTIN, **extra})


@pytest.mark.slow
def test_perturbed_backends_show_as_mismatch_failed_unavailable(capsys, fakes):
    code, doc = bench_json(capsys, *QUICK, "--backend", "numpy,noisy,quiet,broken,opsonly", "--device", "cpu")
    rows = {r["backend"]: r for r in doc["rows"]}
    assert code == 1 and doc["ok"] is False  # a mismatch makes the bench fail, after printing everything
    assert rows["numpy"]["status"] == "pass" and rows["numpy"]["max_rel_diff"] < 1e-5
    assert rows["noisy"]["status"] == "mismatch" and rows["noisy"]["max_rel_diff"] > 1e-3
    assert rows["noisy"]["p50_ms"] > 0  # a mismatching row is still timed
    assert rows["quiet"]["status"] == "pass" and 1e-8 < rows["quiet"]["max_rel_diff"] < 1e-4
    assert rows["broken"]["status"] == "failed" and "kernel exploded" in rows["broken"]["reason"]
    assert rows["opsonly"]["status"] == "unavailable" and "runner" in rows["opsonly"]["reason"]


def test_perturbed_op_is_a_mismatch(capsys, fakes):
    code, doc = bench_json(capsys, "--op", "conv2d", "-k", "3", "-p", "1", "-c", "3", "--sizes", "8", "--min-time", "0",
                           "--warmup", "1", "--gemm-size", "0", "--backend", "numpy,noisy", "--device", "cpu")
    rows = {r["backend"]: r["status"] for r in doc["rows"]}
    assert code == 1 and rows == {"onnx.reference": "pass", "numpy": "pass", "noisy": "mismatch"}


# --- (c) the real backends, output formats, options -----------------------------------------------

def test_default_devices_json_csv_markdown_plot(capsys, tmp_path):
    from PIL import Image

    files = {k: tmp_path / f"b.{k}" for k in ("csv", "md", "png")}
    code, doc = bench_json(capsys, *QUICK, "--batch-sizes", "1,2", "--csv", str(files["csv"]),
                           "--markdown", str(files["md"]), "--plot", str(files["png"]))
    assert code == 0 and doc["ok"] and doc["mode"] == "network" and doc["spec"]["width"] == 4
    assert {"gemm", "settings", "machine", "rows", "notes", "tolerance", "gflop_per_image"} <= set(doc)
    rows = by_name(doc)
    # numpy is CPU-only by design: no numpy/cuda row; the CUDA rows say why instead of crashing
    assert set(rows) == {("numpy", "cpu"), ("torch", "cpu"), ("torch", "cuda"), ("ort", "cpu"), ("ort", "cuda")}
    for name in ("torch", "ort"):
        cuda = rows[(name, "cuda")]
        if cuda_available(name):  # measured there, and agreeing
            assert all(r["status"] == "pass" for r in cuda)
        else:
            assert [r["status"] for r in cuda] == ["unavailable"] and "CUDA" in cuda[0]["reason"]
    gemm = doc["gemm"]
    assert {m["backend"] for m in gemm["measured"]} == {"numpy", "torch", "ort"} and gemm["flops"] == 2 * 128**3
    assert gemm["own"] == {m["backend"]: m["gflops"] for m in gemm["measured"] if m["device"] == "cpu"}
    peak = gemm["peak"]["cpu"]
    assert peak["gflops"] is None or (peak["gflops"] > 0 and "estimate" in peak["how"])
    assert gemm["rate"]["cpu"] == max(m["gflops"] for m in gemm["measured"])
    flops_per_image = doc["gflop_per_image"]["32"] * 1e9
    for name in ("numpy", "torch", "ort"):
        assert [r["input"] for r in rows[(name, "cpu")]] == [[1, 3, 32, 32], [2, 3, 32, 32]]
        for r in rows[(name, "cpu")]:
            assert set(r) == ROW_KEYS and r["status"] == "pass" and r["max_rel_diff"] <= doc["tolerance"]
            assert r["label_agreement"] > 0.99 and r["threads"] and r["peak_mem_mb"] is not None
            assert r["p50_ms"] <= r["p90_ms"] and r["repeats"] >= 3
            assert r["images_per_s"] == pytest.approx(1e3 / r["p50_ms"])
            assert r["gflops"] == pytest.approx(flops_per_image * r["images_per_s"] / 1e9)
            assert r["gemm_fraction"] == pytest.approx(r["gflops"] / gemm["rate"]["cpu"])
    assert rows[("ort", "cpu")][0]["providers"] == ["CPUExecutionProvider"]
    with open(files["csv"], newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(doc["rows"]) == 8 and set(table[0]) == ROW_KEYS
    assert [(t["backend"], t["device"], t["status"]) for t in table] == \
        [(r["backend"], r["device"], r["status"]) for r in doc["rows"]]
    md = files["md"].read_text().splitlines()
    head = next(i for i, line in enumerate(md) if line.startswith("| backend |"))
    assert md[head + 1].startswith("|---|") and len([x for x in md if x.startswith("| ")]) == 1 + 8
    assert any(line.startswith("| ort/cuda | - | unavailable |") for line in md)
    with Image.open(files["png"]) as im:
        assert im.format == "PNG" and im.size[0] > 400


@pytest.mark.slow
def test_rounds_pool_every_rows_calls_and_keep_the_best_gemm(capsys, fakes):
    code, doc = bench_json(capsys, *QUICK, "--rounds", "3", "--backend", "numpy,ort,noisy", "--device", "cpu")
    assert code == 1 and doc["settings"]["rounds"] == 3  # noisy is a mismatch in every round
    gemm = doc["gemm"]
    sources = {m["how"] for m in gemm["measured"]}
    assert sorted(m["round"] for m in gemm["measured"]) == [r for r in (1, 2, 3) for _ in sources]  # each, each round
    assert gemm["rate"]["cpu"] == max(m["gflops"] for m in gemm["measured"])
    rows = by_name(doc)
    for name in ("numpy", "ort"):
        (r,) = rows[(name, "cpu")]
        assert set(r) == ROW_KEYS and r["status"] == "pass"
        assert r["repeats"] >= 9  # at least 3 calls a round, pooled
        assert r["gemm_fraction"] == pytest.approx(r["gflops"] / gemm["rate"]["cpu"])
    assert rows[("noisy", "cpu")][0]["status"] == "mismatch"


def test_merge_rounds_takes_the_worst_status():
    from cvtool.cli.bench import merge_rounds

    def doc(status, times):
        row = {"backend": "x", "device": "cpu", "input": [2, 3, 8, 8], "status": status, "reason": None,
               "_times": times, "_flops": 4e9, "p50_ms": None}
        return {"gemm": {"measured": [], "rate": {"cpu": 100.0}}, "settings": {"warmup": 1}, "rows": [row], "ok": True}

    merged = merge_rounds([doc("pass", [1.0, 3.0]), doc("pass", [2.0])])
    (r,) = merged["rows"]
    assert r["repeats"] == 3 and r["p50_ms"] == pytest.approx(1e3 * 2.0 / 2) and r["gflops"] == pytest.approx(2.0)
    assert r["gemm_fraction"] == pytest.approx(0.02) and merged["ok"]
    failed = merge_rounds([doc("pass", [1.0]), doc("failed", None)])
    assert failed["rows"][0]["status"] == "failed" and not failed["ok"]


def test_table_output(capsys):
    code, out, err = cli(capsys, "bench", *QUICK, "--backend", "numpy,torch")
    assert code == 0 and "torch/cpu" in out and "numpy/cpu" in out and "all rows agree" in out
    assert "Traceback" not in err


@pytest.mark.skipif(cuda_available(), reason="a GPU is here: the CUDA rows are measured")
def test_cuda_without_a_gpu_measures_nothing_and_says_so(capsys):
    code, out, err = cli(capsys, "bench", *QUICK, "--backend", "numpy,torch", "--device", "cuda")
    assert "unavailable" in out and "torch/cuda" in out and "numpy/cuda" in out  # shown, with the reason
    assert "all rows agree" not in out  # nothing was measured, so nothing agreed
    assert code == 2 and "nothing was measured" in err and "Traceback" not in err


@gpu
def test_cuda_rows_are_measured_and_agree_on_a_gpu(capsys):
    code, out, err = cli(capsys, "bench", *QUICK, "--backend", "torch,ort", "--device", "cuda")
    assert code == 0 and "all rows agree" in out and "unavailable" not in out


def test_op_transposed_conv_against_onnx_reference(capsys):
    code, doc = bench_json(capsys, "--op", "conv_transpose2d", "-k", "3", "-s", "2", "-p", "1", "--output-padding", "1",
                           "-c", "3", "--sizes", "6,8", "--min-time", "0", "--warmup", "1", "--gemm-size", "0",
                           "--device", "cpu")
    assert code == 0 and doc["mode"] == "op" and doc["layer"]["output_padding"] == [1, 1]
    rows = by_name(doc)
    (onnx_ref,) = rows[("onnx.reference", "cpu")]
    assert onnx_ref["status"] == "pass" and onnx_ref["max_abs_diff"] < 1e-12  # float64 against float64
    for name in ("numpy", "torch", "ort"):
        assert [r["status"] for r in rows[(name, "cpu")]] == ["pass", "pass"]
        r = rows[(name, "cpu")][1]  # 1 x 3 x 8 x 8 in; a tconv's FLOPs: 2 * C * KH * KW * M * H * W
        assert r["gflops"] * 1e9 == pytest.approx(2 * 3 * 9 * 3 * 64 * r["images_per_s"])


def test_op_max_pool_has_no_gemm_fraction(capsys):
    code, doc = bench_json(capsys, "--op", "max_pool2d", "-k", "3", "-s", "2", "-p", "1", "-c", "2", "--sizes", "9",
                           "--min-time", "0", "--warmup", "1", "--device", "cpu", "--backend", "numpy,ort")
    assert code == 0 and doc["gemm"]["measured"] == []
    assert all(r["gemm_fraction"] is None and r["status"] == "pass" for r in doc["rows"])


def test_data_miou_matches_one_computed_here(capsys):
    from cvtool.data import open_datasets
    from cvtool.metrics import SegMetrics
    from cvtool.model.spec import ModelSpec, init_params
    from cvtool_backends.numpy_fast.model import NumpyRunner

    code, doc = bench_json(capsys, *QUICK, "--data", "synth", "--data-limit", "2", "--backend", "numpy,ort",
                           "--device", "cpu")
    assert code == 0 and doc["data_images"] == 2
    _, val, info = open_datasets("synth")
    spec = ModelSpec(in_channels=info.in_channels, num_classes=len(info.classes), width=4)
    run = NumpyRunner(spec, init_params(spec, 0), dtype=np.float64)
    m = SegMetrics(spec.num_classes)
    for i in range(2):  # random weights are benched on the raw [0, 1] pixels (mean 0, std 1)
        m.update(run(val[i].image[None])[0].argmax(0), val[i].mask)
    assert doc["reference_miou"] == pytest.approx(m.summary()["mean_iou"], abs=1e-3)  # the bench reads pixels /255
    for r in doc["rows"]:
        assert r["miou"] == pytest.approx(doc["reference_miou"], abs=0.01)


def test_model_from_a_checkpoint_and_the_latest_run(capsys, tmp_path):
    from cvtool.model.checkpoint import Checkpoint, save
    from cvtool.model.meta import ModelMeta
    from cvtool.model.spec import ModelSpec, init_params

    spec = ModelSpec(in_channels=1, num_classes=2, width=2, depth=1)
    ck = Checkpoint(spec, init_params(spec, 3), ModelMeta(["a", "b"], [[0, 0, 0], [255, 255, 255]], [0.5], [0.25]))
    save(ck, tmp_path / "runs" / "train" / "exp2" / "best.safetensors")
    args = ["--sizes", "16", "--min-time", "0", "--warmup", "1", "--gemm-size", "0", "--backend", "numpy,torch",
            "--device", "cpu"]
    code, doc = bench_json(capsys, *args)  # no --model: the latest run's best
    assert code == 0 and doc["model"].endswith("exp2/best.safetensors") and doc["spec"]["in_channels"] == 1
    assert all(r["input"] == [1, 1, 16, 16] and r["status"] == "pass" for r in doc["rows"])
    code, doc = bench_json(capsys, *args, "--model", "default")
    assert code == 0 and doc["model"].startswith("random") and doc["spec"]["width"] == 16


@pytest.mark.parametrize("args, message", [
    (["--op", "conv3d"], "unknown --op"),
    (["-k", "3"], "-k means nothing without --op"),
    (["--sizes", "30"], "not divisible by 8"),
    (["--sizes", "a,b"], "malformed --sizes"),
    (["--device", "gpu"], "unknown device"),
    (["--backend", "nope"], "unknown backend"),
    (["--warmup", "0"], "at least 1"),
    (["--rounds", "0"], "--rounds"),
    (["--op", "conv2d", "--width", "4"], "takes no --model"),
    (["--model", "missing.safetensors"], "does not exist"),
])
def test_usage_errors_are_one_line(capsys, args, message):
    code, out, err = cli(capsys, "bench", *args)
    assert code == 2 and out == "" and message in err and len(err.strip().splitlines()) == 1
