"""Statistics over runs (seeds), as Agarwal et al. (2021, "Deep RL at the Edge of the
Statistical Precipice", the `rliable` library) recommend for few runs: the interquartile
mean (IQM), percentile-bootstrap intervals stratified by task (each task's runs resampled
on their own), the probability of improvement and performance profiles; and, for episodes
of two A/B arms, Student's intervals and Welch's test.

The one implementation `rlplat compare`, the results check, `tune`'s held-out re-runs,
`play --compare-arms` and the benchmark scripts use. scipy does the resampling (its
`bootstrap` resamples each of several samples on its own: stratified); this module fixes
the choices. tests/test_stats.py checks it against values rliable 1.2 computes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sp_stats

CONFIDENCE = 0.95
RESAMPLES = 5_000


def iqm(values: Sequence[float] | np.ndarray, axis: int | None = None) -> float | np.ndarray:
    """Interquartile mean: the mean of the middle 50% (scipy's 25% trimmed mean), over
    `axis` (None: all values)."""
    return sp_stats.trim_mean(np.asarray(values, np.float64), 0.25, axis=axis)


@dataclass(frozen=True)
class Estimate:
    """A point estimate over runs with its 95% bootstrap interval (None with one run)."""

    value: float
    low: float | None
    high: float | None
    runs: int

    def to_dict(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def text(self, fmt: str = ",.1f") -> str:
        if self.low is None or self.high is None:
            return f"{self.value:{fmt}}"
        return f"{self.value:{fmt}} [{self.low:{fmt}}, {self.high:{fmt}}]"

    def overlaps(self, other: Estimate) -> bool:
        """Whether the two intervals share a point (no interval: they do)."""
        if None in (self.low, self.high, other.low, other.high):
            return True
        return not (self.high < other.low or other.high < self.low)  # type: ignore[operator]


def estimate(
    values: Sequence[float], statistic: Callable[[np.ndarray], float] = iqm, seed: int = 0
) -> Estimate:
    """`statistic` of one task's `values` with a 95% percentile-bootstrap interval over
    the runs (seeded: the same values give the same interval)."""
    x = np.asarray(values, np.float64)
    if len(x) == 0:
        raise ValueError("no runs to estimate from")
    return bootstrap([x], lambda a, axis=-1: np.apply_along_axis(statistic, axis, a), seed)


def bootstrap(
    samples: Sequence[np.ndarray], statistic: Callable[..., np.ndarray], seed: int = 0,
    resamples: int = RESAMPLES,
) -> Estimate:  # fmt: skip
    """`statistic(*samples, axis=-1)` with a 95% percentile interval from resampling each
    sample's runs on its own (the stratified bootstrap: one sample per task, or per
    experiment and task). A sample of one run, or samples that cannot vary, give the
    value as both bounds (None with one run)."""
    arrays = [np.asarray(s, np.float64) for s in samples]
    value = float(statistic(*arrays, axis=-1))
    runs = min(len(a) for a in arrays)
    if runs < 2 or all(np.all(a == a[0]) for a in arrays):
        same = value if runs >= 2 else None
        return Estimate(value, same, same, runs)
    res = sp_stats.bootstrap(
        arrays, statistic, confidence_level=CONFIDENCE, n_resamples=resamples,
        method="percentile", random_state=np.random.default_rng(seed), vectorized=True,
        paired=False,
    )  # fmt: skip
    ci = res.confidence_interval
    return Estimate(value, float(ci.low), float(ci.high), runs)


def aggregate(per_task: Sequence[np.ndarray], kind: str = "iqm", seed: int = 0) -> Estimate:
    """IQM, median or mean of the runs' scores (already comparable across tasks:
    normalised), with the stratified interval. One task: over its runs. Several, as
    rliable: the IQM of every run of every task; the median and mean of the task means."""
    if kind not in ("iqm", "median", "mean"):
        raise ValueError(f"kind: iqm, median or mean, got {kind!r}")
    if len(per_task) == 1:
        return estimate(per_task[0], {"iqm": iqm, "median": np.median, "mean": np.mean}[kind], seed)

    def statistic(*tasks: np.ndarray, axis: int = -1) -> np.ndarray:
        if kind == "iqm":
            return iqm(np.concatenate(tasks, axis=axis), axis=axis)
        means = np.stack([t.mean(axis=axis) for t in tasks], axis=-1)
        return (np.median if kind == "median" else np.mean)(means, axis=-1)

    return bootstrap(per_task, statistic, seed)


def improvement_probability(
    a: Sequence[np.ndarray], b: Sequence[np.ndarray], seed: int = 0
) -> Estimate:
    """P(B > A): the chance that a run of B scores above a run of A on the same task (ties
    count half), averaged over tasks; `a` and `b` hold one array of runs per task. Its
    interval resamples each task's runs of A and of B on their own (rliable's choice)."""
    tasks = len(a)

    def statistic(*samples: np.ndarray, axis: int = -1) -> np.ndarray:
        total = 0.0
        for x, y in zip(samples[:tasks], samples[tasks:], strict=True):
            gt = (y[..., None, :] > x[..., :, None]).mean(axis=(-2, -1))
            eq = (y[..., None, :] == x[..., :, None]).mean(axis=(-2, -1))
            total = total + gt + 0.5 * eq
        return total / tasks

    return bootstrap([*a, *b], statistic, seed)


def performance_profile(per_task: Sequence[np.ndarray], thresholds: np.ndarray) -> np.ndarray:
    """The fraction of runs (of every task) scoring above each threshold (rliable's
    run-score distribution)."""
    scores = np.concatenate([np.asarray(t, np.float64) for t in per_task])
    return (scores[None, :] > np.asarray(thresholds)[:, None]).mean(axis=1)


def seeds_needed(a: Sequence[float], b: Sequence[float], power: float = 0.8) -> int | None:
    """Seeds per experiment a two-sided test at the 95% level would likely need to tell
    A from B with `power`, if the difference and spread are what these runs show (normal
    approximation); None when these runs show no difference at all."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    delta = abs(float(y.mean() - x.mean()))
    spread = math.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2) if min(len(x), len(y)) > 1 else 0.0
    if delta == 0:
        return None
    if spread == 0:
        return 2
    z = sp_stats.norm.ppf(0.5 + CONFIDENCE / 2) + sp_stats.norm.ppf(power)
    return max(2, math.ceil(2 * (z * spread / delta) ** 2))


# ----------------------------------------------------- episodes of A/B arms (Student, Welch)


def t_quantile_975(df: float) -> float:
    """The 95% interval's half-width in standard errors: P(|T| >= t) = 0.05."""
    return float(sp_stats.t.ppf(0.975, df))


def mean_interval(x: Sequence[float]) -> tuple[float, float | None]:
    """Mean and the half-width of its 95% Student interval (None below two values)."""
    n, mean = len(x), float(np.mean(x))
    if n < 2:
        return mean, None
    return mean, t_quantile_975(n - 1) * float(np.std(x, ddof=1)) / math.sqrt(n)


def welch(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float] | None:
    """(t, df, two-sided p) of Welch's test that a and b have the same mean; None when it is
    undefined (fewer than two values in one, or no variance in either)."""
    if len(a) < 2 or len(b) < 2:
        return None
    if np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b) == 0:
        return None
    result = sp_stats.ttest_ind(b, a, equal_var=False)
    return float(result.statistic), float(result.df), float(result.pvalue)
