"""`cvtool bench`: every backend on every device timed on the same input, and checked against the float64 NumPy reference.

    cvtool bench                                   the default network (latest checkpoint, or seeded random weights)
    cvtool bench --sizes 128,256 --batch-sizes 1,8 --plot bench.png
    cvtool bench --op conv_transpose2d -k 3 -s 2 -p 1 --output-padding 1 -c 32

A row is (backend, device, input). Its status: pass (max |y - ref| / max |ref| <= tolerance), mismatch,
failed (the backend raised) or unavailable (with the reason). Speed is latency per image (median, p90,
spread), images/s, GFLOP/s from the spec's FLOP count, and that as a fraction of this machine's float32
GEMM rate measured in the same run. Timing: warm-up calls, then calls until --min-time; runners return
host arrays, so every CUDA call is synchronised; ORT on CUDA runs with IO binding, torch in channels_last.

Optional backend hooks (cvtool_backends.base.HOOKS), used where a backend has them:
    gemm(n) -> callable             one float32 (n x n) @ (n x n) on the backend's device, returning when done
    peak_memory(fn) -> (fn(), bytes)  device memory peak during fn (CUDA)
    set_threads(n)                  --threads;  load_onnx(path): a --model .onnx runs as that file
A backend without `gemm` adds no GEMM source: NumPy's matmul and the others' set the rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from cvtool.bounds import COUNT, DEPTH, INT32_MAX, NON_NEGATIVE, SEED, Bound, check_all
from cvtool.cli.bench_report import render, write_csv, write_markdown, write_plot
from cvtool.cli.bench_rows import (
    BenchNet,
    NotSupported,
    backend_rows,
    compare,
    cpu_count,
    cpu_name,
    gemm_rates,
    load_average,
    merge_rounds,
    onnx_reference_row,
    op_flops,
)
from cvtool.cli.options import number
from cvtool.cli.output import emit_json, err

if TYPE_CHECKING:

    from cvtool_backends.base import Backend


OPS = {"conv2d": (False, None), "conv_transpose2d": (True, None), "max_pool2d": (False, "max")}


def bench(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Checkpoint or .onnx; 'default': seeded random "
                                        "weights. Default: the latest training run's best, else random weights."),
    backend: str = typer.Option("all", "--backend", help="all, or a list such as numpy,torch,ort."),
    device: str = typer.Option("all", "--device", help="all, cpu or cuda."),
    sizes: str = typer.Option("256", "--sizes", help="Square input sizes, e.g. 128,256,512."),
    batch_sizes: str = typer.Option("1", "--batch-sizes", help="Batch sizes, e.g. 1,8."),
    min_time: float = number(1.0, "--min-time", bound=NON_NEGATIVE, help="Seconds of timed calls per row (at least 3 calls)."),
    warmup: int = number(2, "--warmup", bound=COUNT, help="Untimed calls first (at least 1: it also measures memory)."),
    threads: Optional[int] = number(None, "--threads", bound=Bound(lo=1, hi=1024, integer=True),
                                    help="Threads for torch and ORT (default: the CPUs here)."),
    data: Optional[str] = typer.Option(None, "--data", help="A dataset ('synth' or a folder): adds mIoU per backend."),
    data_limit: int = number(16, "--data-limit", bound=COUNT, help="--data: at most this many validation images."),
    width: Optional[int] = number(None, "--width", bound=COUNT, help="Random network: base width (default 16)."),
    depth: Optional[int] = number(None, "--depth", bound=DEPTH, help="Random network: depth (default 3)."),
    seed: int = number(0, "--seed", bound=SEED, help="Seed of the random weights and inputs."),
    gemm_size: int = number(2048, "--gemm-size", bound=Bound(lo=0, hi=INT32_MAX, integer=True),
                            help="n of the n x n float32 GEMM measured (0: skip)."),
    precision: str = typer.Option("fp32", "--precision", help="Precisions to time side by side, e.g. fp32,fp16,"
                                  "int8,bf16: a row per backend and precision it runs (cli/bench_precision.py)."),
    rounds: int = number(1, "--rounds", bound=COUNT, help="Measure everything N times, taking turns, and pool each "
                         "row's calls: steadier ratios on a busy machine."),
    op: Optional[str] = typer.Option(None, "--op", help="One operation instead: conv2d, conv_transpose2d, max_pool2d."),
    kernel: Optional[str] = typer.Option(None, "--kernel", "-k", help="--op: kernel size [3]."),
    stride: Optional[str] = typer.Option(None, "--stride", "-s", help="--op: stride [1; pools: the kernel]."),
    padding: str = typer.Option("0", "--padding", "-p", help="--op: p, PHxPW, top,bottom,left,right, same, valid."),
    dilation: str = typer.Option("1", "--dilation", "-d", help="--op: dilation."),
    output_padding: str = typer.Option("0", "--output-padding", help="--op conv_transpose2d: output_padding."),
    channels: int = number(16, "--channels", "-c", bound=COUNT, help="--op: input (and output) channels."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write the rows as CSV."),
    markdown: Optional[Path] = typer.Option(None, "--markdown", help="Also write the table as Markdown."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also write a PNG: latency and throughput by size."),
) -> None:
    """Time every backend and device on the same input and prove they agree with the float64 NumPy reference."""
    from cvtool.errors import UsageError
    from cvtool.model.precision import parse_precisions

    precisions = parse_precisions(precision)
    if device not in ("all", "cpu", "cuda"):
        raise UsageError(f"unknown device {device!r}", hint="use all, cpu or cuda")
    cfg = {"sizes": _ints(sizes, "--sizes"), "batch_sizes": _ints(batch_sizes, "--batch-sizes"), "min_time": min_time,
           "warmup": warmup, "threads": threads or cpu_count(), "seed": seed, "gemm_size": gemm_size, "load": load_average(),
           "rounds": rounds, "precisions": precisions}
    if op is not None:
        if precisions != ["fp32"]:
            raise UsageError("--precision times networks: --op benches one float32 operation")
        if op not in OPS:
            raise UsageError(f"unknown --op {op!r}", hint=f"use one of {', '.join(OPS)}")
        if model is not None or data is not None or width is not None or depth is not None:
            raise UsageError("--op benches one operation: it takes no --model, --data, --width or --depth")
        docs = [op_bench(op, cfg, backend, device, kernel, stride, padding, dilation, output_padding, channels)
                for _ in range(rounds)]
    else:
        given = {"-k": kernel, "-s": stride, "--output-padding": None if output_padding == "0" else output_padding,
                 "-p": None if padding == "0" else padding, "-d": None if dilation == "1" else dilation}
        for flag, v in given.items():
            if v is not None:
                raise UsageError(f"{flag} means nothing without --op")
        docs = [network_bench(cfg, backend, device, model, width, depth, data, data_limit) for _ in range(rounds)]
    from cvtool.cli.bench_precision import add_ratios

    doc = merge_rounds(docs) if rounds > 1 else docs[0]
    add_ratios(doc["rows"])
    for r in doc["rows"]:  # the raw calls stay inside
        r.pop("_times", None)
        r.pop("_flops", None)
    if json_:
        emit_json(doc)
    else:
        render(doc)
    if csv_path is not None:
        write_csv(doc, csv_path)
    if markdown is not None:
        write_markdown(doc, markdown)
    if plot is not None:
        write_plot(doc, plot)
    if not doc["ok"]:
        raise typer.Exit(1)
    if not any(r["status"] != "unavailable" for r in doc["rows"]):
        from cvtool.errors import UsageError

        reasons = sorted({r.get("reason") or "" for r in doc["rows"]})
        raise UsageError("nothing was measured: every backend and device asked for is unavailable here"
                         + (f" ({reasons[0]})" if reasons and reasons[0] else ""), hint="drop --device cuda, or see 'cvtool backends'")


# --- options ----------------------------------------------------------------------------------

def _ints(text: str, what: str) -> list[int]:
    from cvtool.errors import UsageError

    try:
        vals = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise UsageError(f"malformed {what} {text!r}", hint="a comma-separated list such as 128,256") from None
    if not vals:
        raise UsageError(f"{what} needs positive whole numbers, got {text!r}")
    check_all(what, vals, Bound(lo=1, integer=True))  # no upper bound: what fits in memory is checked later
    return sorted(set(vals), key=vals.index)


def _targets(registry, backend: str, device: str, networks: bool = False) -> list[tuple[str, str]]:
    """(backend, device) pairs to bench. A CPU-only backend gets no cuda row, and with networks=True a backend
    of operations only (capabilities.extra["networks"] False) no row at all, unless asked for by name."""
    devices = ["cpu", "cuda"] if device == "all" else [device]
    out = []
    for n in registry.parse_list(backend):
        caps = _capabilities(registry, n)
        if backend.strip().lower() == "all" and networks and caps is not None and not caps.extra.get("networks", True):
            continue
        for d in devices:
            cpu_only = caps is not None and caps.extra.get("cpu_only", False)
            if not (cpu_only and d == "cuda" and device == "all"):
                out.append((n, d))
    return out


def _capabilities(registry, name: str):
    try:
        return registry.backend_class(name).capabilities
    except Exception:  # a backend that does not import: its row says why
        return None


# --- the network --------------------------------------------------------------------------------

def _network(model: str | None, width, depth, seed: int, info) -> dict:
    """{spec, params, source, mean, std, onnx}: a checkpoint / .onnx, or seeded random weights."""
    from cvtool.cli.models import latest_checkpoint, open_model
    from cvtool.errors import UsageError
    from cvtool.footprint import require
    from cvtool.model.footprint import weights_need
    from cvtool.model.spec import ModelSpec, init_params

    path = None
    if model not in (None, "default"):
        if width is not None or depth is not None:
            raise UsageError("--width and --depth shape a random network: drop them or --model")
        path = Path(model)
    elif model is None and width is None and depth is None:
        try:
            path = latest_checkpoint()
        except UsageError:
            path = None
    if path is not None:
        m = open_model(path)
        if m.precision == "int8":  # no float weights for the reference to check it against
            raise UsageError(f"{m.path} is an int8 export: bench it through its checkpoint",
                             hint="--model CHECKPOINT --precision fp32,int8 (calibrated as cvtool export does)")
        return {"spec": m.spec, "params": m.params, "source": str(m.path), "mean": m.meta.mean, "std": m.meta.std,
                "onnx": m.path if m.kind == "onnx" else None, "precision": m.precision, "meta": m.meta,
                "data": m.data}
    kw = {k: v for k, v in (("width", width), ("depth", depth)) if v is not None}
    if info is not None:
        kw.update(in_channels=info.in_channels, num_classes=len(info.classes))
    spec = ModelSpec(**kw)
    require([weights_need(spec)], doing=f"bench --width {spec.width}", hint="use a smaller --width")
    C = spec.in_channels
    return {"spec": spec, "params": init_params(spec, seed), "source": f"random weights (seed {seed})",
            "mean": [0.0] * C, "std": [1.0] * C, "onnx": None}


def _eval_set(ds, info, limit: int, net: dict) -> list:
    """[(x (C, H, W) normalised, mask)] of the first `limit` images of ds."""
    import numpy as np

    from cvtool.errors import DataError
    from cvtool.model.inference import prepare

    spec = net["spec"]
    if len(info.classes) != spec.num_classes:
        raise DataError(f"the dataset has {len(info.classes)} classes, the network {spec.num_classes}")
    items = []
    for i in range(min(limit, len(ds))):
        s = ds[i]
        raw = np.round(s.image.transpose(1, 2, 0) * 255).astype(np.uint8)  # back to the file's pixels
        items.append((prepare(raw, spec.in_channels, net["mean"], net["std"], name=s.name).x, s.mask))
    return items


def _miou(run, items: list, spec) -> float:
    from cvtool.metrics import SegMetrics
    from cvtool.model.inference import predict_batch

    m = SegMetrics(spec.num_classes)
    for x, mask in items:
        m.update(predict_batch(run, [x], spec.multiple)[0].argmax(0), mask)
    return m.summary()["mean_iou"]


def network_bench(cfg: dict, backend: str, device: str, model, width, depth, data, data_limit: int) -> dict:
    import numpy as np

    import cvtool_backends as registry
    from cvtool.cli.bench_precision import calibration, maker, tolerance
    from cvtool.cli.bench_rows import fits_in_memory
    from cvtool.cli.convcalc.common import backend_status
    from cvtool.cli.models import runner_for
    from cvtool.convcalc.verify import RTOL
    from cvtool.footprint import array
    from cvtool.model.footprint import unet_needs
    from cvtool.model.spec import total_flops
    from cvtool_backends.base import Runs, hook

    ds = info = None
    if data is not None:
        from cvtool.data import open_datasets

        train, val, info = open_datasets(data)
        ds = val if len(val) else train  # validation images; the training ones when there are none
    net = _network(model, width, depth, cfg["seed"], info if model in (None, "default") else None)
    spec, params = net["spec"], net["params"]
    per_image = {S: total_flops(spec, (S, S)) for S in cfg["sizes"]}  # also: a size the net cannot take -> error
    kept = [need for S in cfg["sizes"] for B in cfg["batch_sizes"]
            for need in (array("an input", (B, spec.in_channels, S, S), 4),
                         array("its float64 reference logits", (B, spec.num_classes, S, S), 8))]
    fits_in_memory(kept + unet_needs(spec, max(cfg["batch_sizes"]), max(cfg["sizes"]), max(cfg["sizes"]), itemsize=8),
                   cfg)
    targets = _targets(registry, backend, device, networks=True)
    ref_run = registry.reference().runner(spec, params, dtype=np.float64)
    rng = np.random.default_rng(cfg["seed"])
    points = []
    for S in cfg["sizes"]:
        for B in cfg["batch_sizes"]:
            x = rng.standard_normal((B, spec.in_channels, S, S), dtype=np.float32)
            err().print(f"[dim]bench: float64 reference {B}x{spec.in_channels}x{S}x{S} ...[/]")
            points.append((x, ref_run(x)))
    items = _eval_set(ds, info, data_limit, net) if data is not None else None
    ref_miou = _miou(ref_run, items, spec) if items else None
    del ref_run
    gemm = gemm_rates(registry, targets, cfg)

    opened = BenchNet(spec, params, net["onnx"] or Path(), "onnx" if net["onnx"] is not None else "checkpoint")

    def make(be: Backend):
        if not (isinstance(be, Runs) and be.capabilities.extra.get("networks", True) or hook(be, "load_onnx")):
            raise NotSupported("no network runner")
        return runner_for(be, opened)

    weight_bytes = sum(int(np.prod(s)) for s in spec.param_shapes().values()) * 4
    calib = calibration(net, data, cfg["sizes"], cfg["seed"])
    rows = []
    for name, dev in targets:
        st = backend_status(registry, name)
        here = st.available and dev in st.devices  # else one row says why, not one per precision
        for p in cfg["precisions"] if here else cfg["precisions"][:1]:
            rows += backend_rows(registry, name, dev, maker(p, make, net, calib), points, cfg,
                                 flops=lambda x: per_image[x.shape[2]] * x.shape[0], gemm=gemm,
                                 weight_bytes=weight_bytes, tol=tolerance(p, RTOL), labels=True, precision=p,
                                 after=(lambda run: {"miou": _miou(run, items, spec)}) if items else None)
    s = spec
    what = {"model": net["source"], "spec": s.to_dict(), "params": s.num_params(),
            "gflop_per_image": {str(S): f / 1e9 for S, f in per_image.items()},
            "title": f"U-Net width {s.width} depth {s.depth} {s.activation}, norm {s.norm}, "
                     f"{s.in_channels} -> {s.num_classes} classes ({net['source']})"}
    if items is not None:  # with --data
        what.update(data=data, data_images=len(items), reference_miou=ref_miou)
    return _doc("network", what, cfg, gemm, rows, RTOL)


# --- one operation ------------------------------------------------------------------------------

def op_bench(op: str, cfg: dict, backend: str, device: str, kernel, stride, padding, dilation, output_padding,
             C: int) -> dict:
    import numpy as np

    import cvtool_backends as registry
    from cvtool.cli.bench_rows import fits_in_memory
    from cvtool.cli.convcalc.common import layer_spec
    from cvtool.convcalc.chain import output_hw
    from cvtool.convcalc.text import params_text
    from cvtool.convcalc.verify import RTOL, run_layer
    from cvtool.footprint import array

    transposed, pool = OPS[op]
    lspec = layer_spec(kernel, stride, padding, dilation, transposed, output_padding, pool, False, default_kernel="3")
    for S in cfg["sizes"]:
        output_hw(lspec, (S, S))  # a size the operation cannot take -> UsageError now
    KH, KW = lspec.kernel
    kept = [need for S in cfg["sizes"] for B in cfg["batch_sizes"]
            for need in (array("an input", (B, C, S, S), 4),
                         array("its float64 reference output", (B, C, *output_hw(lspec, (S, S))[0]), 8))]
    fits_in_memory([array("the float64 weights", (C, C, KH, KW), 8), *kept], cfg, f" -c {C}")
    rng = np.random.default_rng(cfg["seed"])
    w = (rng.standard_normal((C, C, KH, KW)) / np.sqrt(C * KH * KW)).astype(np.float32)  # OIHW, or IOHW for tconv
    b = rng.standard_normal(C).astype(np.float32)
    ref_be = registry.get(registry.REFERENCE, "cpu")
    w64, b64 = w.astype(np.float64), b.astype(np.float64)
    points = []
    for S in cfg["sizes"]:
        for B in cfg["batch_sizes"]:
            x = rng.standard_normal((B, C, S, S), dtype=np.float32)
            points.append((x, np.asarray(run_layer(ref_be, lspec, x.astype(np.float64), w64, b64))))
    targets = _targets(registry, backend, device)
    gemm = gemm_rates(registry, targets, cfg if lspec.kind != "maxpool" else {**cfg, "gemm_size": 0})  # pools: no GEMM work

    def make(be):
        if not be.capabilities.ops:
            raise NotSupported("no layer operations")
        limit = be.capabilities.extra.get("max_outputs")
        if limit and max(p[1].size for p in points) > limit:
            raise NotSupported(f"too large for its loops (at most {limit:,} outputs): try --sizes 16 --batch-sizes 1")
        return lambda x: run_layer(be, lspec, x, w, b)

    rows = [onnx_reference_row(lspec, cfg["sizes"][0], C, ref_be, RTOL, cfg["seed"])]
    for name, dev in targets:
        rows += backend_rows(registry, name, dev, make, points, cfg,
                             flops=lambda x: op_flops(lspec, x.shape, C, output_hw(lspec, x.shape[2:])[0]), gemm=gemm,
                             weight_bytes=0 if lspec.kind == "maxpool" else w.nbytes + b.nbytes, tol=RTOL, labels=False)
    what = {"op": op, "layer": lspec.to_dict(), "channels": C,
            "title": f"{op}: {params_text(lspec)}, {C} channels in and out"}
    return _doc("op", what, cfg, gemm, rows, RTOL)


# --- the document (its renderings: bench_report.py) -------------------------------------------

def _doc(mode: str, what: dict, cfg: dict, gemm: dict, rows: list[dict], tol: float) -> dict:
    import platform

    from cvtool.cli.bench_precision import notes as precision_notes

    notes = ["latency and throughput per image (a batch's time / its size); spread = IQR / median of the timed calls",
             "GFLOP/s: convolution FLOPs from the spec (a multiply-add counts 2) / median time; "
             "% GEMM: that over the best float32 GEMM rate measured on the same device in this run",
             f"status pass: max |y - ref| / max |ref| <= {tol:g}; ref = the NumPy backend in float64 on the same input",
             "peak MB: numpy: tracemalloc peak of its arrays during one call + the weights; other CPU rows: growth of "
             "the process's resident set (sampled every 2 ms during one call) over the RSS before the backend was "
             "built (freed heap first returned with malloc_trim): weights, arenas and caches count, spikes < 2 ms may not; "
             "CUDA: the backend's peak_memory hook",
             "CUDA calls return host arrays, so their timing includes synchronisation and the copy back; "
             "ORT on CUDA runs with IO binding; torch runs in channels_last",
             f"threads: set to {cfg['threads']} for torch and ORT; NumPy's BLAS keeps the count it started with",
             *precision_notes(cfg.get("precisions", ["fp32"]), tol)]
    return {"mode": mode, **what, "settings": cfg, "gemm": gemm, "tolerance": tol,
            "machine": {"cpu": cpu_name() or platform.machine(), "cpus": cpu_count(), "platform": platform.platform(),
                        "python": platform.python_version(), "load_1min": {"start": cfg.get("load"), "end": load_average()}},
            "rows": rows, "notes": notes, "ok": not any(r["status"] in ("mismatch", "failed") for r in rows)}


__all__ = ["bench", "network_bench", "op_bench", "compare", "gemm_rates"]
