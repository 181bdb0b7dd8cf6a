"""rlplat.arms: per-arm returns, 95% intervals and Welch's t-test (the figures `rlplat play
--compare-arms` prints), against values from standard tables and worked by hand."""

from __future__ import annotations

import math

import pytest

from rlplat.arms import compare
from rlplat.stats import t_quantile_975, welch


@pytest.mark.parametrize("df, table", [(1, 12.706), (10, 2.228), (30, 2.042)])
def test_t_quantile_matches_the_table(df, table):
    assert t_quantile_975(df) == pytest.approx(table, abs=1e-3)


def test_welch_by_hand():
    a, b = [1, 2, 3, 4, 5.5], [2, 4, 6, 8, 10, 12]
    # Variances of the means: 12.2 / 4 / 5 = 0.61 and 70 / 5 / 6 = 7 / 3.
    se2 = 0.61 + 7 / 3
    t, df, p = welch(a, b)
    assert t == pytest.approx(3.9 / math.sqrt(se2))
    assert df == pytest.approx(se2**2 / (0.61**2 / 4 + (7 / 3) ** 2 / 5))
    assert 0.05 < p < 0.06  # t 2.27 on 7.3 df: just above the 5% line (t_7 = 2.365)
    assert welch([1, 1], [1, 1]) is None and welch([1], [2, 3]) is None


def test_compare_groups_episodes_by_arm():
    stats = compare([10, 12, 11, 30, 29, 31, 13], ["1", "1", "1", "2", "2", "2", "3"])
    assert [(s.arm, s.episodes, s.mean) for s in stats] == [
        ("1", 3, 11), ("2", 3, 30), ("3", 1, 13)]  # fmt: skip
    assert stats[0].ci95 == pytest.approx(t_quantile_975(2) * 1 / math.sqrt(3))
    assert stats[0].p is None and stats[1].p < 0.001 and stats[1].t > 0
    assert stats[2].ci95 is None and stats[2].p is None  # one episode: no interval, no test
