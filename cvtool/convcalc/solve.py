"""Solving the arithmetic backwards: which padding (and output_padding), or which kernel and
stride, turn an input size i into a wanted output size o. One dimension at a time.

Every candidate is checked with the forward formula (`cvtool.convcalc.chain.output_1d`, i.e.
cvtool.arithmetic), so a listed solution always gives o: nothing is inverted by hand.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from cvtool import arithmetic as A
from cvtool.arithmetic import Pad
from cvtool.convcalc.chain import POOLS, output_1d
from cvtool.errors import UsageError

KERNELS = range(1, 12)  # the bounded search of --solve: k 1..11, s 1..4, p 0..k
STRIDES = range(1, 5)


class Solution(NamedTuple):
    kernel: int
    stride: int
    padding: Pad  # (begin, end)
    output_padding: int = 0
    dilation: int = 1
    ceil_mode: bool = False

    @property
    def symmetric(self) -> bool:
        return self.padding[0] == self.padding[1]

    def to_dict(self) -> dict[str, Any]:
        return {"kernel": self.kernel, "stride": self.stride, "padding": list(self.padding),
                "symmetric": self.symmetric, "output_padding": self.output_padding,
                "dilation": self.dilation, "ceil_mode": self.ceil_mode}


def gives(kind: str, i: int, sol: Solution) -> int | None:
    """The output size this solution really gives (None: impossible parameters)."""
    try:
        return output_1d(kind, i, sol.kernel, sol.stride, sol.padding, sol.dilation, sol.output_padding,
                         sol.ceil_mode)
    except UsageError:
        return None


def _check_sizes(i: int, o: int) -> None:
    if i < 1 or o < 1:
        raise UsageError(f"sizes must be at least 1, got input {i} and output {o}")


def paddings(kind: str, i: int, o: int, k: int, s: int = 1, d: int = 1, ceil_mode: bool = False) -> list[Solution]:
    """Every padding (and output_padding for 'tconv') with which k, s, d map i to o.

    conv: total padding P = 0, 1, ... split like 'same' (begin P//2, end the rest), so odd totals
    appear as the asymmetric pads PyTorch's padding='same' uses. tconv: P and output_padding < max(s, d).
    Pools: symmetric p up to k//2 (PyTorch's limit)."""
    _check_sizes(i, o)
    for name, v in (("kernel", k), ("stride", s), ("dilation", d)):
        if v < 1:
            raise UsageError(f"{name} must be at least 1, got {v}")
    ek = A.effective_kernel(k, d)
    cands: list[Solution] = []
    if kind == "conv":  # o grows with P: P beyond o*s + ek - i overshoots
        cands = [Solution(k, s, (P // 2, P - P // 2), 0, d) for P in range(0, max(0, o * s + ek - i) + 1)]
    elif kind == "tconv":  # o shrinks with P: P beyond (i-1)*s + ek + op - 1 leaves nothing
        cands = [Solution(k, s, (P // 2, P - P // 2), op, d)
                 for op in range(max(s, d)) for P in range(0, (i - 1) * s + ek + op)]
    elif kind in POOLS:
        cands = [Solution(k, s, (p, p), 0, d, ceil_mode) for p in range(0, k // 2 + 1)]
    else:
        raise UsageError(f"unknown layer kind {kind!r}")
    return [c for c in cands if gives(kind, i, c) == o]


def kernel_stride(kind: str, i: int, o: int, d: int = 1, ceil_mode: bool = False,
                  kernels=KERNELS, strides=STRIDES) -> list[Solution]:
    """Bounded search over kernel, stride and symmetric padding (p 0..k; pools 0..k//2) giving i -> o.

    Sorted by stride, kernel, padding. tconv also tries every output_padding."""
    _check_sizes(i, o)
    found = []
    for s in strides:
        for k in kernels:
            pmax = k // 2 if kind in POOLS else k
            for p in range(0, pmax + 1):
                ops = range(max(s, d)) if kind == "tconv" else (0,)
                for op in ops:
                    c = Solution(k, s, (p, p), op, d, ceil_mode)
                    if gives(kind, i, c) == o:
                        found.append(c)
    return found


def reachable(kind: str, i: int, k: int, s: int = 1, d: int = 1, ceil_mode: bool = False) -> str:
    """Why no padding works: the outputs that padding can reach with this kernel and stride."""
    if kind == "conv":
        lo = next((v for P in range(0, A.effective_kernel(k, d) + 1)
                   if (v := gives(kind, i, Solution(k, s, (P // 2, P - P // 2), 0, d))) is not None), None)
        return (f"padding only makes a convolution's output larger: the smallest is {lo} (no padding)"
                if lo is not None else "the kernel never fits")
    if kind == "tconv":
        sols = [gives(kind, i, Solution(k, s, (0, 0), op, d)) for op in range(max(s, d))]
        hi = max(v for v in sols if v is not None)
        return f"padding only makes a transposed convolution's output smaller: the largest is {hi} (p=0)"
    outs = sorted({v for p in range(k // 2 + 1) if (v := gives(kind, i, Solution(k, s, (p, p), 0, d, ceil_mode)))})
    return f"pooling with padding 0..{k // 2} gives only {', '.join(map(str, outs)) or 'nothing'}"


__all__ = ["Solution", "paddings", "kernel_stride", "reachable", "gives", "KERNELS", "STRIDES"]
