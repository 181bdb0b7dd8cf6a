"""rlplat/stats.py: IQM, bootstrap intervals stratified by task, the probability of improvement
and performance profiles, checked against rliable's values."""

from __future__ import annotations

import numpy as np
import pytest

from rlplat.stats import (
    aggregate,
    estimate,
    improvement_probability,
    iqm,
    performance_profile,
    seeds_needed,
)


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


# Reference values from rliable 1.2.0 (the library of Agarwal et al. 2021), computed in a
# separate environment (rliable's `arch` dependency does not import beside pandas 3):
#   scores = {"A": A, "B": B}  (runs x tasks, below)
#   rly.get_interval_estimates(scores, lambda x: np.array([metrics.aggregate_iqm(x),
#       metrics.aggregate_median(x), metrics.aggregate_mean(x)]), reps=50000,
#       random_state=np.random.RandomState(0))
#   rly.get_interval_estimates({"B>A": [B, A]}, metrics.probability_of_improvement, ...)
#   rly.create_performance_profile(scores, [0.0, 0.3, 0.5, 1.0, 1.2])
# Points must match; intervals are percentiles of a different random resampling (scipy's
# here, 5,000 resamples), so they match within a tolerance.
A = np.array([[0.12, 1.05], [0.40, 0.90], [0.31, 1.32], [0.05, 0.77], [0.22, 1.10]])
B = np.array([[0.35, 1.20], [0.52, 1.41], [0.28, 0.95], [0.61, 1.33], [0.44, 1.18]])
RLIABLE = {  # kind: (A point, A low, A high, B point, B low, B high)
    "iqm": (0.608333, 0.5, 0.7183, 0.816667, 0.7083, 0.92),
    "median": (0.624, 0.527, 0.722, 0.827, 0.739, 0.909),
    "mean": (0.624, 0.527, 0.722, 0.827, 0.739, 0.909),
}


def _tasks(m: np.ndarray) -> list[np.ndarray]:
    return [m[:, t] for t in range(m.shape[1])]


@pytest.mark.parametrize("kind", sorted(RLIABLE))
def test_aggregates_across_tasks_match_rliable(kind):
    for (point, low, high), scores in zip(
        (RLIABLE[kind][:3], RLIABLE[kind][3:]), (A, B), strict=True
    ):
        e = aggregate(_tasks(scores), kind)
        assert e.value == pytest.approx(point, abs=1e-6)
        assert e.low == pytest.approx(low, abs=0.03) and e.high == pytest.approx(high, abs=0.03)


def test_probability_of_improvement_matches_rliable():
    e = improvement_probability(_tasks(A), _tasks(B))
    assert e.value == pytest.approx(0.84)
    assert e.low == pytest.approx(0.62, abs=0.04) and e.high == pytest.approx(1.0)
    same = improvement_probability([np.array([1.0, 2.0])], [np.array([1.0, 2.0])])
    assert same.value == pytest.approx(0.5)  # ties count half


def test_performance_profile_matches_rliable():
    taus = np.array([0.0, 0.3, 0.5, 1.0, 1.2])
    assert performance_profile(_tasks(A), taus).tolist() == pytest.approx([1, 0.7, 0.5, 0.3, 0.1])
    assert performance_profile(_tasks(B), taus).tolist() == pytest.approx([1, 0.9, 0.7, 0.4, 0.2])


def test_one_task_statistics_are_over_its_runs():
    x = np.array([190.0, 210.0, 230.0, 250.0, 170.0])
    assert aggregate([x], "median").value == 210.0
    assert aggregate([x], "iqm") == estimate(x)  # the results check's estimate, unchanged


def test_seeds_needed_grows_as_the_difference_shrinks():
    a = [200.0, 210.0, 190.0, 205.0, 195.0]
    assert seeds_needed(a, [x + 30 for x in a]) < seeds_needed(a, [x + 5 for x in a])
    assert seeds_needed(a, a) is None  # no difference to detect
    # 2 * (1.96 + 0.84)^2 * (s / delta)^2 with s = 7.9, delta = 10: about 10 seeds
    assert seeds_needed(a, [x + 10 for x in a]) == 10
