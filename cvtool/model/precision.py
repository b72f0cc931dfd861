"""Reduced-precision inference: the names, what each one is, and what this CPU does natively.

    fp32  float32 everywhere: what a model is trained and checked in
    fp16  an ONNX graph in float16 (weights and compute) behind float32 input and output casts
    int8  an ONNX graph quantized by ONNX Runtime (static, QDQ: int8 weights per output channel, uint8 activations
          calibrated on training images); the runtime fuses each QuantizeLinear/DequantizeLinear pair into int8 kernels
    bf16  torch on a CPU with native bfloat16 dot products (AVX512-BF16, AMX) or on CUDA: weights and activations in
          bfloat16, float32 input and output

Which backend runs which is the backend's business (its `precision_runner` hook, backends/base.py); this module
only names them and reads the CPU's flags, so that the core imports no framework.
"""

from __future__ import annotations

from typing import NamedTuple

from cvtool.errors import UsageError

PRECISIONS = ("fp32", "fp16", "int8", "bf16")
EXPORTS = ("fp32", "fp16", "int8")  # what an ONNX export holds (bf16 is torch's, at run time)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo: native bfloat16 dot products


def parse_precision(text: str, allowed: tuple[str, ...] = PRECISIONS, flag: str = "--precision") -> str:
    """One precision name; anything else is a usage error (exit 2) naming the choices."""
    p = text.strip().lower()
    if p not in allowed:
        raise UsageError(f"unknown {flag} {text!r}", hint=f"choose one of {', '.join(allowed)}")
    return p


def parse_precisions(text: str, flag: str = "--precision") -> list[str]:
    """A comma-separated list of precisions, in the order given, each once (bench --precision fp32,int8)."""
    names = [parse_precision(t, PRECISIONS, flag) for t in text.split(",") if t.strip()]
    if not names:
        raise UsageError(f"{flag} needs at least one of {', '.join(PRECISIONS)}")
    return sorted(set(names), key=names.index)


class NativeBf16(NamedTuple):
    ok: bool
    how: str  # the flags found, or why not


def cpu_flags(path: str = "/proc/cpuinfo") -> set[str] | None:
    """The first CPU's feature flags (None where there is no /proc/cpuinfo)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return set()


def cpu_bf16(flags: set[str] | None = None) -> NativeBf16:
    """Whether this CPU computes bfloat16 dot products natively (AVX512-BF16 or AMX), from its flags."""
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return NativeBf16(False, "no /proc/cpuinfo to read the CPU's flags from")
    found = [f for f in BF16_FLAGS if f in flags]
    if found:
        return NativeBf16(True, ", ".join(found))
    return NativeBf16(False, f"this CPU has neither {' nor '.join(BF16_FLAGS)} (bfloat16 would be emulated, slower "
                             "than float32)")


__all__ = ["PRECISIONS", "EXPORTS", "parse_precision", "parse_precisions", "cpu_bf16", "cpu_flags", "NativeBf16"]
