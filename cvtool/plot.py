"""Charts drawn by matplotlib (Agg, imported only when a chart is written): training curves, bench plots, val's
confusion matrix.

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


def _pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display), imported when a chart is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | Path) -> Path:
    """The figure as a PNG, written atomically; the figure closed."""
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def line_chart(path: str | Path, xs, left: Mapping[str, Series], *more: Mapping[str, Series] | None, title: str = "",
               xlabel: str = "", log_x: bool = False, log_y: str = "auto", titles: list[str] | None = None,
               panel_xs: list | None = None) -> Path:
    """Panels (left, then each of `more`) as one PNG, written atomically. log_y: "auto" (a panel spanning > 20x
    gets a log scale), "yes" or "no"; titles: one per panel; panel_xs: one x list per panel (None: xs), for panels
    sampled at different points (a loss every few steps, validation now and then); a series given as a tuple
    (xs, values) has x values of its own."""
    plt = _pyplot()

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
    return _save(plt, fig, path)


def confusion_chart(path: str | Path, cm, classes: list[str], title: str = "") -> Path:
    """A confusion matrix (rows: truth, columns: prediction) as a PNG heat map, written atomically: each row
    coloured by its share of the true class (so rare classes show), each cell labelled with that share where the
    matrix is small enough to read."""
    plt = _pyplot()
    import numpy as np

    cm = np.asarray(cm, np.float64)
    K = cm.shape[0]
    rows = cm.sum(1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    side = min(2.5 + 0.45 * K, 16)
    fig, ax = plt.subplots(figsize=(side + 1.2, side), dpi=100)
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    names = [printable(c) for c in classes]  # a control character in a class name: no glyph warnings
    ax.set_xticks(range(K), names, rotation=45 if K > 4 else 0, ha="right" if K > 4 else "center", fontsize=8)
    ax.set_yticks(range(K), names, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("truth")
    if K <= 20:
        for t in range(K):
            for p in range(K):
                if rows[t, 0] > 0:
                    ax.text(p, t, f"{share[t, p]:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if share[t, p] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if title:
        ax.set_title(printable(title), fontsize=10)
    return _save(plt, fig, path)


__all__ = ["line_chart", "confusion_chart"]
