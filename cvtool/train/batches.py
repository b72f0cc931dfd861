"""The training batches: batch k is a function of (seed, k) alone, made a few ahead in a background thread, so a
resumed run replays the same batches; and the class weights of the loss."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any, Callable

import numpy as np


def batch_indices(k: int, B: int, n: int, seed: int) -> np.ndarray:
    """Images of batch k: positions k*B .. k*B+B-1 of a stream of per-epoch permutations of range(n)."""
    pos = np.arange(k * B, (k + 1) * B)
    out = np.empty(B, np.int64)
    for e in np.unique(pos // n):
        sel = pos // n == e
        out[sel] = np.random.default_rng([seed, int(e), 7]).permutation(n)[pos[sel] % n]
    return out


class Batches:
    """Augmented batches k = start, start+1, ... made in a background thread (a queue of a few ahead).
    get() returns (x, y) and adds the time it waited to `waited`."""

    def __init__(self, make: Callable[[int], tuple[np.ndarray, np.ndarray]], start: int, ahead: int = 3,
                 clock: Callable[[], float] = time.perf_counter):
        self.make, self.k, self.clock = make, start, clock
        self.q: queue.Queue = queue.Queue(maxsize=ahead)
        self.stop = threading.Event()
        self.waited = 0.0
        self.thread = threading.Thread(target=self._run, name="cvtool-batches", daemon=True)
        self.thread.start()

    def _run(self):
        k = self.k
        while not self.stop.is_set():
            item: tuple[int, Any, BaseException | None]
            try:
                item = (k, self.make(k), None)
            except BaseException as e:  # handed to the consumer, raised there
                item = (k, None, e)
            while not self.stop.is_set():
                try:
                    self.q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            k += 1

    def get(self) -> tuple[np.ndarray, np.ndarray]:
        t = self.clock()
        k, xy, e = self.q.get()
        self.waited += self.clock() - t
        if e is not None:
            raise e
        return xy

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


def class_weights(masks_hist: np.ndarray, power: float = 0.25) -> np.ndarray:
    """Inverse fourth-root frequency, normalised to mean 1 over present classes, clipped to [0.2, 5].

    Mild on purpose: weighting shifts the argmax towards rare classes, which buys recall with false positives
    (on the synthetic shapes validation mIoU fell as the power rose: docs/benchmarks.md). A little weighting stays,
    so that a heavily imbalanced set cannot settle on "all background"."""
    f = masks_hist / max(masks_hist.sum(), 1)
    w = np.where(f > 0, np.maximum(f, 1e-12) ** -power, 0.0)
    present = f > 0
    w[present] /= w[present].mean()
    return np.clip(w, 0.2 if present.any() else 0, 5.0).astype(np.float32)


def dataset_class_weights(ds, K: int, max_items: int = 64) -> np.ndarray:
    hist = np.zeros(K, np.int64)
    step = max(1, len(ds) // max_items)
    for i in range(0, len(ds), step):
        m = ds[i].mask
        hist += np.bincount(m[m != ds.ignore_index].ravel(), minlength=K)[:K]
    return class_weights(hist)
