"""A PNG written a band of rows at a time: a 400 MP image's mask and overlay without holding either whole.

Pillow encodes from one image in memory; segment's band-by-band path (cvtool.model.bands) has the mask at one
byte a pixel but the overlay would be 3 bytes a pixel, and cvtool.data.io.overlay blends it in float32 (12 bytes a
pixel: 4.8 GB for 20000 x 20000). Here the rows come from `rows(r0, r1)`, each band is filtered with PNG filter 0
(none) and fed through one zlib stream into IDAT chunks. The file carries the same text chunks as every other
image cvtool writes (texts: cvtool.data.io passes its "cvtool" key), and is written through atomic_path.

    write_png_rows("a.png", (H, W), 3, lambda r0, r1: img[r0:r1], texts={"cvtool": "image"})
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Callable

import numpy as np

from cvtool.fsutil import atomic_path

BAND = 256  # rows a band: 20000 px wide RGB -> 15 MB of pixels in flight


def _chunk(f, kind: bytes, data: bytes) -> None:
    f.write(struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def write_png_rows(path: str | os.PathLike, hw: tuple[int, int], channels: int, rows: Callable[[int, int], np.ndarray],
                   *, texts: dict[str, str], palette: np.ndarray | None = None, band: int | None = None,
                   level: int = 3) -> None:
    """8-bit PNG of H x W pixels: grayscale (channels 1), RGB (3) or palette (1, palette (256, 3) uint8); rows(r0, r1)
    gives uint8 (r1 - r0, W[, channels]); texts: tEXt chunks (latin-1). zlib level 3, as
    cvtool.data.io.write_image_png."""
    H, W = hw
    band = band or BAND
    color_type = 3 if palette is not None else {1: 0, 3: 2}[channels]
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        _chunk(f, b"IHDR", struct.pack(">IIBBBBB", W, H, 8, color_type, 0, 0, 0))
        # the text chunks before the pixels: a header read finds them
        for key, text in texts.items():
            _chunk(f, b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1"))
        if palette is not None:
            _chunk(f, b"PLTE", np.asarray(palette, np.uint8).reshape(-1, 3)[:256].tobytes())
        z = zlib.compressobj(level)
        pending = b""
        for r0 in range(0, H, band):
            a = np.asarray(rows(r0, min(H, r0 + band)), np.uint8).reshape(min(H, r0 + band) - r0, W * channels)
            line = np.zeros((a.shape[0], 1 + a.shape[1]), np.uint8)  # each row: filter byte 0, then its bytes
            line[:, 1:] = a
            pending += z.compress(line.tobytes())
            if len(pending) >= 1 << 20:  # IDAT chunks of about 1 MB
                _chunk(f, b"IDAT", pending)
                pending = b""
        _chunk(f, b"IDAT", pending + z.flush())
        _chunk(f, b"IEND", b"")
