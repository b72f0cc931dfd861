"""The numbers of a one-channel worked example (--matrix, --steps, --backward): given by --x / --w, or seeded."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cvtool.convcalc import matrix as M
from cvtool.convcalc.chain import LayerSpec
from cvtool.convcalc.text import dims
from cvtool.errors import UsageError


def layer_values(spec: LayerSpec, hw, x_text, w_text, seed: int, kernel_given: bool, *, fixed_avg: bool = True):
    """(spec, hw, x, w) for a one-channel worked example: --x / --w as given (their shapes set the input size and
    the kernel), else seeded small integers; average pooling's w is 1/(KH*KW) (fixed_avg), max pooling has none."""
    if spec.kind in ("maxpool", "avgpool"):
        if w_text is not None:
            raise UsageError(f"--pool {spec.kind[:3]} has no kernel weights to give: drop --w")
        wv = np.full(spec.kernel, 1.0 / (spec.kernel[0] * spec.kernel[1])) if spec.kind == "avgpool" and fixed_avg else None
    elif w_text is not None:
        wv = M.parse_values(w_text, "--w")
        if kernel_given and tuple(wv.shape) != spec.kernel:
            raise UsageError(f"--w is {wv.shape[0]}x{wv.shape[1]} but --kernel says {dims(spec.kernel)}")
        spec = replace(spec, kernel=(wv.shape[0], wv.shape[1]))
    else:
        wv = M.seeded_ints(spec.kernel, seed + 1, 5)
    if x_text is not None:
        xv = M.parse_values(x_text, "--x")
        if hw is not None and tuple(xv.shape) != tuple(hw):
            raise UsageError(f"--x is {xv.shape[0]}x{xv.shape[1]} but --input says {dims(hw)}")
        hw = tuple(xv.shape)
    else:
        hw = hw or ((2, 2) if spec.kind == "tconv" else (4, 4))
        xv = M.seeded_ints(hw, seed, 10)
    return spec, hw, xv, wv


def pads_arg(pads) -> tuple[int, int, int, int]:
    """((top, bottom), (left, right)) -> (top, bottom, left, right), the padding argument of the backends."""
    return (pads[0][0], pads[0][1], pads[1][0], pads[1][1])


__all__ = ["layer_values", "pads_arg"]
