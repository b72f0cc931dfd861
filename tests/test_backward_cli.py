"""`convcalc --backward`: the three rules of a layer on literal numbers, worked by hand, and every backend with a
backward agreeing with finite differences."""

import numpy as np
import pytest
from test_convcalc import cc, fails  # tests/ is on sys.path under pytest


def test_conv_backward_by_hand():
    # x 3x3, w 2x2, dL/dy all ones: dL/dw[u, v] is the sum of the 2x2 window of x that w[u, v] touches
    doc = cc("--backward", "--x", "1,2,0;0,1,3;2,2,1", "--w", "1,0;0,-1", "--lr", "0.5")
    assert doc["y"] == [[0, -1], [-2, 0]]  # 1*1 + 1*-1 = 0, 2 - 3 = -1, 0 - 2 = -2, 1 - 1 = 0
    assert doc["dx"] == [[1, 1, 0], [1, 0, -1], [0, -1, -1]]  # each x collects the weights it met
    assert doc["dw"] == [[4, 6], [5, 7]] and doc["db"] == 4
    assert doc["w_new"] == [[1 - 0.5 * 4, 0 - 0.5 * 6], [0 - 0.5 * 5, -1 - 0.5 * 7]] and doc["b_new"] == -2
    assert doc["dx_via_CT"] == doc["dx"] and doc["dx_via_tconv"] == doc["dx"]  # C^T dy = conv_transpose2d(dy, w)
    assert doc["dw_via_correlation"] == doc["dw"]
    assert doc["ok"] and [r["method"] for r in doc["agreement"]] == [
        "numpy (hand-written)", "naive (loops)", "torch (autograd)", "finite differences"]
    fd = doc["agreement"][-1]
    assert 0 < fd["dx"] < 1e-6 and fd["ok"]  # finite differences really computed, and close


def test_strided_padded_conv_with_a_given_upstream_gradient():
    doc = cc("--backward", "-k", "3", "-s", "2", "-p", "1", "-i", "5", "--dy", "1,-1,2;0,3,1;-2,1,1", "--seed", "4")
    assert np.array(doc["dx"]).shape == (5, 5) and doc["ok"]
    np.testing.assert_allclose(doc["dx_via_CT"], doc["dx"], atol=1e-12)
    np.testing.assert_allclose(doc["dx_via_tconv"], doc["dx"], atol=1e-12)
    assert doc["db"] == 1 - 1 + 2 + 0 + 3 + 1 - 2 + 1 + 1


def test_max_pool_routes_to_the_winner():
    doc = cc("--backward", "--pool", "max", "-k", "2", "--x", "1,1,2,4;5,6,7,8;3,2,1,0;1,2,3,4", "--dy", "1,2;3,4")
    assert doc["y"] == [[6, 8], [3, 4]]
    assert doc["dx"] == [[0, 0, 0, 0], [0, 1, 0, 2], [3, 0, 0, 0], [0, 0, 0, 4]]
    assert "dw" not in doc and doc["ok"]


def test_transposed_conv_and_activations():
    doc = cc("--backward", "-t", "-k", "2", "-s", "2", "--x", "1,2;3,4", "--w", "1,2;3,4")
    assert doc["dx"] == [[10, 10], [10, 10]]  # each input's stamp is w; dL/dx sums w against all-ones dL/dy
    assert doc["dw"] == [[10, 10], [10, 10]] and doc["ok"]
    sig = cc("--backward", "--activation", "sigmoid", "--x", "0,2")
    s2 = 1 / (1 + np.exp(-2))
    np.testing.assert_allclose(sig["y"], [[0.5, s2]])
    np.testing.assert_allclose(sig["f_prime"], [[0.25, s2 * (1 - s2)]])
    relu = cc("--backward", "--activation", "relu", "--x", "-1,0.5;2,-3")
    assert relu["dx"] == [[0, 1], [1, 0]] and relu["ok"]


@pytest.mark.parametrize("args,msg", [
    (["--backward", "-k", "3", "-i", "20"], "too large"),
    (["--backward", "-k", "3", "-i", "4", "--dy", "1,2;3"], "--dy"),
    (["--backward", "-k", "3", "-i", "4", "--dy", "1,2,3;4,5,6"], "but the output is 2x2"),
    (["--backward", "--activation", "swish", "--x", "1,2"], "unknown --activation"),
    (["--backward", "-k", "3", "-i", "4", "--lr", "-1"], "--lr must be a finite number greater than 0"),
    (["--dy", "1,2", "-k", "3", "-i", "4"], "means nothing without --backward"),
])
def test_bad_backward_inputs_are_one_line_and_exit_2(capsys, args, msg):
    assert msg in fails(capsys, *args)


def test_without_the_reference_backend_backward_refuses_in_one_line(capsys, monkeypatch):
    """The NumPy reference unavailable: one line naming why, even though naive and torch could still run."""
    import cvtool_backends as registry
    from cvtool_backends.base import Status

    real = registry.status
    monkeypatch.setattr(registry, "status", lambda name: Status(name=name, available=False, reason="numpy is broken")
                        if name == registry.REFERENCE else real(name))
    assert "NumPy reference backend is not available: numpy is broken" in fails(
        capsys, "--backward", "-k", "3", "-i", "4")
