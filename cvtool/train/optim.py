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
    encoder_lr: float = 1.0  # a pretrained encoder's learning rate, as a fraction of the rest's
    frozen_bn: bool = False  # a pretrained encoder's BatchNorm statistics kept as loaded (evaluation mode) in training


PRETRAINED = "enc."  # the names of a pretrained encoder's parameters (lite0: enc.stem, enc.b0 .. enc.b15, enc.head)


def frozen_statistics(node: str, cfg: OptimConfig) -> bool:
    """Whether BatchNorm node `node` normalises with its running statistics while training (and leaves them as they
    are): a pretrained encoder's, with frozen_bn. Its weight and bias still train, at encoder_lr."""
    return cfg.frozen_bn and node.startswith(PRETRAINED)


def lr_scale(name: str, cfg: OptimConfig) -> float:
    """The factor on the learning rate of parameter `name`: encoder_lr for a pretrained encoder's, 1 for the rest."""
    return cfg.encoder_lr if name.startswith(PRETRAINED) else 1.0
