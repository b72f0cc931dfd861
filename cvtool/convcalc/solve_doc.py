"""Solving for the output size (-i and -o): the paddings that give it, and (--solve) kernel/stride choices."""

from __future__ import annotations

from typing import Any

from cvtool.convcalc import explain
from cvtool.convcalc import solve as S
from cvtool.convcalc.chain import POOLS, LayerSpec
from cvtool.convcalc.sizes import axes
from cvtool.convcalc.text import params_text, title


def check_text(spec: LayerSpec, sol: S.Solution, i: int) -> str:
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
            sols = S.paddings(spec.kind, i, o, k, s, d, spec.ceil_mode)
            entry["paddings"] = [dict(sol.to_dict(), check=check_text(spec, sol, i)) for sol in sols]
            if not sols:
                entry["why_not"] = S.reachable(spec.kind, i, k, s, d, spec.ceil_mode)
        if search:
            sols = S.kernel_stride(spec.kind, i, o, d, spec.ceil_mode)
            entry["kernel_stride"] = [dict(sol.to_dict(), check=check_text(spec, sol, i)) for sol in sols]
        per_axis.append(entry)
    found = all(e.get("paddings") or e.get("kernel_stride") for e in per_axis)
    return {"mode": "solve", "op": spec.kind, "title": title(spec.kind), "input": list(hw), "output": list(want),
            "params_text": params_text(spec, output_padding=False) if kernel_given else None, "search": search,
            "bounds": {"kernel": [S.KERNELS[0], S.KERNELS[-1]], "stride": [S.STRIDES[0], S.STRIDES[-1]],
                       "padding": "0..k//2" if spec.kind in POOLS else "0..k"} if search else None,
            "axes": per_axis, "found": bool(found)}


__all__ = ["solve_doc", "check_text"]
