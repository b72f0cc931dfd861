"""`convcalc --draw`: pictures read back pixel by pixel. In frame t the highlighted input cells are exactly the
window that output t reads (worked out here from the formula), and a transposed convolution's two drawings agree."""

import numpy as np
import pytest
from PIL import Image
from test_convcalc import fails  # tests/ is on sys.path under pytest

from cvtool.convcalc.chain import make_layer
from cvtool.convcalc.draw import CURRENT, PAD, WHITE, WINDOW, render


def spec_of(kind, k, s, p, d=1, op=0, ceil=False):
    return make_layer(kind, (k, k), (s, s), p, (d, d), (op, op), ceil_mode=ceil)


def colour(im, grid, r, c):
    return im.getpixel(grid.centre(r, c))[:3]


def window(i, j, k, s, p, d):
    """Input cells (padding coordinates: row -p is the first padding row) output (i, j) reads."""
    return {(i * s + u * d - p, j * s + v * d - p) for u in range(k) for v in range(k)}


def read_gif(path):
    frames = []
    with Image.open(path) as im:
        for t in range(im.n_frames):
            im.seek(t)
            frames.append(im.convert("RGB"))
    return frames


@pytest.mark.parametrize("kind,k,s,p,d,ceil", [("conv", 3, 1, 1, 1, False), ("conv", 3, 2, 1, 1, False),
                                                ("conv", 2, 1, 0, 2, False), ("maxpool", 3, 2, 0, 1, True),
                                                ("avgpool", 2, 2, 1, 1, False)])
def test_each_frame_highlights_the_window_its_output_reads(tmp_path, capsys, kind, k, s, p, d, ceil):
    H = W = 5
    spec = spec_of(kind, k, s, p, d, ceil=ceil)
    _, lay = render(spec, (H, W))
    args = ["-i", "5", "-k", str(k), "-s", str(s), "-p", str(p), "-d", str(d)]
    if kind != "conv":
        args += ["--pool", kind[:3]] + (["--ceil-mode"] if ceil else [])
    from cvtool.cli import main

    with pytest.raises(SystemExit) as e:
        main(["convcalc", *args, "--draw", str(tmp_path / "a.gif")])
    assert e.value.code in (0, None)
    frames = read_gif(tmp_path / "a.gif")
    inp, out = lay.grids["input"], lay.grids["output"]
    OH, OW = out.rows, out.cols
    assert len(frames) == OH * OW
    for t, im in enumerate(frames):
        i, j = divmod(t, OW)
        blue = {(r, c) for r in range(inp.r0, inp.r0 + inp.rows) for c in range(inp.c0, inp.c0 + inp.cols)
                if colour(im, inp, r, c) == WINDOW}
        assert blue == window(i, j, k, s, p, d), (t, sorted(blue))
        green = [(r, c) for r in range(OH) for c in range(OW) if colour(im, out, r, c) == CURRENT]
        assert green == [(i, j)]
        outside = [(r, c) for r in range(inp.r0, inp.r0 + inp.rows) for c in range(inp.c0, inp.c0 + inp.cols)
                   if not (0 <= r < H and 0 <= c < W) and (r, c) not in blue]
        assert all(colour(im, inp, r, c) == PAD for r, c in outside)  # padding is drawn as padding


def test_transposed_convolution_drawn_both_ways_agrees(tmp_path):
    k, s, p, op = 3, 2, 1, 1
    H = W = 3
    images, lay = render(spec_of("tconv", k, s, p, op=op), (H, W))
    inp, z = lay.grids["input"], lay.grids["zero-inserted input"]
    q = k - 1 - p  # the direct form pads d(k-1) - p
    assert (z.r0, z.rows) == (-q, q + (H - 1) * s + 1 + q + op)
    for t, im in enumerate(images):
        i, j = lay.frames[t]["out"]
        stamped = {(a, b) for a in range(H) for b in range(W) if colour(im, inp, a, b) == WINDOW}
        # stamping: input pixel (a, b) writes output rows a*s - p .. a*s - p + k - 1
        assert stamped == {(a, b) for a in range(H) for b in range(W)
                           if 0 <= i - (a * s - p) < k and 0 <= j - (b * s - p) < k}
        blue_z = {(r, c) for r in range(z.r0, z.r0 + z.rows) for c in range(z.c0, z.c0 + z.cols)
                  if colour(im, z, r, c) == WINDOW}
        assert blue_z == {(i + u - q, j + v - q) for u in range(k) for v in range(k)}
        real = {(r // s, c // s) for r, c in blue_z if r % s == 0 and c % s == 0 and 0 <= r <= (H - 1) * s
                and 0 <= c <= (W - 1) * s}
        assert real == stamped  # the direct convolution's window holds exactly the pixels whose stamps overlap


def test_png_and_svg_are_the_first_frame(tmp_path, capsys):
    from cvtool.cli import main

    for ext in ("png", "svg"):
        with pytest.raises(SystemExit) as e:
            main(["convcalc", "-i", "4", "-k", "3", "--draw", str(tmp_path / f"a.{ext}")])
        assert e.value.code in (0, None)
    im = Image.open(tmp_path / "a.png").convert("RGB")
    images, lay = render(spec_of("conv", 3, 1, 0), (4, 4))
    assert np.array_equal(np.asarray(im), np.asarray(images[0]))
    text = (tmp_path / "a.svg").read_text()
    assert text.startswith("<svg") and f'width="{lay.size[0]}"' in text
    g = lay.grids["input"]
    x0, y0, _, _ = g.box(0, 0)  # output (0, 0)'s window starts at input (0, 0): a blue rect there
    assert f'<rect x="{x0}" y="{y0}" width="26" height="26" fill="#4285f4"' in text
    assert text.count("<rect ") == 1 + sum(gr.rows * gr.cols for gr in lay.grids.values())
    import xml.dom.minidom

    xml.dom.minidom.parseString(text)  # well-formed
    assert colour(im, lay.grids["input"], 3, 3) == WHITE  # outside output (0, 0)'s window


@pytest.mark.parametrize("args,msg", [
    (["-i", "5", "-k", "3", "--draw", "x.jpg"], ".png, .gif or .svg"),
    (["-k", "3", "--draw", "x.png"], "needs the input size"),
    (["-i", "60", "-k", "3", "--draw", "x.png"], "too large"),
    (["-i", "3", "-k", "5", "--draw", "x.png"], "larger than the padded input"),
    (["-i", "3", "-k", "3", "--draw", "/proc/no/such/x.png"], "cannot write"),
])
def test_bad_draw_requests_are_one_line_and_exit_2(capsys, args, msg):
    assert msg in fails(capsys, *args)
