"""Comparing the arms of an A/B split by episode return (what `rlplat play --compare-arms`
prints): per arm the episodes, the mean return with a 95% confidence interval (Student's
t), and Welch's t-test of each arm against the first (unequal variances, as two policies'
returns have). The t distribution is scipy's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as sps


def t_quantile_975(df: float) -> float:
    """The 95% interval's half-width in standard errors: P(|T| >= t) = 0.05."""
    return float(sps.t.ppf(0.975, df))


@dataclass(frozen=True)
class ArmStats:
    arm: str
    episodes: int
    mean: float
    ci95: float | None  # half-width; None below two episodes
    # Welch's t-test against the first arm (None for the first arm, or when undefined)
    t: float | None = None
    df: float | None = None
    p: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _var(x: Sequence[float]) -> float:
    m = sum(x) / len(x)
    return sum((v - m) ** 2 for v in x) / (len(x) - 1)


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float] | None:
    """(t, df, two-sided p) of Welch's test that a and b have the same mean; None when it is
    undefined (fewer than two episodes in an arm, or no variance in either)."""
    if len(a) < 2 or len(b) < 2:
        return None
    sa, sb = _var(a) / len(a), _var(b) / len(b)
    if sa + sb == 0:
        return None
    result = sps.ttest_ind(b, a, equal_var=False)
    return float(result.statistic), float(result.df), float(result.pvalue)


def table(stats: list[ArmStats], title: str):
    """The comparison as a rich Table: one row per arm."""
    from rich.table import Table

    out = Table(title=title)
    for col in ("arm", "episodes", "mean return", "95% CI", f"Welch t vs {stats[0].arm}",
                "df", "p"):  # fmt: skip
        out.add_column(col, justify="right")

    def num(x: float | None, fmt: str = ".2f") -> str:
        return "-" if x is None else format(x, fmt)

    for s in stats:
        ci = "-" if s.ci95 is None else f"[{s.mean - s.ci95:.2f}, {s.mean + s.ci95:.2f}]"
        out.add_row(s.arm, str(s.episodes), num(s.mean), ci, num(s.t), num(s.df, ".1f"),
                    num(s.p, ".3g"))  # fmt: skip
    return out


def compare(returns: Sequence[float], arms: Sequence[str]) -> list[ArmStats]:
    """Per-arm statistics of episode `returns`, each episode's arm in `arms`; arms in the
    order first seen, each tested against the first."""
    by_arm: dict[str, list[float]] = {}
    for r, arm in zip(returns, arms, strict=True):
        by_arm.setdefault(arm, []).append(float(r))
    out = []
    first = next(iter(by_arm.values()), [])
    for i, (arm, xs) in enumerate(by_arm.items()):
        n, mean = len(xs), sum(xs) / len(xs)
        ci = t_quantile_975(n - 1) * math.sqrt(_var(xs) / n) if n >= 2 else None
        test = welch(first, xs) if i > 0 else None
        t, df, p = test if test is not None else (None, None, None)
        out.append(ArmStats(arm, n, mean, ci, t, df, p))
    return out
