"""Image and mask files <-> numpy arrays. Pillow is imported inside each function (core stays light).

Images come back as uint8 (H, W, C) with C = 1 (grayscale) or 3 (RGB); masks as 2-D integer arrays
whose values are raw labels (class indices, palette indices, 16-bit values or, for colour masks, r<<16|g<<8|b
codes) that a dataset's value map turns into class indices. Every failure is a DataError naming the file.

Guards, applied to every image and mask before its pixels are decoded: a header that claims more than
`max_pixels` (MAX_PIXELS unless the caller says; `segment --max-pixels`) is refused, as is a file of more than one
frame (animated PNG, multi-page TIFF: one rule for all, no frame is picked silently) and a PNG whose text or
colour-profile chunk decompresses to more than Pillow reads (1 MB). Pillow's own decompression-bomb limit and its
warning are switched off: the max_pixels check replaces them with one line.

Masks and overlays that cvtool writes carry a PNG text chunk "cvtool" (OWN_KEY) naming what they are; segment
overwrites an existing file only when it carries it (written_by_cvtool).
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np

from cvtool.errors import DataError
from cvtool.fsutil import atomic_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
IGNORE = 255  # mask value that no loss or metric counts (VOC's object boundaries)
MAX_CLASSES = IGNORE  # a palette mask PNG holds classes 0..254, 255 being IGNORE: what segment can write
IGNORE_COLOR = (224, 224, 192)  # how VOC draws it

_GRAY_MODES = {"1", "L", "LA", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_MASK_MODES = {"1", "L", "P", "I;16", "I;16L", "I;16B", "I;16N", "I"}
COLOUR_MASK_MODES = {"RGB", "RGBA"}
MAX_PIXELS = 100_000_000  # 10000 x 10000: what a read decodes at most unless told otherwise (0: no limit)
OWN_KEY = "cvtool"  # PNG text chunk on every mask/overlay cvtool writes: "mask" | "overlay" | "image"


def voc_palette(n: int = 256) -> list[tuple[int, int, int]]:
    """PASCAL VOC's colour map: the bits of the class index spread over R, G, B (0 black, 1 dark red, ...)."""
    colors = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors.append((r, g, b))
    return colors


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def open_pil(path: str | os.PathLike, what: str = "image", max_pixels: int = MAX_PIXELS):
    """Pillow image with only the header read (lazy), after the guards in the module's docstring.
    Missing/unknown/unsupported/refused -> DataError."""
    from PIL import UnidentifiedImageError

    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: unsupported {what} type '{path.suffix}'",
                        hint="use one of " + ", ".join(IMAGE_SUFFIXES))
    Image = _pillow()
    try:
        with _quiet():
            im = Image.open(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such {what} file") from None
    except UnidentifiedImageError:
        raise DataError(f"{path}: corrupt or unreadable {what} (not a {path.suffix[1:].upper()} file)") from None
    except ValueError as e:  # PngImagePlugin's MAX_TEXT_CHUNK / MAX_TEXT_MEMORY, read before the pixels
        raise _chunk_error(path, what, e) from None
    except (OSError, SyntaxError) as e:
        raise DataError(f"{path}: cannot read {what}: {getattr(e, 'strerror', None) or e}") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - a parser's TypeError/KeyError/struct.error on a damaged header
        raise DataError(f"{path}: corrupt or unreadable {what} ({type(e).__name__}: {e})") from None
    try:
        _guard(im, path, what, max_pixels)
    except BaseException:
        im.close()
        raise
    return im


@contextlib.contextmanager
def _quiet():
    """Pillow's warnings about a file (corrupt EXIF, tags past the end) are not printed raw: the file reads or
    fails with one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _pillow():
    """PIL.Image with its decompression-bomb limit off: open_pil's max_pixels replaces it (Pillow's error and
    warning would reach the user raw)."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    return Image


def _guard(im, path: Path, what: str, max_pixels: int) -> None:
    W, H = im.size
    if max_pixels and W * H > max_pixels:
        raise DataError(f"{path}: {what} of {W}x{H} = {W * H:,} pixels is over the limit of {max_pixels:,} "
                        "(refused before decoding)",
                        hint="downscale or crop it; cvtool segment --max-pixels N raises the limit (0: none)")
    try:
        with _quiet():
            frames = getattr(im, "n_frames", 1)  # a TIFF reads every page's header for it
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - a broken page table
        raise DataError(f"{path}: corrupt or unreadable {what} ({type(e).__name__}: {e})") from None
    if frames > 1:
        raise DataError(f"{path}: the {what} holds {frames} frames (an animation or a multi-page file); "
                        "cvtool reads single-frame images only", hint="save the frame you want as its own file")


def _chunk_error(path: Path, what: str, e: Exception) -> DataError:
    if "MAX_TEXT" in str(e):
        return DataError(f"{path}: a text or colour-profile chunk (tEXt/zTXt/iTXt/iCCP) of this PNG decompresses to "
                         f"more than Pillow reads (1 MB): refused as a likely decompression bomb",
                         hint="re-save the image without its metadata")
    return DataError(f"{path}: corrupt or unreadable {what} ({e})")


def _load(im, path: Path, what: str):
    try:
        with _quiet():
            im.load()
    except ValueError as e:  # also a text chunk after the pixels
        raise _chunk_error(path, what, e) from None
    except (OSError, SyntaxError) as e:  # truncated / broken streams
        raise DataError(f"{path}: corrupt or unreadable {what} ({e})") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - a decoder's TypeError/IndexError on damaged data
        raise DataError(f"{path}: corrupt or unreadable {what} ({type(e).__name__}: {e})") from None
    return im


def image_channels(mode: str) -> int:
    """Channels read_image returns for a Pillow mode: 1 for grayscale modes, else 3."""
    return 1 if mode in _GRAY_MODES else 3


def read_image(path: str | os.PathLike, channels: int | None = None, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """uint8 (H, W, C): C = 1 for grayscale files, 3 otherwise (RGBA drops alpha, palette -> RGB).

    16-bit (and 32-bit integer) grayscale keeps the top 8 of 16 bits: value >> 8, after clipping to 0..65535.
    32-bit float grayscale is scaled by its own range: round(255 (v - min) / (max - min)) over the finite
    values; NaN and infinities read 0, a constant image 0.
    CMYK (no colour management): R = round((255 - C)(255 - K) / 255), G and B likewise from M and Y.
    channels=1 or 3 forces that many (RGB -> luminance, gray -> repeated)."""
    path = Path(path)
    with open_pil(path, max_pixels=max_pixels) as im:
        _load(im, path, "image")
        if im.mode.startswith("I"):  # 16/32-bit grayscale: keep the top 8 of 16 bits
            a = (np.asarray(im, dtype=np.int64).clip(0, 65535) >> 8).astype(np.uint8)[..., None]
        elif im.mode == "CMYK":  # our rule, not Pillow's (which has changed between versions)
            c = np.asarray(im, dtype=np.float32)
            a = np.rint((255 - c[..., :3]) * (255 - c[..., 3:]) / 255).astype(np.uint8)
        elif im.mode in ("1", "L", "LA"):
            a = np.asarray(im.convert("L"))[..., None]
        elif im.mode == "F":
            a = float_to_uint8(np.asarray(im))[..., None]
        else:
            a = np.asarray(im.convert("RGB"))
    if channels is not None and a.shape[2] != channels:
        if channels == 3:
            a = np.repeat(a, 3, axis=2)
        else:  # ITU-R 601 luma, as Pillow's convert("L")
            a = (a.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round().astype(np.uint8)[..., None]
    return np.ascontiguousarray(a)


def read_json(path: Path, what: str, hint: str | None = None):
    """The JSON document in a file (a BOM allowed), or one DataError naming the file (and line, column)."""
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})", hint=hint) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read {what} ({e})", hint=hint) from None


def float_to_uint8(f: np.ndarray) -> np.ndarray:
    """A float image (microscopy, remote sensing) scaled by its own finite range to 0..255; NaN/inf -> 0."""
    ok = np.isfinite(f)
    if not ok.any():
        return np.zeros(f.shape, np.uint8)
    lo, hi = float(f[ok].min()), float(f[ok].max())
    if hi <= lo:
        return np.zeros(f.shape, np.uint8)
    a = np.where(ok, f, lo).astype(np.float64)  # float64: (v - lo) of values near +-3e38 overflows float32
    a -= lo
    a *= 255.0 / (hi - lo)
    return np.rint(a).astype(np.uint8)


def rgb_code(colors) -> np.ndarray:
    """int64 r<<16 | g<<8 | b of each (r, g, b): how colour masks are read (one integer per pixel)."""
    c = np.asarray(colors, np.int64).reshape(-1, 3)
    return (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]


def hex_color(code: int) -> str:
    """#rrggbb of an rgb_code value."""
    return f"#{int(code) & 0xFFFFFF:06x}"


def read_mask_info(path: str | os.PathLike, colour: bool = False) -> tuple[np.ndarray, str, list[int] | None]:
    """(mask as read_mask returns it, the file's Pillow mode, its flat RGB palette or None).

    colour=True also accepts RGB(A) colour-coded masks (alpha dropped), read as int64 rgb_code values."""
    path = Path(path)
    with open_pil(path, "mask") as im:
        rgb = im.mode in COLOUR_MASK_MODES
        if im.mode not in _MASK_MODES and not (colour and rgb):
            hint = "store masks as one channel whose value is the class index"
            if rgb:
                hint += ', or give "colors" in classes.json (one [r, g, b] per class) to read colour masks'
            raise DataError(f"{path}: mask is {im.mode}, expected a class-index (grayscale) or palette PNG",
                            hint=hint)
        _load(im, path, "mask")
        if rgb:
            c = np.asarray(im.convert("RGB") if im.mode != "RGB" else im, dtype=np.int64)
            a = (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]
        elif im.mode == "1":  # bilevel = the binary 0/255 case
            a = np.asarray(im, dtype=np.uint8) * np.uint8(255)
        elif im.mode.startswith("I"):
            a = np.asarray(im, dtype=np.int64)
        else:
            a = np.array(im, dtype=np.uint8)
        return a, im.mode, (im.getpalette() if im.mode == "P" else None)


def read_mask(path: str | os.PathLike, colour: bool = False) -> np.ndarray:
    """2-D array of raw mask values: uint8 for 8-bit/palette/bilevel files (palette PNG: the index), int64 for
    16-bit, and with colour=True int64 rgb_code values for RGB(A) files."""
    return read_mask_info(path, colour)[0]


def _rgb_table(colors) -> np.ndarray:
    """(256, 3) uint8 look-up table: class colours, IGNORE_COLOR at 255, black elsewhere."""
    lut = np.zeros((256, 3), np.uint8)
    cols = np.asarray(list(colors)[:255], np.uint8).reshape(-1, 3)
    lut[: len(cols)] = cols
    lut[IGNORE] = IGNORE_COLOR
    return lut


def write_mask_png(path: str | os.PathLike, mask: np.ndarray, colors) -> None:
    """Palette PNG (mode P): pixel value = class index, palette = class colours (255 = ignore colour). Atomic."""
    from PIL import Image

    mask = np.asarray(mask)
    if mask.ndim != 2 or mask.size and (mask.min() < 0 or mask.max() > 255):
        raise DataError(f"{path}: a mask PNG needs a 2-D array of values 0..255, got shape {mask.shape}")
    im = Image.fromarray(mask.astype(np.uint8))  # mode L; putpalette turns it into P, values kept
    im.putpalette(_rgb_table(colors).ravel().tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG", pnginfo=_own_info("mask"))


def write_image_png(path: str | os.PathLike, image: np.ndarray, kind: str = "image") -> None:
    """uint8 (H, W), (H, W, 1) or (H, W, 3) -> PNG tagged as cvtool's `kind`. Atomic."""
    from PIL import Image

    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    with atomic_path(path) as tmp:  # zlib level 3: faster than Pillow's 6, files no larger (docs/benchmarks.md)
        Image.fromarray(a.astype(np.uint8)).save(tmp, format="PNG", compress_level=3, pnginfo=_own_info(kind))


def _own_info(kind: str):
    """The PNG text chunks that mark a file as cvtool's (before the pixels, so a header read finds them)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, text in own_texts(kind).items():
        info.add_text(key, text)
    return info


def own_texts(kind: str) -> dict[str, str]:
    """The text chunks of every PNG cvtool writes: its OWN_KEY mark ("mask" | "overlay" | "image") and the version."""
    from cvtool import __version__

    return {OWN_KEY: kind, "Software": f"cvtool {__version__}"}


def written_by_cvtool(path: str | os.PathLike) -> bool:
    """Whether an existing file is a PNG that cvtool wrote (its OWN_KEY text chunk): only those are overwritten."""
    try:
        with _pillow().open(path) as im:  # the header and the chunks before the pixels, no decoding
            return im.format == "PNG" and im.info.get(OWN_KEY) in ("mask", "overlay", "image")
    except Exception:  # noqa: BLE001 - unreadable, not an image, a bomb: in every case not ours
        return False


def to_uint8_hwc(image: np.ndarray) -> np.ndarray:
    """Accept uint8 (H,W[,C]) or float (H,W[,C]) / (C,H,W) in [0,1]; return uint8 (H, W, 3)."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):  # (C, H, W)
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    if a.dtype != np.uint8:
        a = (np.clip(a, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def overlay(image: np.ndarray, mask: np.ndarray, colors, alpha: float = 0.5) -> np.ndarray:
    """uint8 (H, W, 3): class colours blended over the image where mask is a class > 0 (not background, not ignore)."""
    rgb = to_uint8_hwc(image)
    mask = np.asarray(mask)
    if rgb.shape[:2] != mask.shape:
        raise DataError(f"overlay: image {rgb.shape[1]}x{rgb.shape[0]} and mask {mask.shape[1]}x{mask.shape[0]} differ")
    lut = _rgb_table(colors).astype(np.float32)
    paint = (mask > 0) & (mask != IGNORE)
    out = rgb.astype(np.float32)
    out[paint] = (1 - alpha) * out[paint] + alpha * lut[mask[paint].astype(np.int64)]
    return out.round().astype(np.uint8)


def write_overlay_png(path: str | os.PathLike, image: np.ndarray, mask: np.ndarray, colors, alpha: float = 0.5) -> None:
    """The image with the mask's class colours blended in (alpha), as an RGB PNG. Atomic."""
    write_image_png(path, overlay(image, mask, colors, alpha), kind="overlay")


def write_mask_overlay_bands(mask_path: str | os.PathLike, overlay_path: str | os.PathLike, rows, mask: np.ndarray,
                             colors, alpha: float = 0.5) -> None:
    """write_mask_png and write_overlay_png of a large image a band of rows at a time (cvtool.data.png_rows): the
    image behind rows(r0, r1) is never held whole, nor its overlay, nor the overlay's float blend."""
    from cvtool.data.png_rows import write_png_rows

    H, W = mask.shape
    write_png_rows(mask_path, (H, W), 1, lambda r0, r1: mask[r0:r1], texts=own_texts("mask"),
                   palette=_rgb_table(colors))
    write_png_rows(overlay_path, (H, W), 3, lambda r0, r1: overlay(rows(r0, r1), mask[r0:r1], colors, alpha),
                   texts=own_texts("overlay"))
