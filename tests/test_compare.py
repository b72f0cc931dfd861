"""cvtool.compare: the one error definition (max |got - ref| / max(max |ref|, TINY)) on numbers checkable by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cvtool.compare import TINY, TOLERANCE, Tolerance, compare


def test_errors_relative_to_the_largest_reference_value():
    a = compare([1.0, -2.5, 4.0], [1.0, -2.0, 4.0], Tolerance(max_rel=0.2))
    assert a.max_abs == 0.5 and a.max_rel == 0.5 / 4.0 and a.ok and a.reason is None
    a = compare([1.0, -2.5, 4.0], [1.0, -2.0, 4.0], Tolerance(max_rel=0.1))  # 0.125 > 0.1
    assert not a.ok and a.reason == "max rel diff 1.25e-01 > tolerance 0.1"


def test_an_absolute_bound():
    assert compare([0.0, 1e-11], [0.0, 0.0], TOLERANCE["float64"]).ok  # 1e-11 <= 1e-10
    a = compare([0.0, 1e-9], [0.0, 0.0], TOLERANCE["float64"])
    assert not a.ok and a.max_abs == 1e-9 and "max abs diff" in a.reason


def test_reference_all_zeros():
    a = compare(np.zeros(3), np.zeros(3), TOLERANCE["float32"])
    assert a.max_abs == 0.0 and a.max_rel == 0.0 and a.ok
    a = compare([0.0, 1e-6, 0.0], np.zeros(3), TOLERANCE["float32"])  # any error against 0 is huge
    assert a.max_abs == 1e-6 and a.max_rel == 1e-6 / TINY and not a.ok


def test_nan_in_got_is_never_close():
    a = compare([1.0, math.nan], [1.0, 2.0])  # even under the default tolerance, which takes any finite error
    assert math.isnan(a.max_abs) and math.isnan(a.max_rel) and not a.ok and "nan" in a.reason


def test_infinities_must_match_exactly():
    ninf = -math.inf  # a max-pool window over padding only
    a = compare([ninf, 3.0], [ninf, 2.0], Tolerance(max_rel=1.0))
    assert a.ok and a.max_abs == 1.0 and a.max_rel == 0.5  # the finite entries only
    a = compare([0.0, 2.0], [ninf, 2.0], Tolerance(max_rel=1.0))
    assert not a.ok and a.max_abs is None and a.reason == "infinities differ from the reference"
    assert compare([ninf], [ninf]).max_rel == 0.0  # nothing finite: no error


def test_shapes_that_differ_are_no_agreement():
    a = compare(np.zeros((2, 3)), np.zeros((3, 2)), TOLERANCE["float32"])
    assert not a.ok and a.max_abs is None and a.max_rel is None
    assert a.reason == "shape [2, 3], the reference gives [3, 2]"  # no broadcasting


def test_labels_agreement():
    ref = np.array([[[[1.0, -2.0]], [[0.5, 4.0]]]])  # (N=1, K=2, H=1, W=2): classes [0, 1]
    got = ref.copy()
    got[0, 0, 0, 1] = 5.0  # pixel 1 now class 0: one label of two differs
    a = compare(got, ref, Tolerance(max_rel=10.0, labels=0.5), labels=True)
    assert a.labels == 0.5 and a.ok and a.max_abs == 7.0 and a.max_rel == 7.0 / 4.0
    a = compare(got, ref, Tolerance(max_rel=10.0, labels=0.999), labels=True)
    assert not a.ok and a.reason == "labels agree on 50.000% < 99.9%"
    assert compare(got, ref).labels is None  # only when asked


@pytest.mark.parametrize("key", list(TOLERANCE))
def test_every_tolerance_accepts_the_exact_result(key):
    x = np.arange(24.0).reshape(1, 2, 3, 4)
    assert compare(x, x, TOLERANCE[key], labels=True).ok
