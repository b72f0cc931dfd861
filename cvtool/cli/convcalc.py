"""`cvtool convcalc`: convolution arithmetic explained with the numbers substituted.

Modes (picked by the options given):
    -k 2 -s 2                      o as a function of i, conv and transposed conv, over common sizes
    -i 32 -k 3 -p 1                the output size, formula with the numbers in (--transposed, --pool)
    -i 32 -k 4 --same              the padding that keeps the size (and what 'same' means for s > 1)
    -i 32 -o 16 -k 3 [--solve]     paddings (and kernel/stride choices) that give the output
    -i 64 --chain "conv k3 p1 c16; pool k2 s2"   shapes and receptive fields through a stack
    --matrix --x ... --w ...       the convolution as its matrix C (and C^T for --transposed)
    --steps --x ... --w ...        every output written as its sum with the numbers (pooling: the winner)
    -i 32 -k 3 --verify            run it on every backend, compare with the NumPy reference
Only --matrix, --steps and --verify import numpy, only --verify imports a backend (convcalc_matrix.py, convcalc_verify.py).
"""

from __future__ import annotations

from typing import Any, Optional

import typer

from cvtool import arithmetic as A
from cvtool.chain import POOLS, LayerSpec, make_layer, output_hw, parse_ints, parse_padding
from cvtool.cli.output import emit_json, out
from cvtool.errors import CvtoolError, UsageError

COMMON_SIZES = (7, 8, 28, 32, 64, 224, 256)


def convcalc(
    input: Optional[str] = typer.Option(None, "--input", "-i", help="Input size: 32 or HxW (224x160)."),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="Wanted output size: solve for the padding."),
    kernel: Optional[str] = typer.Option(None, "--kernel", "-k", help="Kernel size: 3 or KHxKW."),
    stride: Optional[str] = typer.Option(None, "--stride", "-s", help="Stride (default 1; pools: the kernel)."),
    padding: str = typer.Option("0", "--padding", "-p", help="p, PHxPW, top,bottom,left,right, same or valid."),
    dilation: str = typer.Option("1", "--dilation", "-d", help="Dilation: 2 or DHxDW."),
    transposed: bool = typer.Option(False, "--transposed", "-t", help="Transposed convolution."),
    output_padding: str = typer.Option("0", "--output-padding", help="Transposed convolution: output_padding."),
    pool: Optional[str] = typer.Option(None, "--pool", help="Pooling instead: max or avg."),
    ceil_mode: bool = typer.Option(False, "--ceil-mode", help="Pooling: round up (PyTorch ceil_mode)."),
    same: bool = typer.Option(False, "--same", help="The padding that keeps the size, explained."),
    solve: bool = typer.Option(False, "--solve", help="With -i and -o: also search kernel 1..11, stride 1..4."),
    chain: Optional[str] = typer.Option(None, "--chain", help='Layers: "conv k3 p1 c16; pool k2 s2; tconv k2 s2 c8".'),
    channels: Optional[int] = typer.Option(None, "--channels", "-c", help="--chain: input channels."),
    matrix: bool = typer.Option(False, "--matrix", help="Show the convolution as its matrix C (small sizes)."),
    steps: bool = typer.Option(False, "--steps", help="Write every output as its sum with the numbers (small sizes)."),
    draw: Optional[str] = typer.Option(None, "--draw", help="Draw the layer: FILE.png, .gif (a frame per output) or .svg."),
    backward: bool = typer.Option(False, "--backward", help="Forward, backward (dL/dx, dL/dw, dL/db) and update on the numbers."),
    dy: Optional[str] = typer.Option(None, "--dy", help="--backward: the upstream gradient dL/dy (default all ones)."),
    lr: float = typer.Option(0.1, "--lr", help="--backward: the learning rate of the update w - lr * dL/dw."),
    activation: Optional[str] = typer.Option(None, "--activation", help="--backward: relu | sigmoid | tanh instead of a layer."),
    x: Optional[str] = typer.Option(None, "--x", help="--matrix/--steps/--backward input: '4,5;1,8' (rows by ';') or a .npy file."),
    w: Optional[str] = typer.Option(None, "--w", help="--matrix/--steps kernel: '1,4;1,4' or a .npy file."),
    seed: int = typer.Option(0, "--seed", help="Seed of the generated values (--matrix, --steps, --verify)."),
    verify: bool = typer.Option(False, "--verify", help="Run it on every backend and compare with NumPy."),
    backend: str = typer.Option("all", "--backend", help="--verify: all, or a list such as numpy,torch,ort."),
    device: str = typer.Option("auto", "--device", help="--verify: auto, cpu or cuda."),
    model: Optional[str] = typer.Option(None, "--model", help="Trace a network: a checkpoint, or 'default' (the default U-Net)."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Convolution arithmetic explained: output sizes, 'same' padding, solving, chains, the matrix C, cross-checks."""
    hw = _size(input, "input size") if input is not None else None
    if model is not None:
        _refuse_with("--model", chain=chain, kernel=kernel, stride=stride, transposed=transposed, pool=pool, same=same,
                     solve=solve, matrix=matrix, verify=verify, output=output)
        return _finish(model_mode(model, hw or (256, 256)), json_, render_model)
    if chain is not None:
        _refuse_with("--chain", kernel=kernel, stride=stride, transposed=transposed, pool=pool, same=same,
                     solve=solve, matrix=matrix, verify=verify, output=output)
        if hw is None:
            raise UsageError("--chain needs the input size", hint='e.g. -i 64 --chain "conv k3 p1; pool k2"')
        return _finish(chain_mode(chain, hw, channels), json_, render_chain)
    _refuse_with("without --chain", channels=channels)
    if draw is not None:
        _refuse_with("--draw", matrix=matrix, steps=steps, backward=backward, same=same, solve=solve, verify=verify,
                     output=output, x=x, w=w)
        if hw is None:
            raise UsageError("--draw needs the input size", hint="e.g. -i 5 -k 3 --draw conv.gif")
        from cvtool.draw import render, write

        spec = _spec(kernel, stride, padding, dilation, transposed, output_padding, pool, ceil_mode)
        images, lay = render(spec, hw)
        path = write(draw, images, lay)
        doc = {"mode": "draw", "file": str(path), "frames": len(images), "size": list(lay.size), "title": lay.title,
               "notes": lay.notes}
        if json_:
            emit_json(doc)
        else:
            _print(f"wrote {path}: {lay.title}; {len(images) if path.suffix.lower() == '.gif' else 1} frame(s), "
                   f"{lay.size[0]}x{lay.size[1]} px")
        return None
    if backward:
        _refuse_with("--backward", matrix=matrix, steps=steps, same=same, solve=solve, verify=verify, output=output)
        from cvtool.cli.convcalc_backward import backward_mode, render_backward

        if activation is not None:
            if activation not in ("relu", "sigmoid", "tanh"):
                raise UsageError(f"unknown --activation {activation!r}", hint="use relu, sigmoid or tanh")
            _refuse_with("--activation", kernel=kernel, pool=pool, transposed=transposed, w=w)
            spec = None
        else:
            spec = _spec(kernel, stride, padding, dilation, transposed, output_padding, pool, ceil_mode,
                         default_kernel=None if w is None else "1")
        doc = backward_mode(spec, hw, x, w, dy, lr, seed, kernel is not None, activation)
        _finish(doc, json_, render_backward)
        if not doc["ok"]:
            raise typer.Exit(1)
        return None
    _refuse_with("without --backward", dy=dy, activation=activation)
    if steps:
        _refuse_with("--steps", matrix=matrix, same=same, solve=solve, verify=verify, output=output)
        spec = _spec(kernel, stride, padding, dilation, transposed, output_padding, pool, ceil_mode,
                     default_kernel=None if w is None else "1")
        from cvtool.cli.convcalc_steps import render_steps, steps_mode

        return _finish(steps_mode(spec, hw, x, w, seed, kernel_given=kernel is not None), json_, render_steps)
    if matrix:
        _refuse_with("--matrix", same=same, solve=solve, verify=verify, output=output)
        spec = _spec(kernel, stride, padding, dilation, transposed, output_padding, pool, ceil_mode,
                     default_kernel=None if w is None else "1")  # --w sets the kernel
        from cvtool.cli.convcalc_matrix import matrix_mode, render_matrix

        return _finish(matrix_mode(spec, hw, x, w, seed, kernel_given=kernel is not None), json_, render_matrix)
    _refuse_with("without --matrix, --steps or --backward", x=x, w=w)
    spec = _spec(kernel, stride, padding, dilation, transposed, output_padding, pool, ceil_mode,
                 default_kernel="1" if solve and kernel is None else None)  # --solve searches the kernel
    if verify:
        _refuse_with("--verify", same=same, solve=solve, output=output)
        if hw is None:
            raise UsageError("--verify needs the input size", hint="e.g. -i 32")
        from cvtool.cli.convcalc_verify import render_verify, verify_mode

        doc = verify_mode(spec, hw, backend, device, seed)
        _finish(doc, json_, render_verify)
        if not doc["ok"]:
            raise typer.Exit(1)
        return None
    if same:
        _refuse_with("--same", output=output)
        if padding != "0":
            raise UsageError("--same works the padding out itself: drop --padding")
        return _finish(same_mode(spec, hw), json_, render_same)
    if output is not None or solve:
        if hw is None or output is None:
            raise UsageError("solving needs both --input and --output", hint="e.g. -i 32 -o 16 -k 3 --solve")
        doc = solve_mode(spec, hw, _size(output, "output size"), solve, kernel is not None)
        _finish(doc, json_, render_solve)
        if not doc["found"]:
            raise typer.Exit(1)
        return None
    if hw is None:
        return _finish(formula_mode(spec), json_, render_formula)
    return _finish(output_mode(spec, hw), json_, render_output)


# --- option parsing ---------------------------------------------------------------------------

def _size(text: str, what: str) -> tuple[int, int]:
    hw = A.pair(A.parse_size(text, what), what)
    if min(hw) < 1:
        raise UsageError(f"{what} must be at least 1, got {text}")
    return hw


def _refuse_with(mode: str, **given: Any) -> None:
    """Options that mean nothing in this mode are an error, not silently ignored."""
    for name, v in given.items():
        if v not in (None, False):
            raise UsageError(f"--{name.replace('_', '-')} means nothing {mode}" if mode.startswith("without")
                             else f"{mode} cannot be combined with --{name.replace('_', '-')}")


def _spec(kernel, stride, padding, dilation, transposed, output_padding, pool, ceil_mode,
          default_kernel: str | None = None) -> LayerSpec:
    """The one layer the options describe."""
    if pool is not None and pool.lower() not in ("max", "avg"):
        raise UsageError(f"unknown --pool {pool!r}", hint="use --pool max or --pool avg")
    if pool is not None and transposed:
        raise UsageError("--pool and --transposed exclude each other")
    kernel = kernel if kernel is not None else default_kernel
    if kernel is None:
        raise UsageError("give the kernel size", hint="e.g. -k 3 or -k 3x5")
    kind = "tconv" if transposed else (f"{pool.lower()}pool" if pool else "conv")
    return make_layer(kind, parse_ints(kernel, "kernel"), None if stride is None else parse_ints(stride, "stride"),
                      parse_padding(padding), parse_ints(dilation, "dilation"),
                      parse_ints(output_padding, "output padding"), ceil_mode=ceil_mode)


def _finish(doc: dict, json_: bool, render) -> None:
    if json_:
        emit_json(doc)
    else:
        render(doc)


def dims(v) -> str:
    """(3, 3) -> '3', (3, 5) -> '3x5'."""
    v = tuple(v)
    return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))


def hw_text(v) -> str:
    """A size, always HxW: (32, 32) -> '32x32'."""
    return "x".join(map(str, v))


def pads_text(pads) -> str:
    (t, b), (l, r) = pads
    if t == b and l == r:
        return dims((t, l))
    return f"top {t}, bottom {b}, left {l}, right {r}"


def params_text(spec: LayerSpec, pads=None, output_padding: bool = True) -> str:
    parts = [f"kernel {dims(spec.kernel)}", f"stride {dims(spec.stride)}"]
    if pads is not None:
        named = f"{spec.padding} -> " if isinstance(spec.padding, str) else ""
        parts.append(f"padding {named}{pads_text(pads)}")
    elif spec.padding not in (0, "valid"):
        parts.append(f"padding {spec.padding if isinstance(spec.padding, (int, str)) else dims(spec.padding)}")
    if spec.dilation != (1, 1):
        parts.append(f"dilation {dims(spec.dilation)}")
    if spec.kind == "tconv" and output_padding:
        parts.append(f"output_padding {dims(spec.output_padding)}")
    if spec.ceil_mode:
        parts.append("ceil_mode")
    return ", ".join(parts)


_ANSI = {"bold": "1", "dim": "2", "red": "31", "green": "32", "magenta": "35", "cyan": "36"}


def _print(text: str = "", style: str | None = None) -> None:
    """A line of text. Plain print, not rich: the formula modes stay clear of rich's import time."""
    import os
    import sys

    if style and sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb":
        text = f"\x1b[{';'.join(_ANSI[w] for w in style.split())}m{text}\x1b[0m"
    print(text, flush=True)


# --- o as a function of i ---------------------------------------------------------------------

def _axes(spec: LayerSpec) -> list[tuple[str, int]]:
    """[('', 0)] when H and W behave alike, else [('H: ', 0), ('W: ', 1)]."""
    alike = all(v[0] == v[1] for v in (spec.kernel, spec.stride, spec.dilation, spec.output_padding))
    if isinstance(spec.padding, tuple):
        p = spec.padding
        alike = alike and (p[0] == p[1] if len(p) == 2 else p[0:2] == p[2:4])
    return [("", 0)] if alike else [("H: ", 0), ("W: ", 1)]


def formula_mode(spec: LayerSpec) -> dict:
    from cvtool import explain

    pad_mode = spec.padding if isinstance(spec.padding, str) else None
    pads = None if pad_mode == "same" else A.resolve_padding(spec.padding, kernel=spec.kernel)
    if spec.kind in ("conv", "tconv"):
        kinds = ["conv", "tconv"] if pad_mode != "same" else ["conv"]
    else:
        kinds = [spec.kind]
    ops = []
    for kind in kinds:
        sym = []
        for label, a in _axes(spec):
            k, s, d = spec.kernel[a], spec.stride[a], spec.dilation[a]
            if kind == "conv" and pad_mode == "same":
                f = explain.same_symbolic(k, s, d)
            elif kind == "conv":
                f = explain.conv_symbolic(k, s, pads[a], d)
            elif kind == "tconv":
                f = explain.conv_transpose_symbolic(k, s, pads[a], spec.output_padding[a], d)
            else:
                f = explain.conv_symbolic(k, s, pads[a], d, rounding="ceil" if spec.ceil_mode else "floor")
            sym.append({"axis": label.strip(": ") or "HW", "general": f.general, "substituted": f.substituted,
                        "summary": f.summary, "min_input": f.min_input})
        ops.append({"op": kind, "title": _title(kind), "params": params_text(_as(spec, kind), pads), "formulas": sym})
    table = []
    for i in COMMON_SIZES:
        row: dict[str, Any] = {"input": i}
        for kind in kinds:
            try:
                row[kind] = list(output_hw(_as(spec, kind), (i, i))[0])
            except UsageError:
                row[kind] = None
        table.append(row)
    note = "transposed convolution takes no padding 'same'" if pad_mode == "same" and spec.kind == "conv" else None
    return {"mode": "formula", "ops": ops, "table": table, "note": note}


def _title(kind: str) -> str:
    from cvtool.chain import TITLES

    return TITLES[kind].capitalize()


def _as(spec: LayerSpec, kind: str) -> LayerSpec:
    """The same geometry as another kind (conv <-> tconv)."""
    if kind == spec.kind:
        return spec
    from dataclasses import replace

    return replace(spec, kind=kind, output_padding=(0, 0) if kind != "tconv" else spec.output_padding)


def render_formula(doc: dict) -> None:
    for op in doc["ops"]:
        _print(f"{op['title']}: {op['params']}", style="bold")
        for f in op["formulas"]:
            axis = "" if f["axis"] == "HW" else f"{f['axis']}: "
            _print(f"  {axis}{f['general']}")
            _print(f"  {axis}{f['substituted']}", style="cyan")
            _print(f"      {f['summary']}; needs i >= {f['min_input']}", style="dim")
    if doc["note"]:
        _print(f"({doc['note']})", style="dim")
    from cvtool.cli.output import table

    kinds = [op["op"] for op in doc["ops"]]
    rows = [[r["input"]] + [dims(r[k]) if r[k] else "-" for k in kinds] for r in doc["table"]]
    out().print(table(None, ["input i x i"] + [_title(k).lower() for k in kinds], rows))


# --- one output size --------------------------------------------------------------------------

def output_mode(spec: LayerSpec, hw: tuple[int, int]) -> dict:
    from cvtool.chain import formulas

    o, pads = output_hw(spec, hw)
    fs = formulas(spec, hw, pads)
    notes = [n if len(fs) == 1 else f"{'HW'[a]}: {n}" for a, f in enumerate(fs) for n in f.notes]
    if spec.padding == "same" and spec.stride != (1, 1):
        notes.append("PyTorch refuses padding='same' with stride > 1; this is TensorFlow's 'SAME' (o = ceil(i/s))")
    return {"mode": "output", "op": spec.kind, "title": _title(spec.kind), "input": list(hw), "params": spec.to_dict(),
            "params_text": params_text(spec, pads), "padding": [list(p) for p in pads], "output": list(o),
            "formula": fs[0].general, "substituted": [f.substituted for f in fs], "notes": list(dict.fromkeys(notes))}


def render_output(doc: dict) -> None:
    _print(f"{doc['title']}: input {hw_text(doc['input'])}, {doc['params_text']}", style="bold")
    _print(f"  {doc['formula']}")
    for s in doc["substituted"]:
        _print(f"  {s}", style="cyan")
    _print(f"  output: {hw_text(doc['output'])}", style="bold green")
    for n in doc["notes"]:
        _print(f"  note: {n}", style="dim")


# --- padding 'same' ---------------------------------------------------------------------------

def same_mode(spec: LayerSpec, hw: tuple[int, int] | None) -> dict:
    from cvtool import explain

    if spec.kind != "conv":
        raise UsageError("--same is about convolutions", hint="drop --transposed / --pool")
    alike = _axes(spec) == [("", 0)] and (hw is None or hw[0] == hw[1])
    axes = [("HW", 0, "o")] if alike else [("H", 0, "OH"), ("W", 1, "OW")]
    res = [explain.same(spec.kernel[a], spec.stride[a], spec.dilation[a], None if hw is None else hw[a], lhs)
           for _, a, lhs in axes]
    per_dim = res * 2 if alike else res  # (H, W)
    doc: dict[str, Any] = {
        "mode": "same", "op": "conv", "input": list(hw) if hw else None, "params": spec.to_dict(),
        "params_text": params_text(spec), "pytorch_padding_same": spec.stride == (1, 1),
        "padding": None if per_dim[0].pad is None else [list(r.pad) for r in per_dim],
        "explanation": [{"axis": name, "lines": list(r.lines)} for (name, _, _), r in zip(axes, res)]}
    if hw is not None:
        doc["output"] = [r.output for r in per_dim]
    elif spec.stride != (1, 1):  # the padding depends on i: show it for common sizes
        doc["table"] = [{"input": i, "output": [A.ceil_div(i, s) for s in spec.stride],
                         "padding": [list(A.same_pad(spec.kernel[a], spec.stride[a], spec.dilation[a], i))
                                     for a in (0, 1)]}
                        for i in COMMON_SIZES]
    return doc


def render_same(doc: dict) -> None:
    where = f"input {hw_text(doc['input'])}, " if doc["input"] else ""
    _print(f"Padding 'same' for a convolution: {where}{doc['params_text']}", style="bold")
    for e in doc["explanation"]:
        if e["axis"] != "HW":
            _print(f" {e['axis']}:", style="bold")
        for line in e["lines"]:
            _print(f"  {line}", style="cyan" if line.startswith(("o =", "OH =", "OW =")) else None)
    if doc["padding"]:
        (t, b), (l, r) = doc["padding"]
        _print(f"  padding: top {t}, bottom {b}, left {l}, right {r}" +
               (f"  (F.pad(x, ({l}, {r}, {t}, {b})) then padding=0)" if (t, l) != (b, r) else ""), style="bold green")
    if "output" in doc:
        _print(f"  output: {hw_text(doc['output'])}", style="bold green")
    if "table" in doc:
        from cvtool.cli.output import table

        rows = [[r["input"], dims(r["output"]), " / ".join(f"{p[0]},{p[1]}" for p in r["padding"])] for r in doc["table"]]
        out().print(table("TensorFlow 'SAME' over common sizes (padding begin,end for H / W)",
                          ["i", "output", "padding"], rows))


# --- solving ----------------------------------------------------------------------------------

def solve_mode(spec: LayerSpec, hw: tuple[int, int], want: tuple[int, int], search: bool, kernel_given: bool) -> dict:
    from cvtool import solve as S

    axes = [("", 0)] if hw[0] == hw[1] and want[0] == want[1] and _axes(spec) == [("", 0)] else [("H", 0), ("W", 1)]
    per_axis = []
    for label, a in axes:
        i, o, k, s, d = hw[a], want[a], spec.kernel[a], spec.stride[a], spec.dilation[a]
        entry: dict[str, Any] = {"axis": label or "HW", "input": i, "output": o}
        if kernel_given:
            sols = S.paddings(spec.kind, i, o, k, s, d, spec.ceil_mode)
            entry["paddings"] = [dict(sol.to_dict(), check=_check_text(spec, sol, i)) for sol in sols]
            if not sols:
                entry["why_not"] = S.reachable(spec.kind, i, k, s, d, spec.ceil_mode)
        if search:
            sols = S.kernel_stride(spec.kind, i, o, d, spec.ceil_mode)
            entry["kernel_stride"] = [dict(sol.to_dict(), check=_check_text(spec, sol, i)) for sol in sols]
        per_axis.append(entry)
    found = all(e.get("paddings") or e.get("kernel_stride") for e in per_axis)
    return {"mode": "solve", "op": spec.kind, "title": _title(spec.kind), "input": list(hw), "output": list(want),
            "params_text": params_text(spec, output_padding=False) if kernel_given else None, "search": search,
            "bounds": {"kernel": [S.KERNELS[0], S.KERNELS[-1]], "stride": [S.STRIDES[0], S.STRIDES[-1]],
                       "padding": "0..k//2" if spec.kind in POOLS else "0..k"} if search else None,
            "axes": per_axis, "found": bool(found)}


def _check_text(spec: LayerSpec, sol, i: int) -> str:
    """The forward formula with this solution's numbers: the proof that it works."""
    from cvtool import explain

    if spec.kind == "conv":
        return explain.conv(i, sol.kernel, sol.stride, sol.padding, sol.dilation).substituted
    if spec.kind == "tconv":
        return explain.conv_transpose(i, sol.kernel, sol.stride, sol.padding, sol.output_padding, sol.dilation).substituted
    return explain.pool(i, sol.kernel, sol.stride, sol.padding[0], sol.dilation, sol.ceil_mode).substituted


def render_solve(doc: dict) -> None:
    from cvtool.cli.output import table

    what = f"{doc['title'].lower()} {hw_text(doc['input'])} -> {hw_text(doc['output'])}"
    _print(f"Solving: {what}" + (f" with {doc['params_text']}" if doc["params_text"] else ""), style="bold")
    tconv = doc["op"] == "tconv"
    b = doc["bounds"]
    bounds = b and f"kernel {b['kernel'][0]}..{b['kernel'][1]}, stride {b['stride'][0]}..{b['stride'][1]}, padding {b['padding']}"
    for e in doc["axes"]:
        axis = "" if e["axis"] == "HW" else f" ({e['axis']}: {e['input']} -> {e['output']})"
        if "paddings" in e:
            if e["paddings"]:
                asym = "no: ONNX pads only" if tconv else "no: extra pixel at the end"
                rows = [[_pad_cell(p["padding"]), "yes" if p["symmetric"] else asym]
                        + ([p["output_padding"]] if tconv else []) + [p["check"]] for p in e["paddings"]]
                cols = ["padding", "symmetric"] + (["output_padding"] if tconv else []) + ["check"]
                out().print(table(f"Paddings that give it{axis}", cols, rows))
            else:
                _print(f"  no padding gives {e['output']} from {e['input']}{axis}: {e['why_not']}", style="bold red")
        if "kernel_stride" in e:
            if e["kernel_stride"]:
                rows = [[p["kernel"], p["stride"], p["padding"][0]] + ([p["output_padding"]] if tconv else [])
                        + [p["check"]] for p in e["kernel_stride"]]
                cols = ["kernel", "stride", "padding"] + (["output_padding"] if tconv else []) + ["check"]
                out().print(table(f"Kernel / stride / padding choices ({bounds}){axis}", cols, rows))
            else:
                _print(f"  no {bounds} gives {e['output']} from {e['input']}{axis}", style="bold red")


def _pad_cell(p) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]} begin, {p[1]} end"


# --- a chain of layers ------------------------------------------------------------------------

def chain_mode(text: str, hw: tuple[int, int], channels: int | None) -> dict:
    from cvtool.chain import parse_chain, trace

    if channels is not None and channels < 1:
        raise UsageError(f"--channels must be at least 1, got {channels}")
    steps = trace(parse_chain(text), hw, channels)
    last = steps[-1]
    return {"mode": "chain", "input": [channels, hw[0], hw[1]], "layers": [s.to_dict() for s in steps],
            "output": list(last.out_shape[1:]), "shape": list(last.out_shape), "channels": last.out_shape[0],
            "receptive_field": [f.size for f in last.rf],
            "params": None if any(s.params is None for s in steps) else sum(s.params for s in steps)}


def _shape_text(shape) -> str:
    c, h, w = shape
    return f"{'?' if c is None else c} x {h} x {w}"


def render_chain(doc: dict) -> None:
    from cvtool.cli.output import table

    rows = [["0", "input", _shape_text(doc["input"]), "1", "1", "0", ""]]
    for s in doc["layers"]:
        rows.append([s["index"], s["layer"], _shape_text(s["shape"]), dims(s["receptive_field"]),
                     dims(s["jump"]), dims(s["start"]), "?" if s["params"] is None else f"{s['params']:,}"])
    out().print(table("Layer by layer (receptive field, jump and start in input pixels)",
                      ["#", "layer", "C x H x W", "RF", "jump", "start", "params"], rows))
    for s in doc["layers"]:
        for f in s["formulas"]:
            _print(f"  {s['index']}: {f}", style="cyan")
    total = "" if doc["params"] is None else f", {doc['params']:,} parameters"
    _print(f"output {_shape_text(doc['shape'])}; each output pixel sees {dims(doc['receptive_field'])} input "
           f"pixels{total}", style="bold green")
    _print("RF: first to last input pixel that can change an output pixel (max over pixels); jump: distance of "
           "neighbouring output pixels; start: centre of the first one's field", style="dim")


# --- a whole network ---------------------------------------------------------------------------

def model_mode(model: str, hw: tuple[int, int]) -> dict:
    """The U-Net of a checkpoint (or the default spec) traced layer by layer with parameters and FLOPs."""
    from cvtool.spec import ModelSpec, trace

    if model == "default":
        spec, source = ModelSpec(), "default ModelSpec()"
    else:
        from cvtool.checkpoint import read_meta

        spec, source = ModelSpec.from_dict(read_meta(model)["spec"]), model
    rows = trace(spec, hw)
    layers = [{"name": r.name, "op": r.op, "detail": r.detail, "shape": list(r.out_shape), "params": r.params,
               "flops": r.flops} for r in rows]
    return {"mode": "model", "source": source, "spec": spec.to_dict(), "input": [spec.in_channels, *hw],
            "layers": layers, "output": list(rows[-1].out_shape[1:]), "shape": list(rows[-1].out_shape),
            "params": sum(r.params for r in rows), "flops": sum(r.flops for r in rows),
            "conv_flops": sum(r.flops for r in rows if r.op in ("conv", "tconv"))}


def render_model(doc: dict) -> None:
    from cvtool.cli.output import table

    rows = [["input", "", "", _shape_text(doc["input"]), "", ""]]
    for r in doc["layers"]:
        rows.append([r["name"], r["op"], r["detail"], _shape_text(r["shape"]), f"{r['params']:,}" if r["params"] else "",
                     f"{r['flops'] / 1e6:,.1f}" if r["flops"] else ""])
    s = doc["spec"]
    out().print(table(f"{doc['source']}: U-Net width {s['width']} depth {s['depth']} {s['activation']}, norm {s['norm']}",
                      ["layer", "op", "", "C x H x W", "params", "MFLOP"], rows))
    _print(f"{doc['params']:,} parameters; {doc['flops'] / 1e9:.2f} GFLOP per {doc['input'][1]}x{doc['input'][2]} image "
           f"({doc['conv_flops'] / 1e9:.2f} in convolutions; a multiply-add counts 2)", style="bold green")


# --- the tour of `cvtool demo` ----------------------------------------------------------------

TOUR = [
    ("Stride 2, kernel 2: conv halves, transposed conv doubles", "--stride 2 --kernel 2", True),
    ("An output size, the numbers substituted", "-i 224 -k 3 -s 2 -p 1", True),
    ("Padding 'same' for an even kernel", "-i 32 -k 4 --same", True),
    ("Padding 'same' with stride 2", "-i 224 -k 3 -s 2 --same", False),
    ("Which padding gives 64 from 32 with a 4x4, stride-2 transposed conv?", "-i 32 -o 64 -k 4 -s 2 --transposed", True),
    ("Which kernel and stride halve 32?", "-i 32 -o 16 --solve --pool max", False),
    ("Shapes and receptive fields through a small encoder-decoder",
     '-i 64 -c 1 --chain "conv k3 p1 c16; conv k3 p1 c16; pool k2 s2; conv k3 p1 c32; tconv k2 s2 c16"', True),
    ("The lecture's example: a convolution as a matrix",
     '--matrix --x "4,5,8,7;1,8,8,8;3,6,6,4;6,5,7,8" --w "1,4,1;1,4,3;3,3,1"', True),
    ("The transposed convolution is C^T", '--matrix --transposed -k 3 -i 2', False),
    ("Cross-check: a max pooling with ceil_mode on every backend", "-i 15 -k 3 -s 2 --pool max --ceil-mode --verify", False),
    ("Cross-check: a transposed convolution on every backend", "-i 16 -k 3 -s 2 -p 1 --output-padding 1 -t --verify", False),
    ("Cross-check: a strided convolution on every backend", "-i 32 -k 3 -s 2 -p 1 --verify", True),
]


def convcalc_tour(quick: bool = False) -> None:
    """Several convcalc modes printed for a person, ending in a cross-backend --verify."""
    import shlex

    from cvtool.cli import app

    cmd = typer.main.get_command(app)
    for title, args, in_quick in TOUR:
        if quick and not in_quick:
            continue
        out().rule(title, align="left")
        _print(f"$ cvtool convcalc {args}", style="bold magenta")
        rc = cmd.main(["convcalc", *shlex.split(args)], prog_name="cvtool", standalone_mode=False)
        _print()
        if rc not in (None, 0) and "--verify" in args:
            raise CvtoolError("the cross-backend check failed (see the table above)")


__all__ = ["convcalc", "convcalc_tour", "COMMON_SIZES"]
