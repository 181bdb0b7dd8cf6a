"""REINFORCE (Williams 1992): discounted returns-to-go, normalised, times grad log pi,
optionally minus a learned value baseline.

It runs on the PPO machinery: one full-batch step per rollout, lambda = 1 returns, and a
PPO ratio that is exactly 1 on that single step, so the clipped objective's gradient is
the REINFORCE gradient A * grad log pi (see ReinforceConfig.as_ppo). Without a baseline
the critic is never evaluated or trained.
"""

from __future__ import annotations

from rlplat.agents.configs import ReinforceConfig
from rlplat.agents.ppo import PPOAgent
from rlplat.envs import EnvSpaces


class ReinforceAgent(PPOAgent):
    def __init__(
        self, cfg: ReinforceConfig, spaces: EnvSpaces, seed: int = 0, mixed_precision: bool = False
    ):
        super().__init__(cfg.as_ppo(), spaces, seed, cfg.baseline, mixed_precision)
