"""Parameter update rules, numerically the same as torch.optim.SGD / SGD(momentum) / Adam.

Each call updates one parameter w in place from its gradient dw (theta <- theta - lr * step) and
keeps that parameter's state in the dict `state`, under torch's names (momentum_buffer,
exp_avg, exp_avg_sq, step) so that optimiser state can move between backends.
Weight decay is L2 (added to the gradient), as in torch's SGD and Adam (not AdamW).
"""

from __future__ import annotations

import numpy as np


def _decayed(w: np.ndarray, dw: np.ndarray, weight_decay: float) -> np.ndarray:
    return dw + weight_decay * w if weight_decay else dw


def sgd(w: np.ndarray, dw: np.ndarray, state: dict, *, lr: float, weight_decay: float = 0.0) -> None:
    """w <- w - lr * (dw + weight_decay * w). Stateless; `state` is accepted for a uniform call."""
    w -= lr * _decayed(w, dw, weight_decay)


def momentum(w: np.ndarray, dw: np.ndarray, state: dict, *, lr: float, mu: float = 0.9, weight_decay: float = 0.0,
             nesterov: bool = False) -> None:
    """torch's SGD with momentum (dampening 0): v <- mu*v + g (v = g at the first step);
    w <- w - lr * v, or with Nesterov w <- w - lr * (g + mu*v)."""
    g = _decayed(w, dw, weight_decay)
    v = state.get("momentum_buffer")
    if v is None:
        v = state["momentum_buffer"] = np.array(g, dtype=w.dtype, copy=True)
    else:
        v *= mu
        v += g
    w -= lr * (g + mu * v if nesterov else v)


def adam(w: np.ndarray, dw: np.ndarray, state: dict, *, lr: float, beta1: float = 0.9, beta2: float = 0.999,
         eps: float = 1e-8, weight_decay: float = 0.0) -> None:
    """torch's Adam: moments m, v with bias correction at step t,
    w <- w - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)."""
    g = _decayed(w, dw, weight_decay)
    if "step" not in state:
        state.update(step=0, exp_avg=np.zeros_like(w), exp_avg_sq=np.zeros_like(w))
    state["step"] += 1
    t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
    m += (1 - beta1) * (g - m)  # torch: exp_avg.lerp_(grad, 1 - beta1)
    v *= beta2
    v += (1 - beta2) * g * g
    denom = np.sqrt(v) / np.sqrt(1 - beta2 ** t) + eps
    w -= (lr / (1 - beta1 ** t)) * m / denom


__all__ = ["sgd", "momentum", "adam"]
