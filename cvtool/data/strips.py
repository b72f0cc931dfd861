"""An image's rows read from its file a strip at a time, where the file stores its pixels raw.

Uncompressed TIFF (in strips) and uncompressed BMP hold each row's bytes at a known offset: a 20000 x 20000 image
is read a band of rows at a time, never whole (segment's band-by-band path, cvtool.model.bands). Pillow reads the
header and says where each strip lies (its "raw" tiles: extents, offset, rawmode, stride, orientation); the bytes
of a band are read when it is asked for (not memory-mapped: mapped pages count in the process's resident memory,
and a mapped 180 MB TIFF measured no lower than its PNG decoded whole). PNG, JPEG and compressed TIFF have no such
layout (a row's bytes depend on every row before it): open_strips returns None and the image is decoded whole
(cvtool.data.io.read_image).

    s = open_strips("scan.tif")           # None: decode it whole
    band = s.rows(0, 512)                 # uint8 (512, W, C), exactly read_image(...)[0:512]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from cvtool.data.io import MAX_PIXELS, open_pil
from cvtool.errors import DataError

# rawmode -> (bits a pixel, channels read_image returns); "1;I": a set bit is black (PBM), "1": a set bit is white
RAW = {"L": (8, 1), "RGB": (24, 3), "BGR": (24, 3), "1": (1, 1), "1;I": (1, 1)}


class Strip(NamedTuple):
    y0: int  # image rows y0..y1-1
    y1: int
    offset: int  # of the strip's first row in the file (its last image row when bottom_up)
    row_bytes: int
    bottom_up: bool  # BMP: the file's first row is the strip's last
    rawmode: str


class Strips(NamedTuple):
    hw: tuple[int, int]
    channels: int
    rows: Callable[[int, int], np.ndarray]  # (r0, r1) -> uint8 (r1 - r0, W, channels)


def open_strips(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> Strips | None:
    """The rows reader of a file that stores its pixels raw, or None (decode it whole). The header's size goes
    through read_image's guards (max_pixels); a header that claims more bytes than the file holds is refused."""
    path = Path(path)
    with open_pil(path, max_pixels=max_pixels) as im:  # the header only
        W, H = im.size
        mode, tiles = im.mode, list(im.tile)
    if mode not in ("L", "RGB", "1") or not tiles:
        return None
    strips = []
    for t in tiles:
        args = t.args if isinstance(t.args, tuple) else (t.args,)
        rawmode, stride, orientation = (tuple(args) + (0, 1))[:3]
        x0, y0, x1, y1 = t.extents
        if t.codec_name != "raw" or rawmode not in RAW or (x0, x1) != (0, W) or orientation not in (1, -1):
            return None
        bits = RAW[rawmode][0]
        row_bytes = int(stride) or (W * bits + 7) // 8
        if row_bytes < (W * bits + 7) // 8:
            return None
        strips.append(Strip(y0, y1, int(t.offset), row_bytes, orientation == -1, rawmode))
    strips.sort()
    if strips[0].y0 != 0 or strips[-1].y1 != H or any(a.y1 != b.y0 for a, b in zip(strips, strips[1:])):
        return None  # not full-width strips that cover the image once, top to bottom
    size = path.stat().st_size
    if any(s.offset + (s.y1 - s.y0) * s.row_bytes > size for s in strips):
        raise DataError(f"{path}: the header says {W}x{H} pixels, the file holds fewer bytes than that "
                        "(truncated or a header that lies)")
    C = RAW[strips[0].rawmode][1]

    def rows(r0: int, r1: int) -> np.ndarray:
        out = np.empty((r1 - r0, W, C), np.uint8)
        with open(path, "rb") as f:  # read, not memory-mapped: mapped pages would count in the process's memory
            for s in strips:
                a, b = max(r0, s.y0), min(r1, s.y1)
                if a >= b:
                    continue
                # the file rows of image rows a..b-1 (bottom-up: the strip's last image row comes first)
                f0, f1 = (s.y1 - b, s.y1 - a) if s.bottom_up else (a - s.y0, b - s.y0)
                f.seek(s.offset + f0 * s.row_bytes)
                raw = f.read((f1 - f0) * s.row_bytes)
                if len(raw) != (f1 - f0) * s.row_bytes:
                    raise DataError(f"{path}: the file ended inside its pixels (changed while being read?)")
                buf = np.frombuffer(raw, np.uint8).reshape(f1 - f0, s.row_bytes)
                if s.bottom_up:
                    buf = buf[::-1]
                out[a - r0: b - r0] = _pixels(buf, s.rawmode, W)
        return out

    return Strips((H, W), C, rows)


def _pixels(buf: np.ndarray, rawmode: str, W: int) -> np.ndarray:
    """(n, W, C) uint8 from n stored rows (n, row_bytes), as read_image returns them (bilevel: 0 or 255)."""
    if rawmode == "L":
        return buf[:, :W, None]
    if rawmode in ("RGB", "BGR"):
        rgb = buf[:, : 3 * W].reshape(len(buf), W, 3)
        return rgb[..., ::-1] if rawmode == "BGR" else rgb
    bits = np.unpackbits(buf, axis=1)[:, :W]  # most significant bit first, as TIFF, BMP and PBM store them
    white = bits if rawmode == "1" else 1 - bits
    return (white * 255).astype(np.uint8)[..., None]
