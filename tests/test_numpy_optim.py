"""The NumPy update rules against torch.optim, step by step, and their state under torch's names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvtool_backends.numpy_fast import optim

STEPS = 6

CASES = [  # (our rule, its keywords, torch optimiser, its keywords)
    (optim.sgd, dict(lr=0.1), torch.optim.SGD, dict(lr=0.1)),
    (optim.sgd, dict(lr=0.05, weight_decay=0.1), torch.optim.SGD, dict(lr=0.05, weight_decay=0.1)),
    (optim.momentum, dict(lr=0.1, mu=0.9), torch.optim.SGD, dict(lr=0.1, momentum=0.9)),
    (optim.momentum, dict(lr=0.05, mu=0.8, weight_decay=0.01, nesterov=True), torch.optim.SGD,
     dict(lr=0.05, momentum=0.8, weight_decay=0.01, nesterov=True)),
    (optim.adam, dict(lr=0.01), torch.optim.Adam, dict(lr=0.01)),
    (optim.adam, dict(lr=0.003, beta1=0.8, beta2=0.99, eps=1e-6, weight_decay=0.05), torch.optim.Adam,
     dict(lr=0.003, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.05)),
]


def grad_of(w: np.ndarray) -> np.ndarray:
    """Gradient of a loss whose curvature differs per element, so the state matters: sum(a*w^2 + b*sin(w))."""
    a = np.linspace(0.5, 3, w.size, dtype=w.dtype).reshape(w.shape)
    return 2 * a * w + np.cos(w)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("rule, kw, torch_opt, torch_kw", CASES)
def test_matches_torch_optim(rule, kw, torch_opt, torch_kw, dtype, tol):
    w0 = np.random.default_rng(0).standard_normal((3, 4)).astype(dtype)
    w, state = w0.copy(), {}
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = torch_opt([p], **torch_kw)
    for _ in range(STEPS):
        dw = grad_of(w)
        p.grad = torch.tensor(grad_of(p.detach().numpy()))
        rule(w, dw, state, **kw)
        opt.step()
        assert w.dtype == dtype
        np.testing.assert_allclose(w, p.detach().numpy(), rtol=tol, atol=tol)
    assert not np.allclose(w, w0)
    for name, value in opt.state[p].items():  # same state, same names: checkpoints move between backends
        np.testing.assert_allclose(np.asarray(state[name]), np.asarray(value), rtol=tol, atol=tol)


def test_updates_in_place():
    w = np.ones(3)
    view = w[:]
    optim.adam(w, np.ones(3), {}, lr=0.1)
    assert view[0] == pytest.approx(0.9)  # theta <- theta - lr * ..., and the first Adam step is lr


def test_momentum_first_step_is_plain_sgd():
    w, state = np.zeros(2), {}
    optim.momentum(w, np.array([1.0, -2.0]), state, lr=0.5, mu=0.9)
    np.testing.assert_array_equal(w, [-0.5, 1.0])
    np.testing.assert_array_equal(state["momentum_buffer"], [1.0, -2.0])
