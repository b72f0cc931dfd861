"""Hostile and unusual image files (issue 22), built byte by byte in tmp_path: a header that claims more pixels than
--max-pixels is refused before decoding, Pillow's decompression-bomb error and warning never reach the user, a PNG
text or colour-profile chunk that inflates past Pillow's limit is one line, every multi-frame file is refused by one
rule, and a 32-bit float image is read scaled by its own range (checked value by value).
"""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import cli
from PIL import Image, ImageFile
from test_inference import tiny_checkpoint

from cvtool.data.io import image_channels, read_image, read_mask
from cvtool.errors import DataError


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(path: Path, w: int, h: int, *, bits: int = 8, rows: bytes | None = None, before: bytes = b"",
        after: bytes = b"") -> Path:
    """A grayscale PNG by hand: IHDR claiming w x h at `bits`, the given extra chunks, IDAT of `rows` (default:
    all-zero rows of the claimed size, deflated), IEND."""
    if rows is None:
        rows = bytes((1 + (w * bits + 7) // 8) * h)
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, bits, 0, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + before + chunk(b"IDAT", zlib.compress(rows, 9)) + after
                     + chunk(b"IEND", b""))
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any pixel data is decoded (the guards act on the header)."""
    def refuse(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_a_header_beyond_max_pixels_is_refused_before_decoding(tmp_path, no_decoding):
    liar = png(tmp_path / "liar.png", 60000, 60000, rows=b"\0" * 100)  # claims 3.6 GP in a file of 100 bytes
    with pytest.raises(DataError) as e:
        read_image(liar)
    assert e.value.message == (f"{liar}: image of 60000x60000 = 3,600,000,000 pixels is over the limit of "
                               "100,000,000 (refused before decoding)")
    assert "--max-pixels" in e.value.hint
    with pytest.raises(DataError, match="pixels is over the limit of 100,000,000"):
        read_mask(liar)


def test_a_12000_square_one_bit_png_is_refused_at_its_header(tmp_path, no_decoding):
    """17 KB on disk, 144 MP decoded: the work is bounded by the header, not by decoding it."""
    bilevel = png(tmp_path / "bits.png", 12000, 12000, bits=1)
    assert bilevel.stat().st_size < 40_000
    with pytest.raises(DataError, match="12000x12000 = 144,000,000 pixels is over the limit of 100,000,000"):
        read_image(bilevel)


def test_max_pixels_is_the_limit_exactly(tmp_path):
    img = png(tmp_path / "a.png", 30, 20, rows=b"".join(b"\0" + bytes(range(30)) for _ in range(20)))
    with pytest.raises(DataError, match="30x20 = 600 pixels is over the limit of 599 "):
        read_image(img, max_pixels=599)
    assert read_image(img, max_pixels=600).shape == (20, 30, 1)
    assert read_image(img, max_pixels=0)[0, :, 0].tolist() == list(range(30))  # 0: no limit


def test_pillows_own_bomb_limit_and_warning_never_reach_the_user(tmp_path, monkeypatch):
    img = png(tmp_path / "a.png", 40, 30)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow would warn above 100 px and refuse above 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning fails the test
        assert read_image(img).shape == (30, 40, 1)
        assert read_mask(img).shape == (30, 40)


def test_segment_max_pixels_option(tmp_path, capsys):
    model = tiny_checkpoint(tmp_path / "m.safetensors", in_channels=1, num_classes=3)
    img = png(tmp_path / "a.png", 24, 20, rows=b"".join(b"\0" + bytes(24) for _ in range(20)))
    liar = png(tmp_path / "liar.png", 60000, 60000, rows=b"\0" * 100)
    code, out, err = cli(capsys, "segment", str(img), str(liar), "-m", str(model), "--backend", "numpy",
                         "--out", str(tmp_path / "o"))
    assert code == 1 and "DecompressionBomb" not in err and "Traceback" not in err
    assert f"failed: {liar}: image of 60000x60000 = 3,600,000,000 pixels is over the limit of 100,000,000" in err
    assert err.strip().splitlines()[-1] == "error: 1 of 2 input(s) failed: liar.png"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a_mask.png", "a_overlay.png"]
    code, _, err = cli(capsys, "segment", str(img), "-m", str(model), "--backend", "numpy", "--max-pixels", "100",
                       "--out", str(tmp_path / "p"))
    assert code == 1 and "24x20 = 480 pixels is over the limit of 100 (refused before decoding)" in err
    code, _, err = cli(capsys, "segment", str(img), "-m", str(model), "--max-pixels", "-1")
    assert code == 2 and err.strip() == "error: --max-pixels must be 0 (no limit) or more, got -1"


@pytest.mark.parametrize("where", ["zTXt", "iCCP", "zTXt after the pixels"])
def test_a_chunk_that_inflates_past_pillows_limit_is_one_line(tmp_path, where):
    bomb = zlib.compress(b"a" * 50_000_000, 9)  # 50 MB of text in 49 KB
    body = chunk(b"zTXt" if where.startswith("zTXt") else b"iCCP", b"key\0\0" + bomb)
    path = png(tmp_path / "c.png", 20, 20, **({"after": body} if "after" in where else {"before": body}))
    for read in (read_image, read_mask):
        with pytest.raises(DataError) as e:
            read(path)
        assert e.value.message == (f"{path}: a text or colour-profile chunk (tEXt/zTXt/iTXt/iCCP) of this PNG "
                                   "decompresses to more than Pillow reads (1 MB): refused as a likely decompression bomb")


def frames(path: Path, n: int = 3, **save) -> Path:
    f = [Image.fromarray(np.full((10, 12), 40 * k, np.uint8)) for k in range(n)]
    f[0].save(path, save_all=True, append_images=f[1:], **save)
    return path


@pytest.mark.parametrize("name", ["anim.png", "pages.tif"])
def test_every_multi_frame_file_is_refused_by_one_rule(tmp_path, name):
    path = frames(tmp_path / name)
    for read in (read_image, read_mask):
        with pytest.raises(DataError) as e:
            read(path)
        assert e.value.message == (f"{path}: the {'image' if read is read_image else 'mask'} holds 3 frames (an "
                                   "animation or a multi-page file); cvtool reads single-frame images only")
    single = frames(tmp_path / f"one{Path(name).suffix}", n=1)
    assert read_image(single).shape == (10, 12, 1)  # one frame: read as ever


def test_a_dataset_with_a_multi_page_mask_is_one_line(tmp_path, capsys):
    for sub in ("images", "masks"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((10, 12), 9 * i, np.uint8)).save(tmp_path / "d" / "images" / f"{i}.png")
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "d" / "masks" / f"{i}.tif")
    frames(tmp_path / "d" / "masks" / "2.tif")
    code, out, err = cli(capsys, "data", "check", str(tmp_path / "d"))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "2.tif: the mask holds 3 frames" in err


def test_float_images_are_scaled_by_their_own_finite_range(tmp_path):
    v = np.array([[-1.0, 0.0, 1.0], [3.0, np.nan, np.inf]], np.float32)
    Image.fromarray(v, mode="F").save(tmp_path / "f.tif")
    a = read_image(tmp_path / "f.tif")
    # round(255 (v + 1) / 4): -1 -> 0, 0 -> 63.75 -> 64, 1 -> 127.5 -> 128 (half to even), 3 -> 255; NaN, inf -> 0
    assert a.dtype == np.uint8 and a[..., 0].tolist() == [[0, 64, 128], [255, 0, 0]]
    assert image_channels("F") == 1
    Image.fromarray(np.full((2, 3), 7.5, np.float32), mode="F").save(tmp_path / "flat.tif")
    assert read_image(tmp_path / "flat.tif").max() == 0  # no range: 0
    big = np.array([[-3e38, 3e38]], np.float32)  # v - min overflows float32: computed in float64
    Image.fromarray(big, mode="F").save(tmp_path / "big.tif")
    assert read_image(tmp_path / "big.tif")[..., 0].tolist() == [[0, 255]]


def test_segment_reads_a_float_tiff(tmp_path, capsys):
    model = tiny_checkpoint(tmp_path / "m.safetensors", in_channels=1, num_classes=3)
    f = np.random.default_rng(0).normal(1000, 50, (20, 24)).astype(np.float32)  # microscopy-like counts
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    code, _, err = cli(capsys, "segment", str(tmp_path / "f.tif"), "-m", str(model), "--backend", "numpy",
                       "--out", str(tmp_path / "o"))
    assert code == 0, err
    assert Image.open(tmp_path / "o" / "f_mask.png").size == (24, 20)


def test_damaged_files_of_every_format_are_one_data_error_and_no_raw_warning(tmp_path):
    """Truncated and bit-flipped PNG, JPEG, BMP and TIFF files (seeded): each reads or fails with a DataError;
    no Pillow exception type (a TIFF's TypeError 'Missing dimensions' was one) and no Pillow warning escapes."""
    import io

    rng = np.random.default_rng(0)
    others = []
    for fmt, ext in (("PNG", "png"), ("JPEG", "jpg"), ("BMP", "bmp"), ("TIFF", "tif")):
        for shape in ((23, 31), (23, 31, 3)):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(buf, format=fmt)
            good = buf.getvalue()
            for i in range(150):
                data = bytearray(good[: rng.integers(0, len(good))] if i % 2 else good)
                for _ in range(0 if i % 2 else rng.integers(1, 6)):
                    data[rng.integers(0, len(data))] = rng.integers(0, 256)
                path = tmp_path / f"{fmt}{len(shape)}_{i}.{ext}"
                path.write_bytes(bytes(data))
                for read in (read_image, read_mask):
                    with warnings.catch_warnings():
                        warnings.simplefilter("error")
                        try:
                            read(path)
                        except DataError as e:
                            assert str(path) in e.message
                        except Exception as e:  # noqa: BLE001 - what the test is after
                            others.append(f"{path.name}: {type(e).__name__}: {e}")
    assert others == []
