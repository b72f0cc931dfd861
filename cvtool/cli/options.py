"""Numeric options checked as they are parsed: `typer.Option(..., callback=within(POSITIVE))`.

The rule itself is cvtool.bounds (shared with the core); this only names the option the way the user typed it.
"""

from __future__ import annotations

from typing import Callable

import typer

from cvtool.bounds import Bound, check


def within(bound: Bound) -> Callable:
    """A Typer callback that lets a value through when it lies in bound, else raises one UsageError (exit 2)."""

    def callback(param: typer.CallbackParam, value):
        name = max(param.opts, key=len) if param.opts else f"--{param.name}"
        return check(name, value, bound)

    return callback


def number(default, *names: str, bound: Bound, help: str):
    """typer.Option(default, *names, help=help) whose value must lie in bound."""
    return typer.Option(default, *names, callback=within(bound), help=help)


__all__ = ["within", "number"]
