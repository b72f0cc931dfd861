"""A dataset's fingerprint: the statistics a training plan is derived from (nnU-Net's idea, for 2-D images).

Per image, once: size, channel sums, pixels per class, ignored pixels, the areas of each class's connected
components and its boundary length. Those per-image records are cached as JSON, keyed by the files' names,
sizes and modification times, so a second run reads no image for them; the fingerprint itself is aggregated
from the records for a given train/val split:

    fp = fingerprint(train_records, val_records, classes, channels, notes)
    fp.median_hw, fp.class_share, fp.object_area, fp.thickness, fp.warnings
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cvtool.data.components import boundary_pixels, component_areas
from cvtool.data.io import IGNORE

VERSION = 1
MAX_AREAS = 2000  # components kept per image and class (the largest): enough for a median


def image_record(image: np.ndarray, mask: np.ndarray, K: int) -> dict:
    """Statistics of one uint8 (H, W, C) image and its class-index (H, W) mask."""
    x = image.reshape(-1, image.shape[-1]).astype(np.float64) / 255.0
    counts = np.bincount(mask.ravel(), minlength=256)
    areas, boundary = [], []
    for k in range(K):
        if counts[k]:
            m = mask == k
            areas.append(component_areas(m)[:MAX_AREAS].tolist())
            boundary.append(boundary_pixels(m))
        else:
            areas.append([])
            boundary.append(0)
    return {"hw": list(mask.shape), "sum": x.sum(0).tolist(), "sumsq": np.square(x).sum(0).tolist(),
            "counts": counts[:K].tolist(), "ignored": int(counts[IGNORE]), "areas": areas, "boundary": boundary}


@dataclass
class Fingerprint:
    n_train: int
    n_val: int
    classes: list[str]
    channels: int
    size_h: list[int]  # min, median, max
    size_w: list[int]
    mean: list[float]  # per channel, of the training images, in [0, 1]
    std: list[float]
    class_share: list[float]  # of the labelled training pixels
    class_images: list[float]  # share of training images that hold the class
    val_images: list[int]  # validation images that hold the class
    ignore_share: float  # of all training pixels
    object_area: list[float | None]  # typical object per class: the area of the connected component that the
    #                                  median labelled pixel lies in (area-weighted median), training set, pixels
    object_count: list[int]  # components per class over the training set
    thickness: list[float | None]  # 2 * area / boundary: a structure's half-width (disc: its radius; line: width)
    val_sizes: list[list[int]] = field(default_factory=list)  # [h, w, images of that size] of the validation split:
    #                                                           what validation's tiles and time are planned from
    notes: list[str] = field(default_factory=list)  # what reading converted (remapped values, ...)
    warnings: list[str] = field(default_factory=list)
    cached: bool = False  # records came from the cache

    @property
    def median_hw(self) -> tuple[int, int]:
        return self.size_h[1], self.size_w[1]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Fingerprint":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def fingerprint(train: list[dict], val: list[dict], classes: list[str], channels: int,
                notes: list[str] | None = None) -> Fingerprint:
    """Aggregate per-image records (image_record) of a split into a Fingerprint, with warnings."""
    K = len(classes)
    allr = train + val
    hs = np.array([r["hw"][0] for r in allr])
    ws = np.array([r["hw"][1] for r in allr])
    npx = sum(r["hw"][0] * r["hw"][1] for r in train)
    s = np.sum([r["sum"] for r in train], axis=0)
    s2 = np.sum([r["sumsq"] for r in train], axis=0)
    mean = s / npx
    std = np.sqrt(np.maximum(s2 / npx - mean**2, 0.0))
    counts = np.sum([r["counts"] for r in train], axis=0).astype(np.int64)
    ignored = sum(r["ignored"] for r in train)
    share = counts / max(counts.sum(), 1)
    imgs = np.sum([np.array(r["counts"]) > 0 for r in train], axis=0)
    vimgs = np.sum([np.array(r["counts"]) > 0 for r in val], axis=0) if val else np.zeros(K, np.int64)
    area, n_obj, thick = [], [], []
    for k in range(K):
        a = np.concatenate([np.asarray(r["areas"][k], np.float64) for r in train]) if train else np.zeros(0)
        area.append(weighted_median(a) if a.size else None)
        n_obj.append(int(a.size))
        b = sum(r["boundary"][k] for r in train)
        thick.append(float(2 * counts[k] / b) if b else None)
    warnings = []
    for k, c in enumerate(classes):
        if counts[k] == 0 and vimgs[k] == 0:
            warnings.append(f"class {k} ({c}) appears in no image")
        elif imgs[k] < 3:
            warnings.append(f"class {k} ({c}) is in only {int(imgs[k])} training image(s)")
        if val and vimgs[k] == 0 and counts[k] > 0:
            warnings.append(f"class {k} ({c}) is missing from the validation split: its IoU is not measured")
    med = lambda v: int(np.median(v))  # noqa: E731
    sizes = Counter((int(r["hw"][0]), int(r["hw"][1])) for r in val)
    return Fingerprint(len(train), len(val), list(classes), channels, [int(hs.min()), med(hs), int(hs.max())],
                       [int(ws.min()), med(ws), int(ws.max())], mean.tolist(), std.tolist(), share.tolist(),
                       (imgs / max(len(train), 1)).tolist(), vimgs.astype(int).tolist(),
                       float(ignored / max(npx, 1)), area, n_obj, thick, [[h, w, n] for (h, w), n in sorted(sizes.items())],
                       list(notes or []), warnings)


def weighted_median(areas: np.ndarray) -> float:
    """The area of the component holding the median pixel: fragments count by their pixels, not their number."""
    a = np.sort(np.asarray(areas, np.float64))
    c = np.cumsum(a)
    return float(a[np.searchsorted(c, c[-1] / 2)])


# --- cache ----------------------------------------------------------------------------------

def file_key(paths: list[Path | None], extra: str = "") -> str:
    """sha256 over names, sizes and mtimes of the files (None entries count as absent)."""
    h = hashlib.sha256(f"{VERSION}|{extra}".encode())
    for p in paths:
        if p is None:
            h.update(b"-|")
            continue
        try:
            st = os.stat(p)
            h.update(os.fsencode(Path(p).resolve()) + f"|{st.st_size}|{st.st_mtime_ns}|".encode())
        except OSError:  # fsencode: a file name that is not UTF-8 keeps its bytes
            h.update(os.fsencode(p) + b"|missing|")
    return h.hexdigest()[:24]


def item_key(item) -> str:
    """The cache key of one image/mask pair (a folder dataset's Item)."""
    return file_key([item.image, item.mask])


def load_cache(path: Path) -> dict[str, dict]:
    try:
        doc = json.loads(path.read_text())
        return doc["records"] if doc.get("version") == VERSION else {}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def save_cache(path: Path, records: dict[str, dict]) -> None:
    from cvtool.fsutil import atomic_write_bytes

    try:
        atomic_write_bytes(path, json.dumps({"version": VERSION, "records": records}).encode())
    except Exception:  # a cache that cannot be written costs time next run, never this run
        pass


def records_for(ds, keys: list[str], cache: dict[str, dict], arrays=None) -> tuple[list[dict], int]:
    """Per-image records of ds, from the cache where the key matches, else computed (from `arrays`, an
    ArraySet of ds at scale 1, when given; else by reading ds[i]). Returns (records, how many were computed)."""
    from cvtool.data.memory import to_hwc_uint8

    out, fresh = [], 0
    K = len(ds.classes)
    for i, key in enumerate(keys):
        rec = cache.get(key)
        if rec is None or len(rec.get("counts", [])) != K:
            if arrays is not None:
                img, mask = arrays.images[i], arrays.full_masks[i]
            else:
                smp = ds[i]
                img, mask = to_hwc_uint8(smp.image), smp.mask.astype(np.uint8)
            rec = image_record(img, mask, K)
            cache[key] = rec
            fresh += 1
        out.append(rec)
    return out, fresh


def dataset_fingerprint(train_ds, val_ds, notes: list[str], cache_path: Path | None, train_arrays=None,
                        val_arrays=None) -> Fingerprint:
    """The fingerprint of a folder dataset's split, reusing cached per-image records at cache_path."""
    cache = load_cache(cache_path) if cache_path is not None else {}
    extra = "|".join(train_ds.classes)

    def keys(ds):
        items = getattr(ds, "items", None)
        if items is None:  # not a file dataset (synthetic, VOC view): no cache
            return [f"nokey-{id(ds)}-{i}" for i in range(len(ds))]
        return [item_key(it) + extra for it in items]

    tr, n1 = records_for(train_ds, keys(train_ds), cache, train_arrays)
    va, n2 = records_for(val_ds, keys(val_ds), cache, val_arrays)
    if cache_path is not None and (n1 or n2) and getattr(train_ds, "items", None) is not None:
        save_cache(cache_path, cache)
    fp = fingerprint(tr, va, list(train_ds.classes), train_ds.in_channels, notes)
    fp.cached = n1 + n2 == 0
    return fp
