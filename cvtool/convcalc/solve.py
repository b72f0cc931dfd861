"""Solving the arithmetic backwards: which padding (and output_padding), or which kernel and
stride, turn an input size i into a wanted output size o. One dimension at a time.

Every candidate is checked with the forward formula (`cvtool.convcalc.chain.output_1d`, i.e.
cvtool.arithmetic), so a listed solution always gives o: nothing is inverted by hand.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from cvtool.arithmetic import Pad, effective_kernel
from cvtool.convcalc import explain
from cvtool.convcalc.chain import POOLS, LayerSpec, output_1d
from cvtool.convcalc.sizes import axes
from cvtool.convcalc.text import params_text, title
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
    ek = effective_kernel(k, d)
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
        lo = next((v for P in range(0, effective_kernel(k, d) + 1)
                   if (v := gives(kind, i, Solution(k, s, (P // 2, P - P // 2), 0, d))) is not None), None)
        return (f"padding only makes a convolution's output larger: the smallest is {lo} (no padding)"
                if lo is not None else "the kernel never fits")
    if kind == "tconv":
        sols = [gives(kind, i, Solution(k, s, (0, 0), op, d)) for op in range(max(s, d))]
        hi = max(v for v in sols if v is not None)
        return f"padding only makes a transposed convolution's output smaller: the largest is {hi} (p=0)"
    outs = sorted({v for p in range(k // 2 + 1) if (v := gives(kind, i, Solution(k, s, (p, p), 0, d, ceil_mode)))})
    return f"pooling with padding 0..{k // 2} gives only {', '.join(map(str, outs)) or 'nothing'}"




def check_text(spec: LayerSpec, sol: Solution, i: int) -> str:
    """The forward formula with this solution's numbers: the proof that it works."""
    if spec.kind == "conv":
        return explain.conv(i, sol.kernel, sol.stride, sol.padding, sol.dilation).substituted
    if spec.kind == "tconv":
        return explain.conv_transpose(i, sol.kernel, sol.stride, sol.padding, sol.output_padding, sol.dilation).substituted
    return explain.pool(i, sol.kernel, sol.stride, sol.padding[0], sol.dilation, sol.ceil_mode).substituted


def solve_doc(spec: LayerSpec, hw: tuple[int, int], want: tuple[int, int], search: bool, kernel_given: bool) -> dict:
    """Per axis (one when H and W are alike): the paddings (kernel given) and the searched choices (search)."""
    alike = hw[0] == hw[1] and want[0] == want[1] and axes(spec) == [("", 0)]
    per_axis = []
    for label, a in [("", 0)] if alike else [("H", 0), ("W", 1)]:
        i, o, k, s, d = hw[a], want[a], spec.kernel[a], spec.stride[a], spec.dilation[a]
        entry: dict[str, Any] = {"axis": label or "HW", "input": i, "output": o}
        if kernel_given:
            sols = paddings(spec.kind, i, o, k, s, d, spec.ceil_mode)
            entry["paddings"] = [dict(sol.to_dict(), check=check_text(spec, sol, i)) for sol in sols]
            if not sols:
                entry["why_not"] = reachable(spec.kind, i, k, s, d, spec.ceil_mode)
        if search:
            sols = kernel_stride(spec.kind, i, o, d, spec.ceil_mode)
            entry["kernel_stride"] = [dict(sol.to_dict(), check=check_text(spec, sol, i)) for sol in sols]
        per_axis.append(entry)
    found = all(e.get("paddings") or e.get("kernel_stride") for e in per_axis)
    return {"mode": "solve", "op": spec.kind, "title": title(spec.kind), "input": list(hw), "output": list(want),
            "params_text": params_text(spec, output_padding=False) if kernel_given else None, "search": search,
            "bounds": {"kernel": [KERNELS[0], KERNELS[-1]], "stride": [STRIDES[0], STRIDES[-1]],
                       "padding": "0..k//2" if spec.kind in POOLS else "0..k"} if search else None,
            "axes": per_axis, "found": bool(found)}


__all__ = ["Solution", "paddings", "kernel_stride", "reachable", "gives", "KERNELS", "STRIDES", "solve_doc",
           "check_text"]
