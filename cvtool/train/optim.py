"""Optimiser configuration, shared by every backend's trainer (the update rules live in the backends)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OptimConfig:
    name: str = "adam"  # sgd | momentum | adam
    weight_decay: float = 0.0
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
