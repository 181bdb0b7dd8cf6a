"""Honest evaluation: N full episodes, each from its own seeded env, no early cut-off.

Without rendering, all N episodes run in lockstep (one batched policy call per step), so
short episodes are not over-counted the way "first N episodes to finish" would
over-count them. With rendering they run one after another (one video writer open at a
time), on the same seeds, so the statistics are those of the same N episodes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from rlplat import envs, text
from rlplat.config import EnvConfig
from rlplat.experience.collect import as_obs

EVAL_SEED_OFFSET = 1_000_000  # eval envs never share seeds with training envs

# on_frame(episode, frame, score, step) gets each rgb frame (the first after reset, then one
# per step) with the episode's return and length so far: for Atari, the colour screen
# (ALE's 210x160) and the game's own score; on_episode_end(episode, return, length) is
# called when that episode is over.
FrameHook = Callable[[int, np.ndarray, float, int], None]
EndHook = Callable[[int, float, int], None]


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
            "lengths": [int(n) for n in self.lengths],
        }


class EvalHeartbeat:
    """`run_episodes`' `on_progress`: a plain line every HEARTBEAT_S seconds while an eval
    runs (ten full Atari games can take many minutes), nothing for a short one."""

    def __init__(self, say: Callable[[str], None], label: str, episodes: int) -> None:
        self.say, self.label, self.episodes = say, label, episodes
        self._start = self._last = time.monotonic()

    def __call__(self, done: int, steps: int) -> None:
        now = time.monotonic()
        if now - self._last < text.HEARTBEAT_S:
            return
        self._last = now
        self.say(
            f"{self.label}: {done}/{self.episodes} episodes done, {steps:,} agent steps, "
            f"{now - self._start:.0f}s"
        )


class EvalStopped(Exception):
    """`run_episodes`' `stop()` turned true (Ctrl-C during a periodic eval): the eval
    was abandoned between two steps, and nothing of it counts."""


def run_episodes(
    policy: Callable[[np.ndarray], np.ndarray],
    env_cfg: EnvConfig,
    episodes: int,
    seed: int,
    render_mode: str | None = None,
    on_frame: FrameHook | None = None,
    on_episode_end: EndHook | None = None,
    one_at_a_time: bool = False,
    stop: Callable[[], bool] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """`policy` maps a batch of observations to actions (deterministic for evals).

    Episode i is seeded EVAL_SEED_OFFSET + 1000 * seed + i, whatever the render mode.
    `render_mode` "rgb_array" hands frames to `on_frame`; "human" shows a window. Episodes
    run one after the other when rendered or `one_at_a_time` (play's A/B comparison sends
    one routing key per episode), else all together. `stop`, asked before every step,
    raises EvalStopped when it returns True; `on_progress(episodes done, agent steps)` is
    called after every step (EvalHeartbeat).
    """
    tally = _Tally(np.zeros(episodes), np.zeros(episodes, np.int64), np.zeros(episodes, bool))
    together = render_mode is None and not one_at_a_time
    groups = [list(range(episodes))] if together else [[i] for i in range(episodes)]
    hooks = _Hooks(on_frame if render_mode == "rgb_array" else None, stop, on_progress)
    for group in groups:
        _play(policy, env_cfg, group, seed, render_mode, hooks, tally)
        if on_episode_end is not None:
            for i in group:
                on_episode_end(i, float(tally.returns[i]), int(tally.lengths[i]))
    return EvalResult(tally.returns, tally.lengths)


@dataclass(frozen=True)
class _Hooks:
    on_frame: FrameHook | None  # only when rendering to arrays
    stop: Callable[[], bool] | None
    on_progress: Callable[[int, int], None] | None


@dataclass(frozen=True)
class _Tally:
    """Every episode's return and length so far, and whether it has ended."""

    returns: np.ndarray
    lengths: np.ndarray
    ended: np.ndarray


def _play(
    policy: Callable[[np.ndarray], np.ndarray], env_cfg: EnvConfig, indices: list[int],
    seed: int, render_mode: str | None, hooks: _Hooks, tally: _Tally,
) -> None:  # fmt: skip
    """Episodes `indices` together, step by step, into `tally`."""
    base = EVAL_SEED_OFFSET + seed * 1000
    pool = [envs.make(env_cfg, render_mode=render_mode, training=False) for _ in indices]
    space = pool[0].action_space
    clip = (space.low, space.high) if isinstance(space, gym.spaces.Box) else None
    try:
        obs = np.stack([env.reset(seed=base + i)[0] for i, env in zip(indices, pool, strict=True)])
        if hooks.on_frame is not None:
            for i, env in zip(indices, pool, strict=True):
                hooks.on_frame(i, env.render(), 0.0, 0)
        active = np.ones(len(indices), bool)
        while active.any():
            if hooks.stop is not None and hooks.stop():
                raise EvalStopped()
            idx = np.flatnonzero(active)
            actions = policy(as_obs(obs[idx]))
            if clip is not None:
                actions = np.clip(actions, *clip)
            for j, action in zip(idx, actions, strict=True):
                obs[j], active[j] = _step(pool[j], action, indices[j], hooks, tally)
            if hooks.on_progress is not None:
                hooks.on_progress(int(tally.ended.sum()), int(tally.lengths.sum()))
    finally:
        for env in pool:
            env.close()


def _step(env: gym.Env, action: Any, k: int, hooks: _Hooks, tally: _Tally) -> tuple[Any, bool]:
    """One step of episode `k`: its observation, and whether it goes on."""
    o, r, terminated, truncated, _ = env.step(action)
    tally.returns[k] += r
    tally.lengths[k] += 1
    if hooks.on_frame is not None:
        hooks.on_frame(k, env.render(), float(tally.returns[k]), int(tally.lengths[k]))
    tally.ended[k] = terminated or truncated
    return o, not tally.ended[k]
