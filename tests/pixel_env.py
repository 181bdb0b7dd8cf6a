"""A tiny stand-in for a preprocessed Atari env (no ALE needed): [84, 84, 4] uint8 frames,
Discrete actions, reward 1 when the action matches the brightest quarter of the frame."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class PixelEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, num_actions: int = 4, episode_steps: int = 16):
        self.observation_space = gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)
        self.action_space = gym.spaces.Discrete(num_actions)
        self._episode_steps = episode_steps
        self._t = 0
        self._target = 0

    def _frame(self) -> np.ndarray:
        obs = self.np_random.integers(0, 64, (84, 84, 4), dtype=np.uint8)
        self._target = int(self.np_random.integers(self.action_space.n))
        rows = slice(21 * self._target, 21 * (self._target + 1))
        obs[rows] += 128  # the target's band is bright
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self._frame(), {}

    def step(self, action):
        reward = float(int(action) == self._target)
        self._t += 1
        return self._frame(), reward, False, self._t >= self._episode_steps, {}
