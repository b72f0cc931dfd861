"""conv2d speed: the NumPy reference backend against torch on the CPU, side by side in one run.

    python benchmarks/conv_numpy_vs_torch.py [--shape 8,16,256,256] [--filters 16] [--kernel 3]
        [--padding 1] [--repeats 7] [--warmup 2] [--pause 0.2] [--dtype float32] [--markdown FILE]

Times forward, backward (dx, dw, db) and forward+backward; each is the median of --repeats runs
after --warmup runs. The two libraries take turns run by run (so that background load on a shared
machine hits both alike), with a --pause between runs: OpenBLAS's and OpenMP's worker threads
spin for a while after a call and would otherwise slow down the other library.
torch's backward is autograd's (y.backward(dout)) on a fresh graph. glibc keeps freed memory, as
the NumPy backend has it (cvtool/glibc_malloc.py).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from cvtool_backends.numpy_fast.conv import conv2d_backward, conv2d_forward  # noqa: E402

PHASES = ("forward", "backward", "forward+backward")


def _numpy_runs(x, w, b, dout, padding):
    def forward():
        return conv2d_forward(x, w, b, padding=padding)

    _, cache = forward()

    def backward():
        return conv2d_backward(dout, cache)

    def both():
        _, c = forward()
        return conv2d_backward(dout, c)

    return {"forward": forward, "backward": backward, "forward+backward": both}


def _torch_runs(x, w, b, dout, padding):
    import torch
    import torch.nn.functional as F

    xt, wt, bt, dt = (torch.from_numpy(a) for a in (x, w, b, dout))

    def graph():
        leaves = [t.detach().requires_grad_() for t in (xt, wt, bt)]
        return F.conv2d(*leaves, padding=padding), leaves

    def forward():
        with torch.no_grad():
            return F.conv2d(xt, wt, bt, padding=padding)

    def both():
        y, leaves = graph()
        y.backward(dt)
        return [t.grad for t in leaves]

    return {"forward": forward, "backward": (graph, lambda y_leaves: y_leaves[0].backward(dt)),
            "forward+backward": both}


def _time(run) -> float:
    """Seconds for one call; a (setup, timed) pair times only the second part."""
    if isinstance(run, tuple):
        setup, timed = run
        arg = setup()
        t0 = time.perf_counter()
        timed(arg)
        return time.perf_counter() - t0
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def measure(args) -> dict[str, dict[str, float]]:
    import torch

    N, C, H, W = args.shape
    rng = np.random.default_rng(0)
    dtype = np.dtype(args.dtype)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((args.filters, C, args.kernel, args.kernel)).astype(dtype)
    b = rng.standard_normal(args.filters).astype(dtype)
    out = conv2d_forward(x[:1], w, b, padding=args.padding)[0]  # dout has the output's shape
    dout = rng.standard_normal((N,) + out.shape[1:]).astype(dtype)
    runs = {"numpy": _numpy_runs(x, w, b, dout, args.padding), "torch": _torch_runs(x, w, b, dout, args.padding)}
    times: dict[str, dict[str, list[float]]] = {lib: {p: [] for p in PHASES} for lib in runs}
    order = list(runs)
    load0 = os.getloadavg()[0]
    for phase in PHASES:
        for k in range(args.warmup + args.repeats):
            for lib in order:
                t = _time(runs[lib][phase])
                if k >= args.warmup:
                    times[lib][phase].append(t)
                time.sleep(args.pause)  # let the other library's worker threads stop spinning
            order.reverse()  # neither always goes first
    load = f"{load0:.1f} before, {os.getloadavg()[0]:.1f} after"  # 1-minute; other work on the machine shows here
    return {lib: {p: statistics.median(ts) for p, ts in per.items()} for lib, per in times.items()} | {
        "_meta": {"torch": torch.__version__, "torch_threads": torch.get_num_threads(), "load": load}}


def cpu_model() -> str:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def machine() -> dict[str, str]:
    from cvtool_backends.numpy_fast.parallel import blas_threads

    return {"cpu": cpu_model(), "cores": str(os.cpu_count()), "numpy": np.__version__,
            "blas threads": str(blas_threads()), "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}


def rows(res) -> list[list[str]]:
    out = []
    for p in PHASES:
        n, t = res["numpy"][p], res["torch"][p]
        out.append([p, f"{n * 1e3:.1f}", f"{t * 1e3:.1f}", f"{n / t:.2f}x"])
    return out


def markdown(args, res, info) -> str:
    N, C, H, W = args.shape
    meta = res["_meta"]
    lines = [
        "## conv2d: NumPy reference vs torch (CPU)", "",
        f"x ({N}, {C}, {H}, {W}) {args.dtype}, w ({args.filters}, {C}, {args.kernel}, {args.kernel}), "
        f"padding {args.padding}; median of {args.repeats} runs after {args.warmup} warm-up runs, "
        f"the two taking turns, {args.pause} s apart.", "",
        f"Machine: {info['cpu']}, {info['cores']} cores, load average {meta['load']}; "
        f"numpy {info['numpy']} (BLAS threads {info['blas threads']}), "
        f"torch {meta['torch']} ({meta['torch_threads']} threads), Python {info['python']}; {info['date']}.", "",
        "| phase | numpy ms | torch ms | numpy / torch |", "|---|---:|---:|---:|",
    ]
    lines += [f"| {' | '.join(r)} |" for r in rows(res)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="8,16,256,256", help="N,C,H,W of the input")
    ap.add_argument("--filters", type=int, default=16)
    ap.add_argument("--kernel", type=int, default=3)
    ap.add_argument("--padding", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--pause", type=float, default=0.2, help="seconds between runs")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--markdown", metavar="FILE", help="also write the results as a markdown section to FILE")
    args = ap.parse_args(argv)
    try:
        args.shape = tuple(int(v) for v in args.shape.split(","))
        assert len(args.shape) == 4
    except (ValueError, AssertionError):
        ap.error(f"--shape needs N,C,H,W, got {args.shape!r}")
    from cvtool.glibc_malloc import keep_freed_memory

    keep_freed_memory()  # as the NumPy backend sets it up (backends/numpy_fast/__init__.py, cvtool/glibc_malloc.py)
    res = measure(args)
    info = machine()
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=f"conv2d x {args.shape} {args.dtype}, k {args.kernel}, {args.filters} filters "
                        f"({info['cpu']}, {info['cores']} cores, load {res['_meta']['load']})", title_justify="left")
        for col in ("phase", "numpy ms", "torch ms", "numpy / torch"):
            t.add_column(col, justify="left" if col == "phase" else "right")
        for r in rows(res):
            t.add_row(*r)
        Console().print(t)
    except ImportError:
        for r in [["phase", "numpy ms", "torch ms", "numpy / torch"]] + rows(res):
            print("  ".join(f"{v:>18}" for v in r))
    if args.markdown:
        Path(args.markdown).write_text(markdown(args, res, info))
        print(f"wrote {args.markdown}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
