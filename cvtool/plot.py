"""Line charts drawn by matplotlib (Agg, imported only when a chart is written): training curves, bench plots.

One or more panels side by side, each a dict of named series over the same x; round ticks and a legend per
panel; a panel whose values span more than a factor of 20 (losses) can be drawn on a log scale.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Union

from cvtool.fsutil import atomic_path
from cvtool.printable import printable

Series = Union[list, tuple[list, list]]  # values at the panel's x, or (x values, values) of its own


def _finite(vals) -> list[float]:
    return [v for v in vals if v is not None and isinstance(v, (int, float)) and math.isfinite(v)]


def _values(s) -> list:
    """A series' values: (x values, values) or the values alone."""
    return s[1] if isinstance(s, tuple) else s


def _wide(series: Mapping[str, Series]) -> bool:
    """Positive values spanning more than 20x: a log scale shows them better."""
    v = [x for s in series.values() for x in _finite(_values(s))]
    return bool(v) and min(v) > 0 and max(v) / min(v) > 20


def line_chart(path: str | Path, xs, left: Mapping[str, Series], *more: Mapping[str, Series] | None, title: str = "",
               xlabel: str = "", log_x: bool = False, log_y: str = "auto", titles: list[str] | None = None,
               panel_xs: list | None = None) -> Path:
    """Panels (left, then each of `more`) as one PNG, written atomically. log_y: "auto" (a panel spanning > 20x
    gets a log scale), "yes" or "no"; titles: one per panel; panel_xs: one x list per panel (None: xs), for panels
    sampled at different points (a loss every few steps, validation now and then); a series given as a tuple
    (xs, values) has x values of its own."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [left] + [p for p in more if p]
    xlim = None  # with panel_xs: one x range for all panels, so a validation point sits above the loss at its step
    if panel_xs and any(panel_xs):
        every = [x for xs_k in panel_xs if xs_k for x in xs_k]
        lo, hi = min(every), max(every)
        pad = 0.03 * (hi - lo) or 0.5
        xlim = (lo - pad, hi + pad)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.3), dpi=100, squeeze=False)
    for k, (ax, series) in enumerate(zip(axes[0], panels)):
        px = panel_xs[k] if panel_xs and k < len(panel_xs) and panel_xs[k] is not None else xs
        for name, vals in series.items():
            sx, vals = vals if isinstance(vals, tuple) else (px, vals)  # (x, y): a series sampled at its own points
            pts = [(x, v) for x, v in zip(sx, vals) if v is not None and isinstance(v, (int, float)) and math.isfinite(v)]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if len(pts) <= 50 else None, markersize=3,
                        linewidth=1.5 if len(pts) <= 50 else 1.0, label=printable(name))  # dense traces: a line alone
        if xlim:
            ax.set_xlim(*xlim)
        if log_x:
            ax.set_xscale("log")
        if log_y == "yes" or (log_y == "auto" and _wide(series)):
            ax.set_yscale("log")
        ax.set_xlabel(printable(xlabel))
        ax.grid(alpha=0.3)
        if titles and k < len(titles):
            ax.set_title(printable(titles[k]), fontsize=10)
        if any(_finite(_values(v)) for v in series.values()):
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(printable(title), fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


__all__ = ["line_chart"]
