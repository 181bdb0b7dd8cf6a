"""Honest evaluation: N full episodes, each from its own seeded env, no early cut-off.

All N episodes run in lockstep (one batched policy call per step), so short episodes
are not over-counted the way "first N episodes to finish" would over-count them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import envs
from rlplat.config import EnvConfig

EVAL_SEED_OFFSET = 1_000_000  # eval envs never share seeds with training envs


@dataclass
class EvalResult:
    returns: np.ndarray
    lengths: np.ndarray

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    def to_dict(self) -> dict[str, object]:
        return {
            "episodes": len(self.returns),
            "return_mean": self.mean,
            "return_std": self.std,
            "return_median": float(np.median(self.returns)),
            "return_min": float(np.min(self.returns)),
            "return_max": float(np.max(self.returns)),
            "length_mean": float(np.mean(self.lengths)),
            "returns": [float(r) for r in self.returns],
        }


def run_episodes(
    policy: Callable[[np.ndarray], np.ndarray],
    env_cfg: EnvConfig,
    episodes: int,
    seed: int,
) -> EvalResult:
    """`policy` maps a batch of observations to actions (deterministic for evals)."""
    base = EVAL_SEED_OFFSET + seed * 1000
    pool = [envs.make(env_cfg) for _ in range(episodes)]
    try:
        obs = np.stack([env.reset(seed=base + i)[0] for i, env in enumerate(pool)])
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, np.int64)
        active = np.ones(episodes, bool)
        while active.any():
            idx = np.flatnonzero(active)
            actions = policy(obs[idx].astype(np.float32, copy=False))
            for i, action in zip(idx, actions, strict=True):
                o, r, terminated, truncated, _ = pool[i].step(action)
                obs[i] = o
                returns[i] += r
                lengths[i] += 1
                if terminated or truncated:
                    active[i] = False
        return EvalResult(returns, lengths)
    finally:
        for env in pool:
            env.close()
