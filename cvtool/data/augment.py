"""Training crops with paired augmentation, sampled straight from in-memory uint8 images.

Every crop is one affine map from output pixels to source pixels (scale, aspect, rotation, flips around a
chosen centre), so a transform costs one gather however many are combined. The image is sampled bilinearly,
the mask by nearest neighbour from the SAME coordinates (its values are only ever copied, never blended);
pixels that fall outside the source get the fill colour and mask IGNORE. Brightness, contrast, gamma, noise
and blur touch the image only (the first three as one look-up table on the source
values). Where a crop draws no geometric transform it is a plain slice (no gather).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from cvtool.data.io import IGNORE


@dataclass(frozen=True)
class Augment:
    p_geom: float = 0.0  # share of crops that get a scale / aspect / rotation transform
    scale: tuple[float, float] = (1.0, 1.0)  # zoom range (log-uniform); > 1 magnifies
    aspect: float = 0.0  # log aspect-ratio jitter: exp(U(-a, a))
    rotate: float = 0.0  # degrees, U(-r, r)
    rot90: bool = False  # also a random multiple of 90 degrees (for data with no up: microscopy)
    hflip: bool = False
    vflip: bool = False
    brightness: float = 0.0  # add U(-b, b)
    contrast: float = 0.0  # scale around the mean by exp(U(-c, c))
    gamma: float = 0.0  # x ** exp(U(-g, g))
    noise: float = 0.0  # gaussian sigma (of [0, 1] intensities), on half the crops
    blur: float = 0.0  # share of crops smoothed by a 3x3 binomial filter
    elastic: float = 0.0  # std (pixels) of a smooth random displacement on geometric crops (U-Net's elastic warp)

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Augment] = {
    "none": Augment(),
    "light": Augment(p_geom=0.3, scale=(0.85, 1.18), aspect=0.1, rotate=10, hflip=True,
                     brightness=0.05, contrast=0.1, gamma=0.1),
    "default": Augment(p_geom=0.5, scale=(0.75, 1.33), aspect=0.15, rotate=20, hflip=True,
                       brightness=0.1, contrast=0.15, gamma=0.2, noise=0.02, blur=0.1),
    "heavy": Augment(p_geom=0.5, scale=(0.7, 1.4), aspect=0.2, rotate=30, hflip=True,
                     brightness=0.15, contrast=0.25, gamma=0.3, noise=0.03, blur=0.2),
}
LEVELS = tuple(PRESETS)
IDENTITY = np.arange(256, dtype=np.float32) / 255.0  # the tone curve that changes nothing


def _centre(mask: np.ndarray, rng: np.random.Generator, focus: np.ndarray | None) -> tuple[float, float]:
    """A crop centre: a random pixel of one of the `focus` classes present (foreground oversampling), else
    a uniform point of the image."""
    H, W = mask.shape
    if focus is not None and focus.size:
        present = [k for k in focus.tolist() if (mask == k).any()]
        if present:
            ys, xs = np.nonzero(mask == present[rng.integers(len(present))])
            j = rng.integers(ys.size)
            return float(ys[j]) + 0.5, float(xs[j]) + 0.5
    return rng.uniform(0, H), rng.uniform(0, W)


def _matrix(aug: Augment, rng: np.random.Generator, geom: bool) -> np.ndarray:
    """2x2 map from output offsets (dy, dx) to source offsets."""
    A = np.eye(2)
    if geom:
        z = np.exp(rng.uniform(np.log(aug.scale[0]), np.log(aug.scale[1])))
        a = np.exp(rng.uniform(-aug.aspect, aug.aspect)) if aug.aspect else 1.0
        t = np.deg2rad(rng.uniform(-aug.rotate, aug.rotate)) if aug.rotate else 0.0
        c, s = np.cos(t), np.sin(t)
        A = np.array([[c, -s], [s, c]]) @ np.diag([1 / (z * a), a / z])
    if aug.rot90:
        k = rng.integers(4)
        A = A @ np.linalg.matrix_power(np.array([[0.0, -1.0], [1.0, 0.0]]), int(k))
    if aug.vflip and rng.random() < 0.5:
        A = A @ np.diag([-1.0, 1.0])
    if aug.hflip and rng.random() < 0.5:
        A = A @ np.diag([1.0, -1.0])
    return A


ELASTIC_SPACING = 128  # output pixels between the control points of the elastic field (U-Net: a 3x3 grid on a tile)


def elastic_field(S: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """float32 (2, S, S): a smooth random displacement (dy, dx) in pixels. G = ceil(S / ELASTIC_SPACING) + 1
    control points a side, edge to edge, draw N(0, sigma^2) vectors; every pixel takes their Gaussian-weighted mean
    (separable: L @ D @ L.T with L (S, G) the row-normalised weights), so the field has no kinks."""
    G = int(np.ceil(S / ELASTIC_SPACING)) + 1
    p = np.linspace(0.0, S, G)  # control points, spanning the crop
    u = np.arange(S) + 0.5
    L = np.exp(-0.5 * ((u[:, None] - p[None, :]) / (0.5 * (p[1] - p[0]))) ** 2)
    L /= L.sum(axis=1, keepdims=True)
    D = rng.normal(0.0, sigma, (2, G, G))
    # a weighted mean of draws spreads less than one draw: a pixel's std is sigma * |L_y| * |L_x|; undo it on average
    D /= (L ** 2).sum(axis=1).mean()
    return np.einsum("sg,cgh,th->cst", L, D, L).astype(np.float32)


def warp(image: np.ndarray, mask: np.ndarray, S: int, centre: tuple[float, float], A: np.ndarray,
         fill: np.ndarray, lut: np.ndarray = IDENTITY, disp: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (H, W, C) image and (H, W) mask -> float32 (S, S, C) and uint8 (S, S), sampling
    source = centre + A @ (output pixel centre - S/2 + disp). Image bilinear (of lut[value], lut: 256 float32
    intensities, the tone curve), mask nearest, outside: fill / IGNORE. disp: (2, S, S) output-pixel offsets or None."""
    H, W, C = image.shape
    g = np.arange(S, dtype=np.float32) + np.float32(0.5 - S / 2)
    A = A.astype(np.float32)
    gy, gx = (g[:, None], g[None, :]) if disp is None else (g[:, None] + disp[0], g[None, :] + disp[1])
    sy = np.float32(centre[0] - 0.5) + A[0, 0] * gy + A[0, 1] * gx  # source pixel-index units
    sx = np.float32(centre[1] - 0.5) + A[1, 0] * gy + A[1, 1] * gx
    ny, nx = np.rint(sy).astype(np.int64), np.rint(sx).astype(np.int64)
    inside = (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
    y_out = np.full((S, S), IGNORE, np.uint8)
    y_out[inside] = mask[ny[inside], nx[inside]]
    # bilinear with the border replicated (H or W of 1 included); pixels whose nearest source is outside get fill
    y0 = np.clip(np.floor(sy), 0, max(H - 2, 0)).astype(np.int64)
    x0 = np.clip(np.floor(sx), 0, max(W - 2, 0)).astype(np.int64)
    fy = np.clip(sy - y0, 0, 1)[..., None] if H > 1 else np.zeros((S, S, 1), np.float32)
    fx = np.clip(sx - x0, 0, 1)[..., None] if W > 1 else np.zeros((S, S, 1), np.float32)
    flat = image.reshape(-1, C)
    i00 = y0 * W + x0
    dy, dx = (W if H > 1 else 0), (1 if W > 1 else 0)
    top = lut[flat[i00]] * (1 - fx) + lut[flat[i00 + dx]] * fx
    bot = lut[flat[i00 + dy]] * (1 - fx) + lut[flat[i00 + dy + dx]] * fx
    out = top * (1 - fy) + bot * fy
    out[~inside] = fill
    return out, y_out


def plain_crop(image: np.ndarray, mask: np.ndarray, S: int, centre: tuple[float, float],
               fill: np.ndarray, lut: np.ndarray = IDENTITY) -> tuple[np.ndarray, np.ndarray]:
    """The S x S window around `centre`, by slicing (the identity map of `warp`, without a gather)."""
    H, W, C = image.shape
    oy = int(np.floor(centre[0] - S / 2 + 0.5))
    ox = int(np.floor(centre[1] - S / 2 + 0.5))
    x = np.empty((S, S, C), np.float32)
    x[:] = fill
    y = np.full((S, S), IGNORE, np.uint8)
    a0, b0, a1, b1 = max(oy, 0), max(ox, 0), min(oy + S, H), min(ox + S, W)
    if a1 > a0 and b1 > b0:
        x[a0 - oy:a1 - oy, b0 - ox:b1 - ox] = lut[image[a0:a1, b0:b1]]
        y[a0 - oy:a1 - oy, b0 - ox:b1 - ox] = mask[a0:a1, b0:b1]
    return x, y


def _permuted_crop(img, msk, S, c, fill, lut, A) -> tuple[np.ndarray, np.ndarray]:
    """warp() for A a signed permutation (flips, quarter turns): a slice, mirrored and transposed. Output pixel
    offset g reads source offset A g; the offset grid is symmetric, so negating an offset is a mirror."""
    xc, yc = plain_crop(img, msk, S, c, fill, lut)
    if abs(A[0, 0]) > 0.5:  # diagonal: O = P[a g_i, b g_j]
        a, b = int(np.sign(A[0, 0])), int(np.sign(A[1, 1]))
        return xc[::a, ::b], yc[::a, ::b]
    a, b = int(np.sign(A[0, 1])), int(np.sign(A[1, 0]))  # anti-diagonal: O[i, j] = P[a g_j, b g_i]
    return xc[::a, ::b].transpose(1, 0, 2), yc[::a, ::b].T


def _clamp_centre(c: tuple[float, float], hw: tuple[int, int], S: int, extent: float) -> tuple[float, float]:
    """Keep a crop of source extent `extent` inside the image where the image is large enough."""
    out = []
    for v, n in zip(c, hw):
        half = extent / 2
        out.append(min(max(v, half), n - half) if n >= extent else n / 2)
    return out[0], out[1]


def tone_curve(aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """256 float32 intensities: gamma, then contrast around mid-grey, then brightness, as one look-up table
    (pointwise changes cost one table gather instead of passes over the crop)."""
    v = np.arange(256, dtype=np.float64) / 255.0
    if aug.gamma:
        v = v ** np.exp(rng.uniform(-aug.gamma, aug.gamma))
    if aug.contrast:
        v = (v - 0.5) * np.exp(rng.uniform(-aug.contrast, aug.contrast)) + 0.5
    if aug.brightness:
        v = v + rng.uniform(-aug.brightness, aug.brightness)
    return v.astype(np.float32)


def blur_noise(x: np.ndarray, aug: Augment, rng: np.random.Generator) -> np.ndarray:
    """In place on one float32 (S, S, C) crop: a 3x3 binomial blur and gaussian noise, each at random."""
    if aug.blur and rng.random() < aug.blur:
        p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
        v = p[:-2] * 0.25 + p[1:-1] * 0.5 + p[2:] * 0.25
        x[:] = v[:, :-2] * 0.25 + v[:, 1:-1] * 0.5 + v[:, 2:] * 0.25
    if aug.noise and rng.random() < 0.5:
        x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(aug.noise)
    return x


def sample_batch(images: list[np.ndarray], masks: list[np.ndarray], idx: np.ndarray, S: int, aug: Augment,
                 rng: np.random.Generator, *, fill: np.ndarray, focus: np.ndarray | None = None,
                 p_focus: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """x float32 (N, C, S, S), intensities in [0, 1] before the tone curve and normalisation, y int64 (N, S, S) for images idx (N,).

    p_focus: share of crops centred on a pixel of a `focus` class (rare classes get seen)."""
    C = images[0].shape[2]
    N = len(idx)
    x = np.empty((N, S, S, C), np.float32)
    y = np.empty((N, S, S), np.int64)
    fill = np.asarray(fill, np.float32).reshape(C)
    for n, i in enumerate(np.asarray(idx).tolist()):
        img, msk = images[i], masks[i]
        c = _centre(msk, rng, focus if rng.random() < p_focus else None)
        geom = aug.p_geom > 0 and rng.random() < aug.p_geom
        A = _matrix(aug, rng, geom)
        extent = S * float(np.max(np.abs(A).sum(axis=1)))  # source rows/cols the crop spans
        c = _clamp_centre(c, msk.shape, S, extent)
        disp = elastic_field(S, aug.elastic, rng) if geom and aug.elastic > 0 else None  # geometry's draws first
        lut = tone_curve(aug, rng)
        P = np.abs(A)
        if disp is None and (np.allclose(P, np.eye(2)) or np.allclose(P, np.eye(2)[::-1])):  # flips, quarter turns
            x[n], y[n] = _permuted_crop(img, msk, S, c, fill, lut, A)  # exact, no blur
        else:
            x[n], y[n] = warp(img, msk, S, c, A, fill, lut, disp)
        blur_noise(x[n], aug, rng)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)), y
