"""The numpy payloads that cross the collector → replay → learner boundaries."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np


@dataclass
class Transitions:
    """A batch of one-step transitions (leading axis = batch).

    From collectors, `discount` is 0.0 where the episode terminated (no bootstrap) and
    1.0 otherwise, including time-limit truncation, where `next_obs` is the final
    observation and the value of that state is bootstrapped; `last` marks any episode end.
    As n-step transitions (rlplat/experience/nstep.py), `discount` is the whole multiplier
    of the bootstrapped value: gamma^n, or 0 after a termination.
    """

    obs: np.ndarray
    action: np.ndarray
    reward: np.ndarray
    next_obs: np.ndarray
    discount: np.ndarray
    last: np.ndarray | None = None
    # On-policy rollouts collected beside the learner (`collect.overlap`): the log-probability
    # the collecting policy gave each action, which the learner's importance ratio needs.
    log_prob: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.reward)

    def map(self, fn: Callable[[np.ndarray], np.ndarray]) -> Transitions:
        """The same fields with `fn` applied to each array (absent ones stay None)."""
        return Transitions(
            **{
                f.name: None if (a := getattr(self, f.name)) is None else fn(a)
                for f in fields(self)
            }
        )

    @staticmethod
    def concat(parts: Sequence[Transitions], axis: int = 0) -> Transitions:
        """Field-wise concatenation (each optional field: all parts have it, or none does)."""
        return Transitions(**{
            f.name: None if getattr(parts[0], f.name) is None
            else np.concatenate([getattr(p, f.name) for p in parts], axis=axis)
            for f in fields(Transitions)
        })  # fmt: skip


@dataclass
class Sample:
    batch: Transitions
    indices: np.ndarray
    weights: np.ndarray | None  # importance-sampling weights; None for uniform replay
    priorities: np.ndarray | None = None  # of the sampled items (for histograms)


@dataclass(frozen=True)
class EpisodeStats:
    """One finished episode, as reported by a collector."""

    ret: float
    length: int
    index: int = 0  # row of its last transition in the collected batch (for logging steps)


@dataclass
class Fragment:
    """What one collector's `collect` call returns, and what a replay's `add` takes.

    `transitions`: rows ordered (step, env), in the form the replay's `row_spec` asked
    for: n-step transitions (None if no window completed yet), or one-step rows with
    `last` flags (on-policy rollouts; the frame storage). `env_steps` is the number of
    environment steps taken (what the run's budget counts); env i of collector `actor` is
    the stream `actor * num_envs + i`.
    """

    transitions: Transitions | None
    episodes: list[EpisodeStats] = field(default_factory=list)
    env_steps: int = 0
    num_envs: int = 1
    priorities: np.ndarray | None = None  # initial |TD| per transition (Ape-X collectors)
    version: int = 0  # the learner's weight version the fragment was collected with
    actor: int = 0
    info: dict[str, Any] = field(default_factory=dict)
