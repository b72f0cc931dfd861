"""cvtool.train.schedule.lr_at: linear warm-up, then poly or cosine decay, at hand-checked points."""

from __future__ import annotations

import math

import pytest

from cvtool.train.schedule import lr_at

BASE = 2.0


@pytest.mark.parametrize("p,want", [
    (0.0, BASE * 1e-3),  # never 0: the floor
    (0.0001, BASE * 1e-3),  # 0.0001 / 0.2 = 5e-4 is under the floor
    (0.05, BASE * 0.25),
    (0.1, BASE * 0.5),
    (0.15, BASE * 0.75),
])
def test_warmup_is_linear_from_the_floor(p, want):
    for schedule in ("poly", "cosine", "constant"):
        assert lr_at(p, BASE, schedule=schedule, warmup=0.2) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("p,want", [
    (0.2, 1.0),  # warm-up over: t = 0
    (0.6, 0.5 ** 0.9),  # t = 0.5
    (0.9, 0.125 ** 0.9),  # t = 0.875
    (0.99, 0.0125 ** 0.9),  # t = 0.9875: 0.0194 is still above `final`
    (0.999, 0.01),  # t = 0.99875: 0.00125^0.9 = 0.0024 is below it: the floor
    (1.0, 0.01),
    (1.7, 0.01),  # clamped to 1
])
def test_poly(p, want):
    assert lr_at(p, BASE, schedule="poly", warmup=0.2) == pytest.approx(BASE * want, rel=1e-12)


def test_poly_literal_values():
    """Decimal literals worked out by hand (not with the formula under test)."""
    assert lr_at(0.6, 1.0, schedule="poly", warmup=0.2) == pytest.approx(0.5358867313, rel=1e-9)
    assert lr_at(0.5, 1.0, schedule="poly", warmup=0.0, power=1.0) == pytest.approx(0.5, rel=1e-12)
    assert lr_at(0.75, 1.0, schedule="poly", warmup=0.0, power=2.0) == pytest.approx(0.0625, rel=1e-12)


@pytest.mark.parametrize("p,want", [
    (0.2, 1.0),  # t = 0: cos 0 = 1
    (0.6, 0.505),  # t = 1/2: 0.01 + 0.99 * 0.5 * (1 + 0)
    (0.4, 0.01 + 0.99 * 0.5 * (1 + math.sqrt(0.5))),  # t = 1/4: 0.855...
    (0.8, 0.01 + 0.99 * 0.5 * (1 - math.sqrt(0.5))),  # t = 3/4: 0.154...
    (1.0, 0.01),
])
def test_cosine(p, want):
    assert lr_at(p, BASE, schedule="cosine", warmup=0.2) == pytest.approx(BASE * want, rel=1e-12)


def test_constant_and_no_warmup():
    assert lr_at(0.5, BASE, schedule="constant", warmup=0.2) == BASE
    assert lr_at(0.0, BASE, schedule="poly", warmup=0.0) == BASE  # no warm-up: the peak at once
    assert lr_at(0.0, BASE, schedule="cosine", warmup=0.0) == BASE


def test_schedules_are_continuous_at_the_end_of_warmup():
    for schedule in ("poly", "cosine"):
        before = lr_at(0.2 - 1e-9, BASE, schedule=schedule, warmup=0.2)
        after = lr_at(0.2, BASE, schedule=schedule, warmup=0.2)
        assert after == pytest.approx(before, rel=1e-6)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule"):
        lr_at(0.5, BASE, schedule="step", warmup=0.1)
