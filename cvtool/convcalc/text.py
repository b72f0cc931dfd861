"""A layer and its sizes as a person reads them: '3x5', '32x32', 'kernel 3, stride 2, padding 1'.

Part of the data every convcalc mode returns (its --json prints these strings too), so it lives in the core.
"""

from __future__ import annotations

from cvtool.convcalc.chain import TITLES, LayerSpec


def title(kind: str) -> str:
    """'conv' -> 'Convolution'."""
    return TITLES[kind].capitalize()


def dims(v) -> str:
    """(3, 3) -> '3', (3, 5) -> '3x5'."""
    v = tuple(v)
    return str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))


def hw_text(v) -> str:
    """A size, always HxW: (32, 32) -> '32x32'."""
    return "x".join(map(str, v))


def pads_text(pads) -> str:
    (t, b), (l, r) = pads
    if t == b and l == r:
        return dims((t, l))
    return f"top {t}, bottom {b}, left {l}, right {r}"


def params_text(spec: LayerSpec, pads=None, output_padding: bool = True) -> str:
    parts = [f"kernel {dims(spec.kernel)}", f"stride {dims(spec.stride)}"]
    if pads is not None:
        named = f"{spec.padding} -> " if isinstance(spec.padding, str) else ""
        parts.append(f"padding {named}{pads_text(pads)}")
    elif spec.padding not in (0, "valid"):
        parts.append(f"padding {spec.padding if isinstance(spec.padding, (int, str)) else dims(spec.padding)}")
    if spec.dilation != (1, 1):
        parts.append(f"dilation {dims(spec.dilation)}")
    if spec.kind == "tconv" and output_padding:
        parts.append(f"output_padding {dims(spec.output_padding)}")
    if spec.ceil_mode:
        parts.append("ceil_mode")
    return ", ".join(parts)


__all__ = ["title", "dims", "hw_text", "pads_text", "params_text"]
