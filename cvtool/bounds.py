"""Numbers the user gives: finite, and inside their range. One rule for every command's numeric options.

    check("--lr", lr, Bound(lo=0, lo_open=True))          # a finite number greater than 0
    check("--seed", seed, SEED)                            # a whole number from 0 to 2**32 - 1

A value outside its bound is a UsageError (exit 2) that names the option, says the range and repeats the value.
NaN and the infinities are never in range: they pass every `<` test unnoticed (nan < 0 is False), so they are
refused before any comparison. cvtool.cli.options turns a Bound into a Typer callback; the core calls `check`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from cvtool.errors import UsageError

INT32_MAX = 2**31 - 1  # the largest size any array library here indexes without overflow


class Bound(NamedTuple):
    """lo <= v <= hi (either side open or absent); integer: v must be a whole number."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself excluded: lr > 0
    hi_open: bool = False
    integer: bool = False
    hint: str | None = None

    def text(self) -> str:
        """'a finite number greater than 0', 'a whole number from 1 to 2147483647', ..."""
        kind = "a whole number" if self.integer else "a finite number"
        fmt = lambda v: f"{v:g}" if isinstance(v, float) else str(v)  # noqa: E731
        if self.hi == INT32_MAX and not self.hi_open:  # a size: its cap only keeps the arrays' indices from overflowing
            return f"{Bound(self.lo, None, self.lo_open, integer=self.integer).text()} (at most 2**31 - 1)"
        if self.lo is not None and self.hi is not None and not (self.lo_open or self.hi_open):
            return f"{kind} from {fmt(self.lo)} to {fmt(self.hi)}"
        ends = []
        if self.lo is not None:
            ends.append(f"{'greater than' if self.lo_open else 'at least'} {fmt(self.lo)}")
        if self.hi is not None:
            ends.append(f"{'less than' if self.hi_open else 'at most'} {fmt(self.hi)}")
        return " ".join([kind, " and ".join(ends)]).strip()

    def holds(self, v: float) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.integer and not float(v).is_integer():
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        if self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi):
            return False
        return True


POSITIVE = Bound(lo=0, lo_open=True)  # seconds, rates, factors
NON_NEGATIVE = Bound(lo=0)
FRACTION = Bound(lo=0, hi=1)
OPEN_FRACTION = Bound(lo=0, hi=1, lo_open=True, hi_open=True)  # a share that leaves something on both sides
SPLIT_TO_CHECK = Bound(lo=0, hi=1, hi_open=True)  # data check: 0 checks every image as training data
COUNT = Bound(lo=1, hi=INT32_MAX, integer=True)  # sizes, batch sizes, channels, repeats
SEED = Bound(lo=0, hi=2**32 - 1, integer=True)  # what NumPy's and torch's generators both take
THREADS = Bound(lo=0, hi=1024, integer=True, hint="0 keeps the backend's default")
DEPTH = Bound(lo=0, hi=6, integer=True)  # U-Net levels (cvtool.model.spec)


def check(name: str, value, bound: Bound):
    """value, unchanged, when it lies in bound (None passes: an option not given); else one UsageError."""
    if value is None or bound.holds(value):
        return value
    shown = value if not isinstance(value, float) else f"{value:g}"
    raise UsageError(f"{name} must be {bound.text()}, got {shown}", hint=bound.hint)


def check_all(name: str, values, bound: Bound) -> None:
    """Every value of a list option (--sizes 128,256) in bound."""
    for v in values:
        check(name, v, bound)


__all__ = ["Bound", "check", "check_all", "POSITIVE", "NON_NEGATIVE", "FRACTION", "OPEN_FRACTION", "SPLIT_TO_CHECK",
           "COUNT", "SEED", "THREADS", "DEPTH", "INT32_MAX"]
