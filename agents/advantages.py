"""Returns and advantages for on-policy agents, in numpy (a few ms per rollout).

Arrays are [T, N] (time, env). `terminated` stops the bootstrap; `last` (terminated or
truncated) stops the recursion. A truncated step still bootstraps from V(final obs) —
TF-Agents' own GAE treats truncation as termination, which biases time-limited envs.
"""

from __future__ import annotations

import numpy as np


def gae(
    rewards: np.ndarray,
    values: np.ndarray,
    next_values: np.ndarray,
    terminated: np.ndarray,
    last: np.ndarray,
    gamma: float,
    lam: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Generalised advantage estimation (Schulman et al. 2016) → (advantages, returns).

    values[t] = V(s_t); next_values[t] = V(s_{t+1}), where s_{t+1} is the final observation
    when step t ended an episode, and the observation after the rollout for t = T-1.
    """
    not_term = 1.0 - terminated.astype(np.float64)
    not_last = 1.0 - last.astype(np.float64)
    deltas = rewards + gamma * not_term * next_values - values
    adv = np.zeros_like(deltas, dtype=np.float64)
    running = np.zeros(deltas.shape[1:], dtype=np.float64)
    for t in range(len(deltas) - 1, -1, -1):
        running = deltas[t] + gamma * lam * not_last[t] * running
        adv[t] = running
    return adv.astype(np.float32), (adv + values).astype(np.float32)
