"""Statistics over runs (seeds): the interquartile mean and percentile-bootstrap intervals,
as Agarwal et al. (2021, "Deep RL at the Edge of the Statistical Precipice") recommend for
few runs. Over one experiment's seeds the stratified bootstrap is the plain bootstrap over
runs (one stratum). scipy does the resampling; this module only fixes the choices."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sp_stats

CONFIDENCE = 0.95
RESAMPLES = 5_000


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% (scipy's 25% trimmed mean)."""
    return float(sp_stats.trim_mean(np.asarray(values, np.float64), 0.25))


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


def estimate(
    values: Sequence[float], statistic: Callable[[np.ndarray], float] = iqm, seed: int = 0
) -> Estimate:
    """`statistic` of `values` with a 95% percentile-bootstrap interval over the runs
    (seeded: the same values give the same interval)."""
    x = np.asarray(values, np.float64)
    if len(x) == 0:
        raise ValueError("no runs to estimate from")
    value = float(statistic(x))
    if len(x) < 2 or np.all(x == x[0]):
        same = value if len(x) >= 2 else None
        return Estimate(value, same, same, len(x))
    res = sp_stats.bootstrap(
        (x,), lambda a, axis=-1: np.apply_along_axis(statistic, axis, a),
        confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
        random_state=np.random.default_rng(seed), vectorized=True,
    )  # fmt: skip
    ci = res.confidence_interval
    return Estimate(value, float(ci.low), float(ci.high), len(x))
