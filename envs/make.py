"""Make Gymnasium environments from an experiment's `env:` section."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from rlplat.errors import ConfigError

if TYPE_CHECKING:
    from rlplat.config import EnvConfig


@dataclass(frozen=True)
class EnvSpaces:
    """What an agent needs to know about an environment to be built."""

    observation: gym.spaces.Box
    action: gym.spaces.Space


def _resolve(env_id: str) -> Callable[..., gym.Env] | str:
    """`module:Class` → the class; anything else is a Gymnasium registry id."""
    if ":" not in env_id:
        return env_id
    module_name, _, attr = env_id.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"env.id: cannot import module '{module_name}' ({exc})") from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"env.id: module '{module_name}' has no attribute '{attr}'") from None


def make(
    cfg: EnvConfig, seed: int | None = None, render_mode: str | None = None, check: bool = True
) -> gym.Env:
    """One environment; `seed` seeds its first reset and its action space. `check=False`
    leaves out Gymnasium's env checker (for copies of an env already checked once)."""
    target = _resolve(cfg.id)
    kwargs: dict[str, Any] = dict(cfg.kwargs)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        if isinstance(target, str):
            env = gym.make(
                target, max_episode_steps=cfg.max_episode_steps,
                disable_env_checker=not check, **kwargs,
            )  # fmt: skip
        else:
            env = target(**kwargs)
            if cfg.max_episode_steps is not None:
                env = gym.wrappers.TimeLimit(env, cfg.max_episode_steps)
    except gym.error.Error as exc:  # NameNotFound, DeprecatedEnv, ...
        raise ConfigError(f"env.id: {exc}") from None
    except TypeError as exc:  # wrong kwargs for the env's constructor
        raise ConfigError(f"env.kwargs: {exc}") from None
    _check_spaces(cfg.id, env.observation_space, env.action_space)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


class LockstepEnvs:
    """`num_envs` copies of an env stepped one after another in this process, with
    same-step autoreset: a step that ends an episode returns the next episode's first
    observation in `obs` and the final one in `final_obs`, so every step is a transition.

    Written instead of using gymnasium's SyncVectorEnv because it is the collectors' hot
    path: SyncVectorEnv's per-step action iteration (numpy scalars take Discrete.contains'
    slow path) and info merging made a LunarLander step about half again as expensive as
    this loop with plain Python actions (a side measurement while building
    benchmarks/collect_throughput.py, whose figures are the ones to quote).
    """

    def __init__(self, env_list: list[gym.Env]):
        self.envs = env_list
        self.num_envs = len(env_list)
        self.single_observation_space = env_list[0].observation_space
        self.single_action_space = env_list[0].action_space
        self._discrete = isinstance(self.single_action_space, gym.spaces.Discrete)
        space = self.single_observation_space
        self._obs = np.zeros((self.num_envs, *space.shape), space.dtype)

    def reset(self, seed: list[int]) -> np.ndarray:
        for i, (env, s) in enumerate(zip(self.envs, seed, strict=True)):
            self._obs[i] = env.reset(seed=s)[0]
        return self._obs.copy()

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(obs, reward, terminated, truncated, final_obs) for a batch of actions."""
        n = self.num_envs
        acts = actions.tolist() if self._discrete else actions
        obs = np.empty_like(self._obs)
        reward = np.empty(n)
        terminated = np.empty(n, bool)
        truncated = np.empty(n, bool)
        finals: dict[int, np.ndarray] = {}
        for i, env in enumerate(self.envs):
            o, r, term, trunc, _ = env.step(acts[i])
            reward[i], terminated[i], truncated[i] = r, term, trunc
            if term or trunc:
                finals[i] = o
                o, _ = env.reset()
            obs[i] = o
        final_obs = obs
        if finals:
            final_obs = obs.copy()
            for i, o in finals.items():
                final_obs[i] = o
        self._obs = obs
        return obs, reward, terminated, truncated, final_obs

    def close(self) -> None:
        for env in self.envs:
            env.close()


def make_vec(cfg: EnvConfig, num_envs: int, seed: int) -> LockstepEnvs:
    """`num_envs` copies in one process, reset with seeds seed, seed+1, ..."""
    make(cfg).close()  # validate id, kwargs and spaces once (with the env checker)
    vec = LockstepEnvs([make(cfg, check=False) for _ in range(num_envs)])
    vec.reset(seed=[seed + i for i in range(num_envs)])
    return vec


def spaces(cfg: EnvConfig) -> EnvSpaces:
    env = make(cfg)
    try:
        return EnvSpaces(observation=env.observation_space, action=env.action_space)
    finally:
        env.close()


def _check_spaces(env_id: str, obs: gym.Space, act: gym.Space) -> None:
    if not (isinstance(obs, gym.spaces.Box) and np.issubdtype(obs.dtype, np.number)):
        raise ConfigError(
            f"env.id: {env_id} has observation space {obs}; rlplat supports numeric Box "
            "observations (vectors or images)"
        )
    if not isinstance(act, gym.spaces.Discrete | gym.spaces.Box):
        raise ConfigError(
            f"env.id: {env_id} has action space {act}; rlplat supports Discrete and Box actions"
        )
