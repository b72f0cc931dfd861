"""What a training loop sees: the dataset protocol, mini-batches with paired augmentation, input statistics.

Every dataset (synthetic, folder, VOC) answers len(ds) and ds[i] -> Sample; batches() turns one into
(x float32 (N, C, S, S), y int64 (N, S, S)) with the SAME crop and flip applied to image and mask.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterator, NamedTuple, Protocol

import numpy as np

from cvtool.data.io import IGNORE
from cvtool.data.transforms import crop_offsets, hflip_where, pad_to_multiple, paste_window
from cvtool.errors import DataError


class Sample(NamedTuple):
    image: np.ndarray  # float32 (C, H, W) in [0, 1]
    mask: np.ndarray  # int64 (H, W): class index, 255 = ignore
    name: str


class SegDataset(Protocol):
    classes: list[str]
    colors: list[tuple[int, int, int]]
    in_channels: int
    ignore_index: int  # 255
    description: str

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> Sample: ...


@dataclass
class DataInfo:
    """What open_datasets found: the format, the split and anything it converted on the way (notes)."""

    format: str  # "synth", "folder" or "voc"
    root: str | None
    classes: list[str]
    colors: list[tuple[int, int, int]]
    in_channels: int
    n_train: int
    n_val: int
    split: str  # how train and val were chosen
    notes: list[str] = field(default_factory=list)
    description: str = ""  # one line for people

    def to_dict(self) -> dict:
        return asdict(self)

    def get(self, key: str, default=None):
        """Dict-style read (info.get("notes")), for code that handles info as a JSON document."""
        return getattr(self, key, default)


def num_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


def batches(ds: SegDataset, batch_size: int, *, crop: int | None = None, augment: bool = False,
            rng: np.random.Generator, shuffle: bool = True, drop_last: bool = False,
            start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One epoch of (x float32 (N, C, S, S), y int64 (N, S, S)) batches.

    crop=S: an S x S window per image (random if augment, else centred); images smaller than S are padded
    (image 0, mask IGNORE). crop=None: full images, padded to the batch's largest. augment: also a random
    left-right flip, the same for image and mask. All randomness is drawn from `rng` NOW, before the first
    batch (one permutation if shuffle, then one (len(ds), 3) block of uniforms), so the rng's state after this
    call, and every batch, are fixed by its state before it. start=k skips the first k batches without
    loading them (resuming mid-epoch)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(ds)
    order = rng.permutation(n) if shuffle else np.arange(n)
    u = rng.random((n, 3))  # per epoch position: crop row, crop column, flip
    return _epoch(ds, order, u, batch_size, crop, augment, range(start, num_batches(n, batch_size, drop_last)))


def _epoch(ds, order, u, batch_size, crop, augment, which) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for b in which:
        sl = slice(b * batch_size, (b + 1) * batch_size)
        yield collate([ds[int(i)] for i in order[sl]], crop, u[sl] if augment else None)


def collate(samples: list[Sample], crop: int | None, u: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Stack samples into (x, y). u (N, 3) uniforms: random crop corners and flips; None: centred, unflipped."""
    N, C = len(samples), samples[0].image.shape[0]
    hw = np.array([s.mask.shape for s in samples], np.int64)  # (N, 2)
    for s in samples:
        if s.image.shape != (C, *s.mask.shape):
            raise DataError(f"{s.name}: image {s.image.shape} and mask {s.mask.shape} "
                            f"do not fit a batch of {C}-channel images")
    if crop is not None:
        SH = SW = crop
        offs = crop_offsets(hw, crop, None if u is None else u[:, :2])
    else:
        SH, SW = hw.max(axis=0)
        offs = np.zeros((N, 2), np.int64)
    x = np.zeros((N, C, SH, SW), np.float32)
    y = np.full((N, SH, SW), IGNORE, np.int64)
    for k, s in enumerate(samples):
        paste_window(x[k], y[k], s.image, s.mask, int(offs[k, 0]), int(offs[k, 1]))
    if u is not None:
        hflip_where(x, y, u[:, 2] < 0.5)
    return x, y


def channel_stats(ds: SegDataset, max_items: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel pixel mean and std (float32 (C,)) over up to max_items images spread evenly over ds."""
    n = len(ds)
    if n == 0:
        raise DataError("channel_stats: empty dataset")
    idx = np.unique(np.linspace(0, n - 1, min(n, max_items)).round().astype(np.int64))
    s = s2 = np.zeros(1)  # broadcasts to (C,) at the first image
    count = 0
    for i in idx:
        img = ds[int(i)].image.astype(np.float64)  # (C, H, W)
        s = s + img.sum(axis=(1, 2))
        s2 = s2 + np.square(img).sum(axis=(1, 2))
        count += img.shape[1] * img.shape[2]
    mean = s / count
    std = np.sqrt(np.maximum(s2 / count - mean**2, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


__all__ = ["Sample", "SegDataset", "DataInfo", "batches", "collate", "num_batches", "channel_stats", "pad_to_multiple"]
