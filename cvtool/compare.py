"""How close a result is to its reference: one definition of the error, one table of what is close enough.

    max_abs = max |got - ref|                    over the entries where ref is finite
    max_rel = max_abs / max(max |ref|, TINY)     the error in units of the reference's largest value

Relative to the largest |ref|, not entry by entry: a convolution's outputs near 0 carry the same absolute
rounding as its large ones, so an entrywise ratio would flag harmless noise. TINY only keeps an all-zero
reference from dividing by 0: against it every nonzero error is huge, and no error is 0.

An infinite reference entry (a max-pool window that sees only padding is -inf on every backend) must be
matched exactly; a NaN where the reference is finite is never close; a shape that differs is no agreement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TINY = 1e-30  # the floor of max |ref|: far below any float32 value that rounding could produce


@dataclass(frozen=True)
class Tolerance:
    """What is close enough: every bound must hold (the default accepts any finite error)."""

    max_rel: float = math.inf
    max_abs: float = math.inf
    labels: float = 0.0  # the least share of pixels whose argmax over axis 1 (the class) must agree


# One table, by the dtype of what is checked and what it is checked against (a float64 reference).
TOLERANCE: dict[str, Tolerance] = {
    # a float32 layer or network (convcalc --verify, bench): float32 rounding over O(1000)-term sums
    "float32": Tolerance(max_rel=1e-4),
    # a float32 network's logits (export parity): also the classes, which a near-tie may flip
    "float32 logits": Tolerance(max_rel=1e-4, labels=0.999),
    # a float16 export: 10 mantissa bits, so ~1e-3 per operation, compounded over the layers
    "float16 logits": Tolerance(max_rel=2e-2, labels=0.98),
    # a bfloat16 network (torch on AVX512-BF16 / CUDA): 8 mantissa bits, ~4e-3 per operation, compounded
    "bfloat16 logits": Tolerance(max_rel=5e-2, labels=0.95),
    # an int8 network (ONNX Runtime's static quantization): a sanity bound only; int8 is judged by its masks
    # against float32's on real images (MASK_TOLERANCE), since a logit's 256 levels cannot meet a float tolerance
    "int8 logits": Tolerance(max_rel=0.25, labels=0.9),
    # float64 gradients of two implementations (convcalc --backward): only summation order differs
    "float64": Tolerance(max_abs=1e-10),
    # central differences with h = 1e-6 in float64: rounding eps/h ~ 1e-10, truncation h^2 (0 for linear layers)
    "finite differences": Tolerance(max_abs=1e-6),
}


@dataclass(frozen=True)
class MaskTolerance:
    """A reduced-precision model against its float32 self on real images, segmented the same way: the least share of
    pixels whose class is the same, and the largest change of the mIoU against the true masks."""

    agreement: float
    miou_change: float


# export --precision's verification (the benchmark's targets are tighter: 99% and 0.005, docs/benchmarks.md)
MASK_TOLERANCE: dict[str, MaskTolerance] = {
    "fp16": MaskTolerance(agreement=0.99, miou_change=0.005),
    "int8": MaskTolerance(agreement=0.98, miou_change=0.01),
    "bf16": MaskTolerance(agreement=0.98, miou_change=0.01),
}


@dataclass(frozen=True)
class Agreement:
    """The errors of one result and whether they are within the tolerance (reason: why not)."""

    max_abs: float | None  # None: the shapes differ
    max_rel: float | None
    labels: float | None  # share of pixels with the same class; None unless asked for
    ok: bool
    reason: str | None = None


def compare(got, ref, tol: Tolerance = Tolerance(), *, labels: bool = False) -> Agreement:
    """got against ref (both array-likes, ref the exact one) under tol; labels: also the argmax over axis 1."""
    got, ref = np.asarray(got), np.asarray(ref)
    if got.shape != ref.shape:
        return Agreement(None, None, None, False, f"shape {list(got.shape)}, the reference gives {list(ref.shape)}")
    fin = np.isfinite(ref)
    if not np.array_equal(got[~fin], ref[~fin]):
        return Agreement(None, None, None, False, "infinities differ from the reference")
    d = np.abs(got[fin].astype(np.float64) - ref[fin])
    max_abs = float(d.max()) if d.size else 0.0  # NaN in got stays NaN: it fails every bound below
    scale = float(np.abs(ref[fin]).max()) if d.size else 0.0
    max_rel = max_abs / max(scale, TINY)
    share = float((got.argmax(1) == ref.argmax(1)).mean()) if labels else None
    reason = None
    if not max_rel <= tol.max_rel:
        reason = f"max rel diff {max_rel:.2e} > tolerance {tol.max_rel:g}"
    elif not max_abs <= tol.max_abs:
        reason = f"max abs diff {max_abs:.2e} > tolerance {tol.max_abs:g}"
    elif share is not None and not share >= tol.labels:
        reason = f"labels agree on {share:.3%} < {tol.labels:.1%}"
    return Agreement(max_abs, max_rel, share, reason is None, reason)


__all__ = ["compare", "Agreement", "Tolerance", "TOLERANCE", "TINY", "MaskTolerance", "MASK_TOLERANCE"]
