"""Make Gymnasium environments from an experiment's `env:` section."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

import gymnasium as gym
import numpy as np

from rlplat.envs import atari
from rlplat.envs.registry import env_id_error
from rlplat.errors import ConfigError

if TYPE_CHECKING:
    from rlplat.config_base import EnvConfig


@dataclass(frozen=True)
class EnvSpaces:
    """What an agent needs to know about an environment to be built."""

    observation: gym.spaces.Box
    action: gym.spaces.Space


# Directories searched for a `module:Class` module that plain `import` does not find,
# after the working directory: those recorded by a run (rlplat.rundir) or a model.
_MODULE_DIRS: list[Path] = []
_RESOLVED: set[str] = set()  # top-level modules of the `module:Class` envs made so far


def add_module_dir(path: str | Path) -> None:
    """Search `path` too for `module:Class` modules (a run's or model's recorded dir)."""
    path = Path(path)
    if path.is_dir() and path not in _MODULE_DIRS:
        _MODULE_DIRS.append(path)


def _import(module_name: str) -> ModuleType:
    """Like `python -m` run from the working directory, with installed modules first: a
    top-level module that plain import does not find is looked for in the recorded
    directories, then in the working directory, and the one that has it goes on sys.path
    (so its own sibling imports work, in this process and its children)."""
    top = module_name.partition(".")[0]
    _RESOLVED.add(top)
    if importlib.util.find_spec(top) is None:
        searched = [*_MODULE_DIRS, Path.cwd()]
        folder = next((f for f in searched if _holds(f, top)), None)
        if folder is None:
            where = ", ".join(str(f) for f in dict.fromkeys(searched))
            raise ConfigError(
                f"env.id: cannot import module '{module_name}' (not installed, not on "
                f"PYTHONPATH, not in {where})"
            )
        sys.path.append(str(folder))
        importlib.invalidate_caches()
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:  # found, but it (or what it imports) is missing
        raise ConfigError(f"env.id: cannot import module '{module_name}' ({exc})") from None


def _holds(folder: Path, top: str) -> bool:
    return (folder / f"{top}.py").is_file() or (folder / top / "__init__.py").is_file()


def _resolve(env_id: str) -> Callable[..., gym.Env] | str:
    """`module:Class` → the class; anything else is a Gymnasium registry id."""
    if ":" not in env_id:
        return env_id
    module_name, _, attr = env_id.partition(":")
    module = _import(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"env.id: module '{module_name}' has no attribute '{attr}'") from None


def module_dir(env_id: str) -> str | None:
    """The absolute directory a `module:Class` env's top-level module was imported from
    (what a run records so --resume, eval and Ray workers find it from anywhere)."""
    if ":" not in env_id:
        return None
    top = env_id.partition(":")[0].partition(".")[0]
    file = _import(top).__file__
    if file is None:  # a namespace package: no one directory to record
        return None
    origin = Path(file).resolve()
    return str(origin.parent.parent if origin.name == "__init__.py" else origin.parent)


def user_modules() -> list[ModuleType]:
    """The top-level modules of the `module:Class` envs found outside the installed
    packages so far: what Ray workers get shipped (rlplat.cluster)."""
    paths = sysconfig.get_paths()
    installed = [Path(paths[k]).resolve() for k in ("purelib", "platlib", "stdlib")]
    found = []
    for name in sorted(_RESOLVED):
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        if module is None or file is None:
            continue
        path = Path(file).resolve()
        if not any(path.is_relative_to(base) for base in installed):
            found.append(module)
    return found


def make(
    cfg: EnvConfig,
    seed: int | None = None,
    render_mode: str | None = None,
    check: bool = True,
    training: bool = False,
) -> gym.Env:
    """One environment; `seed` seeds its first reset and its action space. `check=False`
    leaves out Gymnasium's env checker (for copies of an env already checked once).
    `training`: a collector's env (with `env.atari`: life-loss terminals and clipped
    rewards); otherwise full games with the game's own score, as evaluation wants."""
    if cfg.atari is not None:
        env = atari.make_atari(cfg, training, render_mode)
        if seed is not None:
            env.reset(seed=seed)
            env.action_space.seed(seed)
        return env
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
        raise env_id_error(cfg.id, exc) from None
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


class VecEnv(Protocol):
    """What collectors step: LockstepEnvs' contract (same-step autoreset, `final_obs`)."""

    num_envs: int
    single_observation_space: gym.spaces.Box
    single_action_space: gym.spaces.Space

    def reset(self, seed: list[int]) -> np.ndarray: ...

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...

    def close(self) -> None: ...


def make_vec(cfg: EnvConfig, num_envs: int, seed: int, training: bool = False) -> VecEnv:
    """`num_envs` copies in one process, reset with seeds seed, seed+1, ...; `training`
    as in `make` (collectors pass True)."""
    vec: VecEnv
    if cfg.atari is not None and cfg.atari.backend == "vector":
        vec = atari.AleVectorEnvs(cfg, num_envs, training)
        vec.reset(seed=[seed + i for i in range(num_envs)])
        return vec
    make(cfg, training=training).close()  # validate id, kwargs and spaces once (checker)
    vec = LockstepEnvs([make(cfg, check=False, training=training) for _ in range(num_envs)])
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
