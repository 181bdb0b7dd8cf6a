"""Gymnasium ↔ TF-Agents: specs and time steps.

TF-Agents' suite_gym expects the old gym API (reset returns obs only); this is the small
adapter for Gymnasium's (obs, info) / (obs, r, terminated, truncated, info). Termination
gives discount 0 (no bootstrap); time-limit truncation gives a LAST step with discount 1,
so value targets still bootstrap from the final observation.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from tf_agents.environments import py_environment
from tf_agents.specs import array_spec, tensor_spec
from tf_agents.trajectories import time_step as ts

from envs.make import EnvSpaces


def array_specs(spaces: EnvSpaces) -> tuple[array_spec.ArraySpec, array_spec.BoundedArraySpec]:
    """(observation spec, action spec) as numpy ArraySpecs."""
    obs = array_spec.ArraySpec(spaces.observation.shape, np.float32, name="observation")
    act = spaces.action
    if isinstance(act, gym.spaces.Discrete):
        action = array_spec.BoundedArraySpec(
            (), np.int64, minimum=0, maximum=int(act.n) - 1, name="action"
        )
    else:
        action = array_spec.BoundedArraySpec(
            act.shape, np.float32, minimum=act.low, maximum=act.high, name="action"
        )
    return obs, action


def tensor_specs(spaces: EnvSpaces) -> tuple[ts.TimeStep, tensor_spec.BoundedTensorSpec]:
    """(time_step_spec, action_spec) as TF-Agents agents want them."""
    obs, action = array_specs(spaces)
    return (
        ts.time_step_spec(tensor_spec.from_spec(obs)),
        tensor_spec.from_spec(action),
    )


def to_time_step(
    observation: np.ndarray, reward: float, terminated: bool, truncated: bool
) -> ts.TimeStep:
    """The TF-Agents time step for one Gymnasium `step` result."""
    obs = np.asarray(observation, np.float32)
    reward = np.asarray(reward, np.float32)
    if terminated:
        return ts.termination(obs, reward)
    if truncated:
        return ts.truncation(obs, reward, discount=np.float32(1.0))
    return ts.transition(obs, reward, discount=np.float32(1.0))


class GymnasiumPyEnvironment(py_environment.PyEnvironment):
    """A Gymnasium env as a TF-Agents PyEnvironment (auto-resets after a LAST step)."""

    def __init__(self, env: gym.Env, seed: int | None = None):
        super().__init__(handle_auto_reset=True)
        self._env = env
        self._seed = seed
        spaces = EnvSpaces(observation=env.observation_space, action=env.action_space)
        self._obs_spec, self._action_spec = array_specs(spaces)
        self._discrete = isinstance(env.action_space, gym.spaces.Discrete)

    def observation_spec(self) -> array_spec.ArraySpec:
        return self._obs_spec

    def action_spec(self) -> array_spec.BoundedArraySpec:
        return self._action_spec

    def _reset(self) -> ts.TimeStep:
        obs, _ = self._env.reset(seed=self._seed)
        self._seed = None  # seed once; later resets continue the env's RNG stream
        return ts.restart(np.asarray(obs, np.float32))

    def _step(self, action: np.ndarray) -> ts.TimeStep:
        action = int(action) if self._discrete else np.asarray(action, np.float32)
        obs, reward, terminated, truncated, _ = self._env.step(action)
        return to_time_step(obs, reward, terminated, truncated)

    def render(self, mode: str = "rgb_array") -> np.ndarray:
        return self._env.render()

    def close(self) -> None:
        self._env.close()
