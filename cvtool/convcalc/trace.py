"""Shapes through a stack: a --chain of layers (receptive fields), or a whole network (--model: FLOPs)."""

from __future__ import annotations

from cvtool.convcalc.chain import parse_chain, trace
from cvtool.errors import UsageError


def chain_doc(text: str, hw: tuple[int, int], channels: int | None) -> dict:
    """Every layer of the chain: its shape, receptive field, jump, start and parameters."""
    if channels is not None and channels < 1:
        raise UsageError(f"--channels must be at least 1, got {channels}")
    steps = trace(parse_chain(text), hw, channels)
    last = steps[-1]
    return {"mode": "chain", "input": [channels, hw[0], hw[1]], "layers": [s.to_dict() for s in steps],
            "output": list(last.out_shape[1:]), "shape": list(last.out_shape), "channels": last.out_shape[0],
            "receptive_field": [f.size for f in last.rf],
            "params": None if any(s.params is None for s in steps) else sum(s.params for s in steps)}


def model_doc(spec, source: str, hw: tuple[int, int]) -> dict:
    """A network's spec (from a checkpoint, an export, the default or lite0; the CLI reads it) traced layer by layer
    with parameters, FLOPs, stride so far (jump) and receptive field (input pixels one output pixel sees: the widest
    path through the graph)."""
    from cvtool.model.spec import trace as trace_net

    rows = trace_net(spec, hw)
    layers = [{"name": r.name, "op": r.op, "detail": r.detail, "shape": list(r.out_shape), "params": r.params,
               "flops": r.flops, "jump": r.jump, "receptive_field": r.rf} for r in rows]
    return {"mode": "model", "source": source, "spec": spec.to_dict(), "input": [spec.in_channels, *hw],
            "layers": layers, "output": list(rows[-1].out_shape[1:]), "shape": list(rows[-1].out_shape),
            "params": sum(r.params for r in rows), "flops": sum(r.flops for r in rows),
            "receptive_field": rows[-1].rf, "max_jump": max(r.jump for r in rows),
            "conv_flops": sum(r.flops for r in rows if r.op in ("conv", "tconv"))}


__all__ = ["chain_doc", "model_doc"]
