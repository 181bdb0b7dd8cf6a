"""rlplat/stats.py: the interquartile mean and its bootstrap interval over runs."""

from __future__ import annotations

import pytest

from rlplat.stats import estimate, iqm


def test_iqm_is_the_mean_of_the_middle_half():
    assert iqm([1, 2, 3, 4, 100, -100, 5, 6]) == pytest.approx((2 + 3 + 4 + 5) / 4)
    assert iqm([474.6, 500, 500, 305, 500]) == pytest.approx((474.6 + 500 + 500) / 3)


def test_an_estimate_holds_its_value_in_a_repeatable_interval():
    values = [190.0, 210.0, 230.0, 250.0, 170.0]
    e = estimate(values)
    assert e.low <= e.value <= e.high and e.low < e.high and e.runs == 5
    assert estimate(values) == e  # seeded resampling
    assert estimate([3.0]).low is None  # one run: no interval
    assert estimate([7.0, 7.0, 7.0]).to_dict() == {"value": 7.0, "low": 7.0, "high": 7.0, "runs": 3}
    with pytest.raises(ValueError):
        estimate([])
