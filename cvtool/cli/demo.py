"""`cvtool demo`: the main job on built-in data, step by step (extended by every issue)."""

from __future__ import annotations

import typer


def demo(quick: bool = typer.Option(False, help="Shorter run (used by the tests).")) -> None:
    """A tour: convolution arithmetic explained, then every backend cross-checked."""
    from cvtool.cli.convcalc import convcalc_tour

    convcalc_tour(quick=quick)
