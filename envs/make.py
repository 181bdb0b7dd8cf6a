"""Make Gymnasium environments from an experiment's `env:` section."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv

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


def make(cfg: EnvConfig, seed: int | None = None, render_mode: str | None = None) -> gym.Env:
    """One environment; `seed` seeds its first reset and its action space."""
    target = _resolve(cfg.id)
    kwargs: dict[str, Any] = dict(cfg.kwargs)
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        if isinstance(target, str):
            env = gym.make(target, max_episode_steps=cfg.max_episode_steps, **kwargs)
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


def make_vec(cfg: EnvConfig, num_envs: int, seed: int) -> SyncVectorEnv:
    """`num_envs` copies in one process, seeded seed, seed+1, ...

    SAME_STEP autoreset: a step that ends an episode returns the next episode's first
    observation and the final one in `info["final_obs"]`, so every step is a transition.
    """
    make(cfg)  # validate id, kwargs and spaces once, with a clear error
    vec = SyncVectorEnv(
        [lambda: make(cfg) for _ in range(num_envs)], autoreset_mode=AutoresetMode.SAME_STEP
    )
    vec.reset(seed=[seed + i for i in range(num_envs)])
    vec.action_space.seed(seed)
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
