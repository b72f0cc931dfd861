"""The numbers of a one-channel worked example (--matrix, --steps, --backward): given by --x / --w, or seeded."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np

from cvtool.convcalc.chain import LayerSpec, output_hw
from cvtool.convcalc.text import dims
from cvtool.errors import DataError, UsageError
from cvtool.footprint import array, require


def layer_values(spec: LayerSpec, hw, x_text, w_text, seed: int, kernel_given: bool, *, fixed_avg: bool = True):
    """(spec, hw, x, w) for a one-channel worked example: --x / --w as given (their shapes set the input size and
    the kernel), else seeded small integers; average pooling's w is 1/(KH*KW) (fixed_avg), max pooling has none."""
    if spec.kind in ("maxpool", "avgpool"):
        if w_text is not None:
            raise UsageError(f"--pool {spec.kind[:3]} has no kernel weights to give: drop --w")
        wv = np.full(spec.kernel, 1.0 / (spec.kernel[0] * spec.kernel[1])) if spec.kind == "avgpool" and fixed_avg else None
    elif w_text is not None:
        wv = parse_values(w_text, "--w")
        if kernel_given and tuple(wv.shape) != spec.kernel:
            raise UsageError(f"--w is {wv.shape[0]}x{wv.shape[1]} but --kernel says {dims(spec.kernel)}")
        spec = replace(spec, kernel=(wv.shape[0], wv.shape[1]))
    else:
        wv = None  # seeded below, once the sizes are known to make sense
    if x_text is not None:
        xv = parse_values(x_text, "--x")
        if hw is not None and tuple(xv.shape) != tuple(hw):
            raise UsageError(f"--x is {xv.shape[0]}x{xv.shape[1]} but --input says {dims(hw)}")
        hw = tuple(xv.shape)
    else:
        hw = hw or ((2, 2) if spec.kind == "tconv" else (4, 4))
        output_hw(spec, hw)  # a kernel larger than the input says so, before anything is drawn
        require([array("the example's input", hw, 8), array("its kernel", spec.kernel, 8)],
                doing=f"a worked example of {hw[0]}x{hw[1]}, kernel {dims(spec.kernel)}", hint="use e.g. -i 5 -k 3")
        xv = seeded_ints(hw, seed, 10)
    if wv is None and spec.kind not in ("maxpool", "avgpool"):
        wv = seeded_ints(spec.kernel, seed + 1, 5)
    return spec, hw, xv, wv


def parse_values(text: str, what: str) -> np.ndarray:
    """'4,5,8;1,8,8' (rows separated by ';') or a path to a 2-D .npy file -> a 2-D float array."""
    t = text.strip()
    if t.lower().endswith(".npy"):
        if not os.path.isfile(t):
            raise DataError(f"{what}: no such file {t!r}")
        try:
            a = np.load(t, allow_pickle=False)
        except Exception as e:  # a corrupt file, a pickle
            raise DataError(f"{what}: cannot read {t!r}: {e}") from None
        a = np.squeeze(a) if a.ndim > 2 else a
        if a.ndim == 1:
            a = a[None, :]
        if a.ndim != 2:
            raise UsageError(f"{what}: expected a 2-D array in {t!r}, got shape {a.shape}")
        return a.astype(np.float64)
    rows = [r for r in t.split(";") if r.strip()]
    try:
        vals = [[float(v) for v in r.replace(",", " ").split()] for r in rows]
    except ValueError:
        raise UsageError(f"malformed {what} {text!r}", hint="numbers separated by ',' with rows separated by ';'") from None
    if not vals or any(len(r) != len(vals[0]) for r in vals) or not vals[0]:
        raise UsageError(f"malformed {what} {text!r}: rows of different lengths or no values")
    return np.array(vals, dtype=np.float64)


def seeded_ints(shape: tuple[int, int], seed: int, high: int) -> np.ndarray:
    """Small integers 0..high-1, so that every product can be checked by hand."""
    return np.random.default_rng(seed).integers(0, high, size=shape).astype(np.float64)


def pads_arg(pads) -> tuple[int, int, int, int]:
    """((top, bottom), (left, right)) -> (top, bottom, left, right), the padding argument of the backends."""
    return (pads[0][0], pads[0][1], pads[1][0], pads[1][1])


__all__ = ["layer_values", "pads_arg", "parse_values", "seeded_ints"]
