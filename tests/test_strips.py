"""Large images read a band of rows at a time (cvtool.data.strips) and their mask and overlay written so
(cvtool.data.png_rows): oracles are Pillow's own decode (read_image) and Pillow reading back what we wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_data_cli import cli  # tests/ is on sys.path under pytest
from test_inference import COLORS, tiny_checkpoint

from cvtool.data.io import (
    OWN_KEY,
    read_image,
    read_mask_info,
    write_mask_overlay_bands,
    write_mask_png,
    write_overlay_png,
)
from cvtool.data.png_rows import write_png_rows
from cvtool.data.strips import open_strips
from cvtool.errors import DataError

H, W = 37, 53  # odd sizes: BMP pads rows to 4 bytes, bilevel rows end mid-byte


def picture(c: int | None) -> np.ndarray:
    rng = np.random.default_rng(c or 0)
    return rng.integers(0, 256, (H, W) if c is None else (H, W, c), dtype=np.uint8)


def saved(path, mode: str, **kw):
    a = picture(3 if mode == "RGB" else None)
    im = Image.fromarray(a)
    if mode == "1":
        im = im.convert("1")
    im.save(path, **kw)
    return path


RAW_FILES = [("rgb.tif", "RGB", {"tiffinfo": {278: 8}}), ("l.tif", "L", {"tiffinfo": {278: 8}}),
             ("bw.tif", "1", {"tiffinfo": {278: 5}}), ("one.tif", "L", {}),  # one strip
             ("rgb.bmp", "RGB", {}), ("l.bmp", "L", {}), ("bw.bmp", "1", {})]


@pytest.mark.parametrize("name, mode, kw", RAW_FILES)
def test_strips_read_what_pillow_decodes(tmp_path, name, mode, kw):
    path = saved(tmp_path / name, mode, **kw)
    s = open_strips(path)
    assert s is not None and s.hw == (H, W)
    whole = read_image(path)
    assert s.channels == whole.shape[2]
    for r0, r1 in [(0, H), (0, 1), (3, 11), (7, 8), (8, 16), (30, H), (H - 1, H)]:  # across strip boundaries
        band = s.rows(r0, r1)
        assert band.dtype == np.uint8 and band.shape == (r1 - r0, W, whole.shape[2])
        np.testing.assert_array_equal(band, whole[r0:r1])
    if mode == "1":
        assert set(np.unique(whole)) <= {0, 255}


def test_formats_without_raw_rows_are_decoded_whole(tmp_path):
    for name, kw in [("a.png", {}), ("a.jpg", {}), ("lzw.tif", {"compression": "tiff_lzw"})]:
        assert open_strips(saved(tmp_path / name, "RGB", **kw)) is None


def test_a_raw_file_shorter_than_its_header_is_refused(tmp_path):
    path = saved(tmp_path / "cut.tif", "RGB", tiffinfo={278: 8})
    data = path.read_bytes()
    strip = open_strips(path)
    assert strip is not None
    path.write_bytes(data[:-200])  # the last strip cut short; the header (at the start) intact
    with pytest.raises(DataError, match="fewer bytes"):
        open_strips(path)
    with pytest.raises(DataError, match="over the limit"):  # the size guard applies before any byte is mapped
        open_strips(saved(tmp_path / "big.tif", "L"), max_pixels=H * W - 1)


@pytest.mark.parametrize("channels", [1, 3])
def test_png_rows_reads_back_as_written(tmp_path, channels):
    a = picture(channels if channels == 3 else None)
    write_png_rows(tmp_path / "a.png", (H, W), channels, lambda r0, r1: a[r0:r1], texts={OWN_KEY: "image"}, band=5)
    with Image.open(tmp_path / "a.png") as im:
        assert im.mode == ("L" if channels == 1 else "RGB") and im.info[OWN_KEY] == "image"
        np.testing.assert_array_equal(np.asarray(im), a)


def test_banded_mask_and_overlay_equal_the_whole_ones(tmp_path):
    rgb = picture(3)
    mask = (picture(None) % 3).astype(np.uint8)
    mask[0, :4] = 255  # ignore: its own colour, never painted over
    write_mask_png(tmp_path / "m.png", mask, COLORS)
    write_overlay_png(tmp_path / "o.png", rgb, mask, COLORS, alpha=0.4)
    write_mask_overlay_bands(tmp_path / "mb.png", tmp_path / "ob.png", lambda r0, r1: rgb[r0:r1], mask, COLORS,
                             alpha=0.4)
    m, mode, pal = read_mask_info(tmp_path / "mb.png")
    m0, _, pal0 = read_mask_info(tmp_path / "m.png")
    assert mode == "P" and pal[:768] == pal0[:768]
    np.testing.assert_array_equal(m, m0)
    with Image.open(tmp_path / "ob.png") as a, Image.open(tmp_path / "o.png") as b:
        assert a.info[OWN_KEY] == "overlay"
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_segment_reads_a_raw_tiff_in_strips_and_gives_the_png_masks(tmp_path, capsys, monkeypatch):
    """The same image as a PNG (decoded whole) and as a TIFF in 16-row strips (read band by band), segmented in
    48-px tiles: the same mask and overlay, and the TIFF never read in more than a band of rows."""
    import cvtool.data.png_rows as png_rows
    import cvtool.data.strips as strips_mod

    model = tiny_checkpoint(tmp_path / "m.safetensors", in_channels=1, num_classes=3)
    rng = np.random.default_rng(3)
    a = np.kron(rng.integers(0, 256, (30, 40), dtype=np.uint8), np.ones((5, 5), np.uint8))  # 150 x 200
    Image.fromarray(a).save(tmp_path / "p.png")
    Image.fromarray(a).save(tmp_path / "t.tif", tiffinfo={278: 16})
    spans: list[tuple[int, int]] = []
    real = strips_mod.open_strips

    def watched(path, **kw):
        s = real(path, **kw)
        if s is None:
            return None

        def rows(r0, r1):
            spans.append((r0, r1))
            return s.rows(r0, r1)
        return s._replace(rows=rows)

    monkeypatch.setattr(strips_mod, "open_strips", watched)
    monkeypatch.setattr(png_rows, "BAND", 40)  # the overlay written 40 rows at a time
    docs = {}
    for name in ("p.png", "t.tif"):
        code, out, err = cli(capsys, "segment", str(tmp_path / name), "-m", str(model), "--backend", "numpy",
                             "--tile", "48", "--out", str(tmp_path / name.replace(".", "_")), "--json")
        assert code == 0, err
        docs[name] = json.loads(out)["images"][0]
        assert docs[name]["tiled"]
    assert spans and max(r1 - r0 for r0, r1 in spans) <= 48  # a band of tiles or of the overlay, never the image
    mp, mt = read_mask_info(docs["p.png"]["mask"])[0], read_mask_info(docs["t.tif"]["mask"])[0]
    np.testing.assert_array_equal(mp, mt)
    assert len(np.unique(mp)) > 1
    with Image.open(docs["p.png"]["overlay"]) as x, Image.open(docs["t.tif"]["overlay"]) as y:
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
