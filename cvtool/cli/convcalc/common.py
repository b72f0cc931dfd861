"""What every convcalc mode's CLI shares: parsing the layer options, printing a line or a document, the grids
of numbers, a backend's status. The modes import this; nothing here imports a mode."""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

import typer

from cvtool.arithmetic import pair, parse_size
from cvtool.bounds import Bound, check_all
from cvtool.cli.output import emit_json
from cvtool.convcalc.chain import LayerSpec, make_layer, parse_ints, parse_padding
from cvtool.errors import UsageError

_ANSI = {"bold": "1", "dim": "2", "red": "31", "green": "32", "magenta": "35", "cyan": "36"}


# --- options ----------------------------------------------------------------------------------

def size(text: str, what: str) -> tuple[int, int]:
    """'32' or '224x160' -> (H, W), each at least 1."""
    hw = pair(parse_size(text, what), what)
    check_all(what, hw, Bound(lo=1, integer=True))  # no upper bound: the formulas take any size, memory is checked per mode
    return hw


def refuse_with(mode: str, **given: Any) -> None:
    """Options that mean nothing in this mode are an error, not silently ignored."""
    for name, v in given.items():
        if v not in (None, False):
            raise UsageError(f"--{name.replace('_', '-')} means nothing {mode}" if mode.startswith("without")
                             else f"{mode} cannot be combined with --{name.replace('_', '-')}")


def layer_spec(kernel, stride, padding, dilation, transposed, output_padding, pool, ceil_mode,
               default_kernel: str | None = None) -> LayerSpec:
    """The one layer the options describe (convcalc, and bench --op)."""
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


# --- output -----------------------------------------------------------------------------------

def say(text: str = "", style: str | None = None) -> None:
    """A line of text. Plain print, not rich: the formula modes stay clear of rich's import time."""
    if style and sys.stdout.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb":
        text = f"\x1b[{';'.join(_ANSI[w] for w in style.split())}m{text}\x1b[0m"
    print(text, flush=True)


def finish(doc: dict, json_: bool, render: Callable[[dict], None], *, ok: str | None = None) -> None:
    """The document as JSON (--json), else rendered for a person; then exit 1 if doc[ok] is false (a check that
    failed, a solution not found: said in full first)."""
    if json_:
        emit_json(doc)
    else:
        render(doc)
    if ok is not None and not doc[ok]:
        raise typer.Exit(1)


def num(v: float) -> str:
    """4.0 -> '4', 0.3333 -> '0.3333'."""
    return str(int(v)) if float(v).is_integer() else f"{v:.4g}"


def grid(a) -> Any:
    """A 2-D array as a boxed rich table of its numbers."""
    from rich import box
    from rich.table import Table

    t = Table(show_header=False, box=box.SQUARE, padding=(0, 1))
    for _ in range(a.shape[1]):
        t.add_column(justify="right")
    for r in a:
        t.add_row(*(num(v) for v in r))
    return t


# --- backends ---------------------------------------------------------------------------------

def backend_status(registry, name: str):
    """A backend's status; one that cannot even be imported is unavailable, not a crash."""
    from cvtool_backends.base import Status

    try:
        return registry.status(name)
    except Exception as e:  # a half-installed or broken plug-in
        return Status(name=name, available=False, reason=f"{type(e).__name__}: {e}".splitlines()[0][:200])


__all__ = ["size", "refuse_with", "layer_spec", "say", "finish", "num", "grid", "backend_status"]
