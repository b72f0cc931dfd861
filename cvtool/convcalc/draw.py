"""Pictures of one layer with the user's own parameters, in the style of the conv_arithmetic guide.

The input grid with its padding (grey), the (dilated) kernel's window on it (blue), the output grid with the
output being computed (green) and those done (pale green), each grid labelled "input" / "output" with its size.
One frame per output (a GIF steps through them; a PNG or SVG is the first frame). A transposed convolution is
drawn both ways at once: as stamps (the input pixels whose stamps cover the current output) and as the equivalent
direct convolution over the zero-inserted, re-padded input (s - 1 zeros between pixels, padding d(k - 1) - p),
whose window holds exactly those input pixels. Pillow only.

    frames, layout = render(spec, hw)          # PIL images, and where every cell was drawn (for tests)
    write(path, frames, layout)                # .png, .gif or .svg (vector), atomically
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cvtool.arithmetic import effective_kernel
from cvtool.convcalc.chain import LayerSpec, output_hw
from cvtool.errors import UsageError

CELL = 26
GAP = 60
MARGIN = 24
TEXT_H = 18
MAX_CELLS = 40  # a grid side larger than this makes an unreadable picture
WHITE, INK, GRID = (255, 255, 255), (30, 30, 30), (90, 90, 90)
PAD = (215, 215, 215)  # padding cells
ZERO = (238, 238, 238)  # inserted zeros (transposed convolution as a direct one)
WINDOW = (66, 133, 244)  # the kernel's window / the contributing input pixels
CURRENT = (52, 168, 83)  # the output being computed
DONE = (200, 235, 205)  # outputs already computed
OUTSIDE = (250, 225, 200)  # stamp cells that the transposed convolution's padding crops away
COVER = (230, 240, 255)  # output cells the contributing stamps cover
COLOURS = (WHITE, INK, GRID, PAD, ZERO, WINDOW, CURRENT, DONE, OUTSIDE, COVER)  # all a picture uses (GIF palette)


@dataclass
class Grid:
    """A grid of cells drawn at (x0, y0); cell (r, c) of the grid is grid coordinate (r - r0, c - c0)."""
    name: str
    x0: int
    y0: int
    rows: int
    cols: int
    r0: int = 0  # grid row of the first drawn row (negative: padding above the input)
    c0: int = 0

    def box(self, r: int, c: int) -> tuple[int, int, int, int]:
        x = self.x0 + (c - self.c0) * CELL
        y = self.y0 + (r - self.r0) * CELL
        return x, y, x + CELL, y + CELL

    def centre(self, r: int, c: int) -> tuple[int, int]:
        x0, y0, x1, y1 = self.box(r, c)
        return (x0 + x1) // 2, (y0 + y1) // 2


@dataclass
class Layout:
    size: tuple[int, int]
    grids: dict[str, Grid]
    title: str
    notes: list[str] = field(default_factory=list)
    frames: list[dict] = field(default_factory=list)  # per frame: {"out": (i, j), "window": [(r, c), ...], ...}


def _taps(i: int, j: int, spec: LayerSpec, pads) -> list[tuple[int, int]]:
    """Input coordinates (padding included: may be negative or past the end) that output (i, j) reads."""
    (s0, s1), (d0, d1) = spec.stride, spec.dilation
    KH, KW = spec.kernel
    return [(i * s0 + u * d0 - pads[0][0], j * s1 + v * d1 - pads[1][0]) for u in range(KH) for v in range(KW)]


def _check(*sides: int) -> None:
    if max(sides) > MAX_CELLS:
        raise UsageError(f"--draw: a grid of {max(sides)} cells a side is too large to read (at most {MAX_CELLS})",
                         hint="use a smaller -i, e.g. -i 5")


def _forward_frames(spec: LayerSpec, hw) -> tuple[Layout, list]:
    (OH, OW), pads = output_hw(spec, hw)
    H, W = hw
    # the padded input, and how far the last window reaches (ceil_mode may hang past the padding)
    reach_h = max(H + pads[0][1], (OH - 1) * spec.stride[0] + effective_kernel(spec.kernel[0], spec.dilation[0]) - pads[0][0])
    reach_w = max(W + pads[1][1], (OW - 1) * spec.stride[1] + effective_kernel(spec.kernel[1], spec.dilation[1]) - pads[1][0])
    rows, cols = reach_h + pads[0][0], reach_w + pads[1][0]
    _check(rows, cols, OH, OW)
    top = MARGIN + 2 * TEXT_H
    inp = Grid("input", MARGIN, top + TEXT_H, rows, cols, -pads[0][0], -pads[1][0])
    out = Grid("output", MARGIN + cols * CELL + GAP, top + TEXT_H, OH, OW)
    size = (out.x0 + OW * CELL + MARGIN, top + TEXT_H + max(rows, OH) * CELL + MARGIN + TEXT_H)
    lay = Layout(size, {"input": inp, "output": out}, "")
    frames = [{"out": (i, j), "window": _taps(i, j, spec, pads)} for i in range(OH) for j in range(OW)]
    return lay, frames


def _tconv_frames(spec: LayerSpec, hw) -> tuple[Layout, list]:
    """Top: stamping (input grid, output grid with the cropped border). Bottom: the direct convolution."""
    (OH, OW), pads = output_hw(spec, hw)
    H, W = hw
    (s0, s1), (d0, d1), (KH, KW) = spec.stride, spec.dilation, spec.kernel
    op = spec.output_padding
    # direct form: zero-inserted input Z ((H-1)s+1 rows), padded by q = d(k-1) - p before and q + output_padding after
    q = (d0 * (KH - 1) - pads[0][0], d1 * (KW - 1) - pads[1][0])
    qe = (d0 * (KH - 1) - pads[0][1] + op[0], d1 * (KW - 1) - pads[1][1] + op[1])
    zr, zc = (H - 1) * s0 + 1, (W - 1) * s1 + 1
    drows, dcols = q[0] + zr + qe[0], q[1] + zc + qe[1]
    full_h, full_w = (H - 1) * s0 + effective_kernel(KH, d0) + op[0], (W - 1) * s1 + effective_kernel(KW, d1) + op[1]
    _check(drows, dcols, full_h, full_w)
    top = MARGIN + 2 * TEXT_H
    inp = Grid("input", MARGIN, top + TEXT_H, H, W)
    stamp_out = Grid("output", MARGIN + W * CELL + GAP, top + TEXT_H, full_h, full_w, -pads[0][0], -pads[1][0])
    y2 = top + TEXT_H + max(H, full_h) * CELL + 2 * TEXT_H + TEXT_H
    direct_in = Grid("zero-inserted input", MARGIN, y2, drows, dcols, -q[0], -q[1])
    direct_out = Grid("output (direct)", MARGIN + dcols * CELL + GAP, y2, OH, OW)
    width = max(stamp_out.x0 + full_w * CELL, direct_out.x0 + OW * CELL) + MARGIN
    size = (width, y2 + max(drows, OH) * CELL + MARGIN + 2 * TEXT_H)
    lay = Layout(size, {"input": inp, "output": stamp_out, "zero-inserted input": direct_in, "output (direct)": direct_out},
                 "")
    frames = []
    for i in range(OH):
        for j in range(OW):
            # input pixels (a, b) whose stamp covers output (i, j): i = a*s + u*d - p for some kernel tap u
            src = [(a, b) for a in range(H) for b in range(W)
                   if any(a * s0 + u * d0 - pads[0][0] == i for u in range(KH))
                   and any(b * s1 + v * d1 - pads[1][0] == j for v in range(KW))]
            win = [(i + u * d0 - q[0], j + v * d1 - q[1]) for u in range(KH) for v in range(KW)]  # in Z coordinates
            frames.append({"out": (i, j), "window": win, "sources": src})
    return lay, frames


def _draw_grid(d, g: Grid, fill) -> None:
    for r in range(g.r0, g.r0 + g.rows):
        for c in range(g.c0, g.c0 + g.cols):
            d.rectangle(g.box(r, c), fill=fill(r, c), outline=GRID)


def render(spec: LayerSpec, hw) -> tuple[list, Layout]:
    """Frames (PIL RGB images) and their layout."""
    from PIL import Image, ImageDraw

    H, W = hw
    tconv = spec.kind == "tconv"
    lay, frames = (_tconv_frames if tconv else _forward_frames)(spec, hw)
    (OH, OW), pads = output_hw(spec, hw)
    what = {"conv": "convolution", "tconv": "transposed convolution", "maxpool": "max pooling",
            "avgpool": "average pooling"}[spec.kind]
    lay.title = (f"{what}: kernel {spec.kernel[0]}x{spec.kernel[1]}, stride {spec.stride[0]}x{spec.stride[1]}, "
                 f"padding {pads[0][0]},{pads[0][1]},{pads[1][0]},{pads[1][1]}, dilation "
                 f"{spec.dilation[0]}x{spec.dilation[1]}" + (f", output_padding {spec.output_padding[0]}x"
                                                              f"{spec.output_padding[1]}" if tconv else ""))
    if tconv:
        lay.notes = ["top: each input pixel stamps x * w into the output (blue: the pixels whose stamps cover the green "
                     "output; orange: cells the padding crops)",
                     f"bottom: the same as a stride-1 convolution over the input with {spec.stride[0] - 1} zero(s) "
                     f"between pixels, padded d(k-1)-p, kernel flipped"]
    import textwrap

    lay.notes = [line for note in lay.notes for line in textwrap.wrap(note, max(30, (lay.size[0] - 2 * MARGIN) // 6))]
    lay.size = (lay.size[0], lay.size[1] + TEXT_H * len(lay.notes))
    images = []
    for t, fr in enumerate(frames):
        im = Image.new("RGB", lay.size, WHITE)
        d = ImageDraw.Draw(im)
        d.text((MARGIN, MARGIN), lay.title, fill=INK)
        done = set((f["out"] for f in frames[:t]))
        if not tconv:
            win = set(fr["window"])
            g = lay.grids["input"]
            _draw_grid(d, g, lambda r, c: WINDOW if (r, c) in win else (WHITE if 0 <= r < H and 0 <= c < W else PAD))
        else:
            src = set(fr["sources"])
            _draw_grid(d, lay.grids["input"], lambda r, c: WINDOW if (r, c) in src else WHITE)
            cov = {(a * spec.stride[0] + u * spec.dilation[0] - pads[0][0], b * spec.stride[1] + v * spec.dilation[1]
                    - pads[1][0]) for a, b in src for u in range(spec.kernel[0]) for v in range(spec.kernel[1])}
            _draw_grid(d, lay.grids["output"], lambda r, c: CURRENT if (r, c) == fr["out"] else
                       (OUTSIDE if not (0 <= r < OH and 0 <= c < OW) else (DONE if (r, c) in done else
                                                                            (COVER if (r, c) in cov else WHITE))))
            win = set(fr["window"])
            s0, s1 = spec.stride
            real = lambda r, c: 0 <= r < (H - 1) * s0 + 1 and 0 <= c < (W - 1) * s1 + 1  # noqa: E731
            _draw_grid(d, lay.grids["zero-inserted input"], lambda r, c: WINDOW if (r, c) in win else (
                (WHITE if r % s0 == 0 and c % s1 == 0 else ZERO) if real(r, c) else PAD))
        out_name = "output (direct)" if tconv else "output"
        _draw_grid(d, lay.grids[out_name], lambda r, c: CURRENT if (r, c) == fr["out"] else (DONE if (r, c) in done else WHITE))
        for name, g in lay.grids.items():
            label = {"input": f"input {H}x{W}" + (" (padding grey)" if not tconv and max(max(pads)) else ""),
                     "output": f"output {OH}x{OW}" + (" (orange: cropped by padding)" if tconv else ""),
                     "zero-inserted input": f"input {H}x{W} with zeros inserted, padded",
                     "output (direct)": f"output {OH}x{OW} (the same)"}[name]
            d.text((g.x0, g.y0 - TEXT_H), label, fill=INK)
        for k, note in enumerate(lay.notes):
            d.text((MARGIN, lay.size[1] - MARGIN - TEXT_H * (len(lay.notes) - k)), note, fill=INK)
        images.append(im)
    lay.frames = frames
    return images, lay


def svg(image, lay: Layout) -> str:
    """One frame as a vector SVG: a rect per cell (its colour read from the frame), the labels as text."""
    from xml.sax.saxutils import escape

    w, h = lay.size
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
             f'font-family="sans-serif" font-size="11">', f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{MARGIN}" y="{MARGIN + 10}">{escape(lay.title)}</text>']
    labels = {"input": "input", "output": "output", "zero-inserted input": "input, zeros inserted, padded",
              "output (direct)": "output (the same)"}
    for name, g in lay.grids.items():
        parts.append(f'<text x="{g.x0}" y="{g.y0 - 5}">{escape(labels[name])} {g.rows}x{g.cols}</text>')
        for r in range(g.r0, g.r0 + g.rows):
            for c in range(g.c0, g.c0 + g.cols):
                x0, y0, _, _ = g.box(r, c)
                rgb = image.getpixel(g.centre(r, c))[:3]
                parts.append(f'<rect x="{x0}" y="{y0}" width="{CELL}" height="{CELL}" fill="#%02x%02x%02x" '
                             f'stroke="#5a5a5a"/>' % rgb)
    for k, note in enumerate(lay.notes):
        parts.append(f'<text x="{MARGIN}" y="{h - MARGIN - TEXT_H * (len(lay.notes) - k) + 10}">{escape(note)}</text>')
    return "\n".join(parts + ["</svg>"]) + "\n"


def write(path: str | Path, images: list, lay: Layout) -> Path:
    """.png (the first frame), .gif (every frame, 0.6 s each, looping) or .svg; written atomically."""
    from cvtool.fsutil import atomic_path

    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".png", ".gif", ".svg"):
        raise UsageError(f"--draw writes .png, .gif or .svg, not {path.suffix or 'a file without a suffix'!r}")
    with atomic_path(path) as tmp:
        if ext == ".png":
            images[0].save(tmp, format="PNG")
        elif ext == ".gif":
            from PIL import Image

            palette = Image.new("P", (1, 1))
            palette.putpalette([v for c in COLOURS for v in c] + [0] * (768 - 3 * len(COLOURS)))
            pal = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]  # our colours, exactly
            pal[0].save(tmp, format="GIF", save_all=True, append_images=pal[1:], duration=600, loop=0, disposal=1)
        else:
            tmp.write_text(svg(images[0], lay))
    return path


def draw_doc(spec: LayerSpec, hw: tuple[int, int], path: str) -> dict:
    images, lay = render(spec, hw)
    written = write(path, images, lay)
    return {"mode": "draw", "file": str(written), "frames": len(images), "size": list(lay.size), "title": lay.title,
            "notes": lay.notes}
