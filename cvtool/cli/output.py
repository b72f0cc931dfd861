"""Rendering shared by every command: rich tables for people, pure JSON on stdout for scripts."""

from __future__ import annotations

import json
import sys
from typing import Any

from cvtool.printable import printable

_out = None
_err = None


def out():
    """Console on stdout (tables, results)."""
    global _out
    if _out is None:
        from rich.console import Console

        _out = Console(highlight=False)
    return _out


def err():
    """Console on stderr (messages, progress): keeps stdout pure JSON under --json."""
    global _err
    if _err is None:
        from rich.console import Console

        _err = Console(stderr=True, highlight=False)
    return _err


def safe(text: Any, markup: bool = True) -> str:
    """A name (class, file, path, message) as it may reach a terminal: control characters and ANSI escapes shown
    as inert \\xNN text (a downloaded model cannot clear or rewrite the screen), the bytes of a non-UTF-8 file
    name as \\xNN, and, for text printed with rich markup on (markup=True), rich markup escaped ("[/]" prints
    as itself). Every printed name goes through here."""
    text = printable(text)
    if not markup:
        return text
    from rich.markup import escape

    return escape(text)


def _default(o: Any):
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def emit_json(doc: Any) -> None:
    """One JSON document on stdout, nothing else."""
    sys.stdout.write(json.dumps(doc, indent=2, default=_default) + "\n")
    sys.stdout.flush()


def table(title: str | None, columns: list[str], rows: list[list[Any]], *, justify_numbers: bool = True):
    from rich.table import Table

    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*("" if v is None else str(v) for v in r))
    return t


def fmt_float(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    if v == 0:
        return "0"
    if abs(v) < 1e-3 or abs(v) >= 1e5:
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
