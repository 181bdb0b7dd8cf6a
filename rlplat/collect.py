"""Collectors: step environments with the agent's acting policy and hand back numpy.

`LocalCollector` runs in the learner's process (`collect.num_actors: 0`). Its `collect`
call is the boundary where Ray collector actors go: same arguments, same numpy results.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

import envs
from agents import Agent
from rlplat.config import EnvConfig
from rlplat.data import EpisodeStats, Transitions


class LocalCollector:
    """A vector env of `num_envs` copies stepped in lockstep by `agent.act`."""

    def __init__(self, env_cfg: EnvConfig, num_envs: int, seed: int, agent: Agent):
        self.num_envs = num_envs
        self._agent = agent
        self._env = envs.make_vec(env_cfg, num_envs, seed)
        space = self._env.single_action_space
        # Box actions: the policy's raw (e.g. Gaussian) action is stored for learning; the
        # env gets it clipped to its bounds.
        self._clip = (space.low, space.high) if isinstance(space, gym.spaces.Box) else None
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Start fresh episodes (also after a resume: env state is not checkpointed)."""
        self._obs, _ = self._env.reset(seed=[seed + i for i in range(self.num_envs)])
        self._ep_return = np.zeros(self.num_envs)
        self._ep_length = np.zeros(self.num_envs, np.int64)

    def collect(self, steps: int, explore: bool = True) -> tuple[Transitions, list[EpisodeStats]]:
        """`steps` vector steps → steps × num_envs transitions and the episodes that ended."""
        obs, actions, rewards, next_obs, discounts, lasts = [], [], [], [], [], []
        episodes: list[EpisodeStats] = []
        for t in range(steps):
            action = self._agent.act(self._obs, explore=explore)
            env_action = action if self._clip is None else np.clip(action, *self._clip)
            new_obs, reward, terminated, truncated, info = self._env.step(env_action)
            done = terminated | truncated
            final = new_obs
            if done.any():  # SAME_STEP autoreset: new_obs already starts the next episode
                final = new_obs.copy()
                for i in np.flatnonzero(info["_final_obs"]):
                    final[i] = info["final_obs"][i]
            obs.append(self._obs)
            actions.append(action)
            rewards.append(reward)
            next_obs.append(final)
            discounts.append(1.0 - terminated)  # truncation still bootstraps
            lasts.append(done)
            self._ep_return += reward
            self._ep_length += 1
            for i in np.flatnonzero(done):
                episodes.append(
                    EpisodeStats(
                        float(self._ep_return[i]), int(self._ep_length[i]), t * self.num_envs + i
                    )
                )
                self._ep_return[i] = 0.0
                self._ep_length[i] = 0
            self._obs = new_obs
        return (
            Transitions(
                obs=np.concatenate(obs).astype(np.float32, copy=False),
                action=np.concatenate(actions),
                reward=np.concatenate(rewards).astype(np.float32),
                next_obs=np.concatenate(next_obs).astype(np.float32, copy=False),
                discount=np.concatenate(discounts).astype(np.float32),
                last=np.concatenate(lasts),
            ),
            episodes,
        )

    def close(self) -> None:
        self._env.close()
