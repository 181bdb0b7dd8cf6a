"""Monte-Carlo returns-to-go, written out on their own: a reference for the tests of
agents.advantages.gae (lambda = 1) and of REINFORCE."""

from __future__ import annotations

import numpy as np


def discounted_returns(
    rewards: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    last: np.ndarray,
    gamma: float,
) -> np.ndarray:
    """Returns-to-go over [T, N] arrays; an episode cut by truncation or by the rollout's end
    is completed with `next_values` there (zeros: pure Monte Carlo)."""
    returns = np.zeros(rewards.shape, np.float64)
    for t in reversed(range(len(rewards))):
        cut = last[t] if t + 1 < len(rewards) else np.ones_like(last[t], bool)
        after = np.where(cut, np.where(terminated[t], 0.0, next_values[t]), 0.0)
        if t + 1 < len(rewards):
            after = np.where(cut, after, returns[t + 1])
        returns[t] = rewards[t] + gamma * after
    return returns
