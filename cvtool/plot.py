"""Small line charts drawn with Pillow (no plotting library needed): training curves, bench plots."""

from __future__ import annotations

import math
from pathlib import Path

from cvtool.fsutil import atomic_path

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def _finite(vals):
    return [v for v in vals if v is not None and isinstance(v, (int, float)) and math.isfinite(v)]


def _panel(draw, box, xs, series: dict[str, list], title: str, xlabel: str, log_x: bool = False) -> None:
    x0, y0, x1, y1 = box
    pl, pr, pt, pb = 55, 10, 22, 30  # inner margins
    ax0, ay0, ax1, ay1 = x0 + pl, y0 + pt, x1 - pr, y1 - pb
    draw.rectangle([ax0, ay0, ax1, ay1], outline=(0, 0, 0))
    draw.text((x0 + pl, y0 + 4), title, fill=(0, 0, 0))
    ys = [v for s in series.values() for v in _finite(s)]
    if not ys or not xs:
        return
    lo, hi = min(ys), max(ys)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    fx = (lambda v: math.log(v)) if log_x else (lambda v: float(v))
    xlo, xhi = fx(min(xs)), fx(max(xs))
    if xhi - xlo < 1e-12:
        xlo, xhi = xlo - 1, xhi + 1

    def px(x, y):
        return (ax0 + (fx(x) - xlo) / (xhi - xlo) * (ax1 - ax0), ay1 - (y - lo) / (hi - lo) * (ay1 - ay0))

    for k in range(5):  # y ticks
        v = lo + (hi - lo) * k / 4
        _, yy = px(xs[0], v)
        draw.line([ax0 - 4, yy, ax0, yy], fill=(0, 0, 0))
        draw.text((x0 + 2, yy - 6), f"{v:.3g}", fill=(0, 0, 0))
    for x in sorted(set(xs))[:: max(1, len(set(xs)) // 8)]:  # x ticks
        xx, _ = px(x, lo)
        draw.line([xx, ay1, xx, ay1 + 4], fill=(0, 0, 0))
        draw.text((xx - 8, ay1 + 6), f"{x:g}", fill=(0, 0, 0))
    draw.text(((ax0 + ax1) / 2 - 15, y1 - 12), xlabel, fill=(0, 0, 0))
    for i, (name, vals) in enumerate(series.items()):
        c = COLORS[i % len(COLORS)]
        pts = [px(x, v) for x, v in zip(xs, vals) if v is not None and math.isfinite(v)]
        if len(pts) > 1:
            draw.line(pts, fill=c, width=2)
        for p in pts:
            draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=c)
        draw.text((ax1 - 110, ay0 + 6 + 14 * i), name, fill=c)


def line_chart(path: str | Path, xs, left: dict[str, list], right: dict[str, list] | None = None, *,
               title: str = "", xlabel: str = "", log_x: bool = False) -> Path:
    """One or two panels side by side, written atomically as PNG."""
    from PIL import Image, ImageDraw

    panels = [left] + ([right] if right else [])
    W, H = 420 * len(panels), 300
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    for i, series in enumerate(panels):
        _panel(d, (420 * i, 0, 420 * (i + 1), H), list(xs), series, title if i == 0 else "", xlabel, log_x)
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path
