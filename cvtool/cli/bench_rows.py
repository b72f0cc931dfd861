"""The rows of `cvtool bench`: one (backend, device, input) timed against the float64 reference, its memory probed,
rounds merged, and the GEMM rate the GFLOP/s are set against (cvtool/cli/bench.py: the command)."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from cvtool.cli.output import err

if TYPE_CHECKING:
    import numpy as np

    from cvtool.model.spec import ModelSpec

MB = 1024 * 1024


class BenchNet(NamedTuple):
    """The network benched, as cli/models.runner_for takes it: an .onnx runs as that file where a backend can."""

    spec: ModelSpec
    params: dict[str, np.ndarray]
    path: Path
    kind: str  # "checkpoint" | "onnx"


class NotSupported(Exception):
    """The backend has no way to run what is benched (no network runner, no layer operations): unavailable."""


# --- one row ----------------------------------------------------------------------------------

def new_row(name: str, dev: str, shape, status: str, reason: str | None = None) -> dict[str, Any]:
    keys = ("providers", "threads", "p50_ms", "p90_ms", "spread", "repeats", "images_per_s", "peak_mem_mb",
            "mem_method", "gflops", "gemm_fraction", "max_abs_diff", "max_rel_diff", "label_agreement", "miou")
    return {"backend": name, "device": dev, "precision": "fp32", "input": None if shape is None else list(shape),
            "status": status, "reason": reason, **dict.fromkeys(keys)}


def error_text(e: BaseException) -> str:
    from cvtool.errors import CvtoolError

    return e.message if isinstance(e, CvtoolError) else f"{type(e).__name__}: {e}".splitlines()[0][:200]


def compare(y, ref, tol, labels: bool) -> dict[str, Any]:
    """max |y - ref|, that over max |ref| (cvtool.compare), the share of pixels with the same argmax class;
    pass when rel <= tol (a float, or a cvtool.compare.Tolerance: a reduced precision's, labels included)."""
    from cvtool.compare import Tolerance
    from cvtool.compare import compare as agree

    a = agree(y, ref, tol if isinstance(tol, Tolerance) else Tolerance(max_rel=tol), labels=labels)
    if a.max_abs is None:  # shapes or infinities differ: no error to measure
        return {"status": "mismatch", "reason": a.reason}
    res = {"max_abs_diff": a.max_abs, "max_rel_diff": a.max_rel, "status": "pass" if a.ok else "mismatch"}
    if labels:
        res["label_agreement"] = a.labels
    if not a.ok:
        res["reason"] = a.reason
    return res


def _probe(name: str, be, run: Callable, x, weight_bytes: int, base_rss: int | None):
    """The first warm-up call, measuring memory: (output, MB, method)."""
    from cvtool import timing
    from cvtool_backends import REFERENCE
    from cvtool_backends.base import hook

    if be.device == "cuda":
        peak_memory = hook(be, "peak_memory")
        if peak_memory is None:
            return run(x), None, "not measured (backend has no peak_memory hook)"
        y, peak = peak_memory(lambda: run(x))
        return y, peak / MB, "device peak (peak_memory hook)"
    if name == REFERENCE:  # its arrays are traced; the weights were allocated before, so they are added
        y, peak = timing.traced_peak(lambda: run(x))
        return y, (peak + weight_bytes) / MB, "tracemalloc peak + weights"
    with timing.RssSampler() as s:
        y = run(x)
    if base_rss is None or s.method != "rss":
        return y, None, "not measured (no /proc)"
    return y, max(s.peak - base_rss, 0) / MB, "RSS growth"


def time_row(row: dict, name: str, be, run: Callable, x, ref, cfg: dict, *, flops: int, gemm_rate: float | None,
             weight_bytes: int, base_rss: int | None, tol, labels: bool) -> dict:
    """Warm up (the first call measures memory and gives the output checked), then time; fills `row`."""
    from cvtool import timing

    y, row["peak_mem_mb"], row["mem_method"] = _probe(name, be, run, x, weight_bytes, base_rss)
    row.update(compare(y, ref, tol, labels))
    t = timing.measure(lambda: run(x), min_time=cfg["min_time"], warmup=cfg["warmup"] - 1)
    row.update(_times=list(t.times), _flops=flops)  # for merge_rounds
    _speed(row, t, gemm_rate)
    return row


def _speed(row: dict, t, gemm_rate: float | None) -> None:
    """The row's speed columns from its timed calls t (seconds per call of its batch)."""
    N, flops = row["input"][0], row["_flops"]
    row.update(p50_ms=1e3 * t.median / N, p90_ms=1e3 * t.p90 / N, spread=t.spread, repeats=t.n,
               images_per_s=N / t.median, gflops=flops / t.median / 1e9)
    if gemm_rate and flops:
        row["gemm_fraction"] = row["gflops"] / gemm_rate


STATUS_RANK = {"failed": 3, "mismatch": 2, "pass": 1, "unavailable": 0}


def merge_rounds(docs: list[dict]) -> dict:
    """Rounds of one bench, taken in turns (--rounds): each row's timed calls pooled over the rounds (median, p90 and
    spread of all of them), the GEMM rate the best of every round's; agreement, memory and mIoU from the first round,
    unless a later round's status is worse (failed > mismatch > pass), which then stands for the row."""
    import copy

    from cvtool import timing

    doc = copy.deepcopy(docs[0])
    gemm = doc["gemm"]
    gemm["measured"] = [{**m, "round": k + 1} for k, d in enumerate(docs) for m in d["gemm"]["measured"]]
    gemm["rate"] = {dev: max(d["gemm"]["rate"].get(dev, 0.0) for d in docs)
                    for dev in {dev for d in docs for dev in d["gemm"]["rate"]}}
    gemm["own"] = {b: max(d["gemm"].get("own", {}).get(b, 0.0) for d in docs)
                   for b in {b for d in docs for b in d["gemm"].get("own", {})}}  # each library's best round
    for i, row in enumerate(doc["rows"]):
        same = [d["rows"][i] for d in docs]
        worst = max(same, key=lambda r: STATUS_RANK.get(r["status"], 0))
        if STATUS_RANK.get(worst["status"], 0) > STATUS_RANK.get(row["status"], 0):
            doc["rows"][i] = copy.deepcopy(worst)
            continue
        if all(r.get("_times") for r in same):
            pooled = timing.Timing(tuple(x for r in same for x in r["_times"]), doc["settings"]["warmup"])
            _speed(row, pooled, gemm["rate"].get(row["device"]))
    doc["ok"] = not any(r["status"] in ("mismatch", "failed") for r in doc["rows"])
    return doc


def backend_rows(registry, name: str, dev: str, make: Callable, points: list, cfg: dict, *, flops: Callable,
                 gemm: dict, weight_bytes: int, tol, labels: bool, after: Callable | None = None,
                 precision: str = "fp32") -> list[dict]:
    """Every point (x, ref) on one backend and device, in one precision. make(be) -> run(x); after(run) -> extra
    fields (mIoU)."""
    from cvtool import timing
    from cvtool.cli.convcalc.common import backend_status
    from cvtool.errors import BackendUnavailable
    from cvtool_backends.base import RunnerInfo

    def new(shape, status: str, reason: str | None = None) -> dict:
        return {**new_row(name, dev, shape, status, reason), "precision": precision}

    st = backend_status(registry, name)
    if not st.available:
        return [new(None, "unavailable", st.reason)]
    try:
        be = registry.get(name, dev)
    except Exception as e:  # BackendUnavailable: no GPU, or a CPU-only backend asked for CUDA
        return [new(None, "unavailable", error_text(e))]
    _set_threads(be, cfg["threads"])
    gc.collect()
    timing.release_free_memory()  # so that memory freed by earlier rows does not hide this one's growth
    base_rss = timing.rss_bytes()
    err().print(f"[dim]bench: {name}/{dev}{'' if precision == 'fp32' else ' ' + precision} ...[/]")
    try:
        run = make(be)
    except NotSupported as e:
        return [new(None, "unavailable", str(e))]
    except BackendUnavailable as e:  # this precision cannot run here: the backend's reason
        return [new(None, "unavailable", e.message)]
    except Exception as e:
        return [new(None, "failed", error_text(e))]
    info = run if isinstance(run, RunnerInfo) else None  # ORT: what the session really uses
    providers = info.providers if info else None
    used_threads = (info.threads if info else None) or (st.threads if name == registry.REFERENCE else cfg["threads"])
    rows = []
    for x, ref in points:
        row = new(x.shape, "failed")
        row.update(providers=list(providers) if providers else None, threads=used_threads)
        try:
            time_row(row, name, be, run, x, ref, cfg, flops=flops(x), gemm_rate=gemm["rate"].get(dev),
                     weight_bytes=weight_bytes, base_rss=base_rss, tol=tol, labels=labels)
        except Exception as e:  # a backend's failure is a row of the table, not a crash
            row["status"], row["reason"] = "failed", error_text(e)
        rows.append(row)
    if after is not None:  # after the timed rows, so that larger data images do not inflate their memory
        try:
            extra = after(run)
        except Exception as e:
            extra = {"reason": f"mIoU failed: {error_text(e)}"}
        for row in rows:
            row.update(extra if not row["reason"] else {k: v for k, v in extra.items() if k != "reason"})
    del run
    gc.collect()  # free this backend's buffers (and ORT's spinning threads) before the next one
    return rows


def _set_threads(be, n: int) -> None:
    from cvtool_backends.base import hook

    set_threads = hook(be, "set_threads")
    if set_threads is not None:
        set_threads(n)


# --- the GEMM rate ------------------------------------------------------------------------------

def gemm_rates(registry, targets: list[tuple[str, str]], cfg: dict) -> dict:
    """float32 (n x n) @ (n x n) through NumPy and each benched backend's gemm hook (torch, ORT) on each device;
    rate = the best per device."""
    from cvtool import timing
    from cvtool.cli.convcalc.common import backend_status
    from cvtool_backends.base import hook

    n = cfg["gemm_size"]
    doc: dict[str, Any] = {"n": n, "flops": timing.gemm_flops(n) if n else 0, "measured": [], "rate": {}}
    if not n:
        return doc
    sources: list[tuple[str, str, str, Callable]] = [("numpy", "cpu", "numpy.matmul", timing.numpy_gemm(n, cfg["seed"]))]
    for name, dev in targets:
        if not backend_status(registry, name).available:
            continue
        try:
            be = registry.get(name, dev)
        except Exception:
            continue
        gemm = hook(be, "gemm")
        if gemm is not None:  # the NumPy backend has none: numpy.matmul above is its rate
            _set_threads(be, cfg["threads"])
            sources.append((name, dev, f"{name} matmul", gemm(n)))
    for name, dev, how, fn in sources:
        err().print(f"[dim]bench: GEMM {n}x{n} {how} on {dev} ...[/]")
        t = timing.measure(fn, min_time=cfg["min_time"], warmup=cfg["warmup"])
        rate = doc["flops"] / t.median / 1e9
        doc["measured"].append({"backend": name, "device": dev, "how": how, "gflops": rate, "median_ms": 1e3 * t.median,
                                "spread": t.spread, "repeats": t.n})
        doc["rate"][dev] = max(doc["rate"].get(dev, 0.0), rate)
    doc["own"] = {m["backend"]: m["gflops"] for m in doc["measured"] if m["device"] == "cpu"}  # each library's own rate
    doc["peak"] = {"cpu": timing.cpu_peak_gflops(cfg["threads"])}
    return doc


# --- the ONNX reference row of an operation bench ----------------------------------------------

def op_flops(lspec, x_shape, M: int, o) -> int:
    """Multiply-adds x 2 for convolutions (as cvtool.model.spec counts them); comparisons for max pooling."""
    N, C, H, W = x_shape
    KH, KW = lspec.kernel
    if lspec.kind == "conv":
        return 2 * N * C * KH * KW * M * o[0] * o[1]
    if lspec.kind == "tconv":
        return 2 * N * C * KH * KW * M * H * W
    return N * C * o[0] * o[1] * (KH * KW - 1)


def onnx_reference(lspec, x, w, b) -> Any:
    """The operation as a one-node ONNX model (backends/onnx_format/graphs.py) run by onnx.reference, in float64."""
    import numpy as np
    from onnx.reference import ReferenceEvaluator

    from cvtool.convcalc.chain import output_hw
    from cvtool_backends.onnx_format import graphs

    (pt, pb), (pl, pr) = output_hw(lspec, x.shape[2:])[1]
    common = dict(strides=lspec.stride, pads=(pt, pl, pb, pr), dilations=lspec.dilation, dtype=np.float64)
    if lspec.kind == "maxpool":
        model, feeds = graphs.max_pool(kernel=lspec.kernel, ceil_mode=int(lspec.ceil_mode), **common), {"x": x}
    else:
        build = graphs.conv if lspec.kind == "conv" else graphs.conv_transpose
        extra = {"output_padding": lspec.output_padding} if lspec.kind == "tconv" else {}
        model = build(C=x.shape[1], M=b.shape[0], kernel=lspec.kernel, group=1, bias=True, **common, **extra)
        feeds = {"x": x, "w": w, "b": b}
    y = ReferenceEvaluator(model).run(None, feeds)
    assert isinstance(y, list)  # the outputs in order (a dict only with intermediate=True)
    return y[0]


def onnx_reference_row(lspec, size: int, C: int, ref_be, tol: float, seed: int) -> dict:
    """Correctness only, on a small input (onnx.reference is pure Python): 1 image, <= 4 channels, <= 32 pixels."""
    import numpy as np

    from cvtool.convcalc.chain import output_hw
    from cvtool.convcalc.verify import run_layer
    from cvtool.errors import UsageError

    s = size
    if size > 32:
        try:
            output_hw(lspec, (32, 32))
            s = 32
        except UsageError:
            pass
    c = min(C, 4)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((1, c, s, s))
    w = rng.standard_normal((c, c, *lspec.kernel)) / np.sqrt(c * lspec.kernel[0] * lspec.kernel[1])
    b = rng.standard_normal(c)
    row = new_row("onnx.reference", "cpu", x.shape, "failed")
    try:
        row.update(compare(onnx_reference(lspec, x, w, b), np.asarray(run_layer(ref_be, lspec, x, w, b)), tol, False))
        row["reason"] = row["reason"] or "correctness only, on a small input: onnx.reference is slow"
    except Exception as e:
        row["reason"] = error_text(e)
    return row


def fits_in_memory(needs: list, cfg: dict, extra: str = "") -> None:
    """The inputs and references kept for every row, and the GEMM's three n x n operands, must fit in memory."""
    from cvtool.footprint import array, require

    n = cfg["gemm_size"]
    require(needs + ([array("the GEMM operands", (3, n, n), 4)] if n else []),
            doing=f"bench at --sizes {','.join(map(str, cfg['sizes']))} --batch-sizes "
                  f"{','.join(map(str, cfg['batch_sizes']))}{extra}",
            hint="use smaller --sizes, --batch-sizes, -c or --gemm-size")


# --- the machine a bench ran on --------------------------------------------------------------------

def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average: other work on the machine shows in every timing, so it is recorded."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        return None
