"""Comparing the arms of an A/B split by episode return (what `rlplat play --compare-arms`
prints): per arm the episodes, the mean return with a 95% confidence interval (Student's
t), and Welch's t-test of each arm against the first (unequal variances, as two policies'
returns have): rlplat/stats.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rlplat.stats import mean_interval, welch


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
        mean, ci = mean_interval(xs)
        test = welch(first, xs) if i > 0 else None
        t, df, p = test if test is not None else (None, None, None)
        out.append(ArmStats(arm, len(xs), mean, ci, t, df, p))
    return out
