"""ALE games with the DQN/Nature preprocessing (`env.atari`), in two backends.

"python": gymnasium's AtariPreprocessing + FrameStackObservation, one env per slot (what
evaluation always uses, and collectors with `backend: python`). "vector": ale-py's C++
AtariVectorEnv for collectors, presented with the same contract as envs.make.LockstepEnvs.
Both give uint8 observations [84, 84, 4], channels last (the layout of the whole platform).

Training envs end an episode on a life loss and clip rewards to [-1, 1]; evaluation envs
play full games with the game's own score, pressing FIRE at every life's start in games
that need it. On a life loss the game goes on and the frame
stack is kept in both backends (ale-py's own episodic_life restarts the whole game).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from rlplat.envs.registry import env_id_error
from rlplat.errors import ConfigError

if TYPE_CHECKING:
    from rlplat.config_base import AtariConfig, EnvConfig


def register() -> None:
    """Make the ALE/... ids known to gymnasium (idempotent), with ALE's C++ logger at
    errors only: its info level prints a two-line banner at every emulator start (in every
    command and collector), which tells a user nothing."""
    import ale_py

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
    gym.register_envs(ale_py)


def make_atari(cfg: EnvConfig, training: bool, render_mode: str | None = None) -> gym.Env:
    """One preprocessed game: the "python" backend."""
    a: AtariConfig = cfg.atari  # type: ignore[assignment]
    register()
    try:
        env = gym.make(
            cfg.id, frameskip=1, repeat_action_probability=a.sticky_actions,
            render_mode=render_mode, disable_env_checker=True, **cfg.kwargs,
        )  # fmt: skip
    except gym.error.Error as exc:
        raise env_id_error(cfg.id, exc) from None
    except TypeError as exc:
        raise ConfigError(f"env.kwargs: {exc}") from None
    fire = a.fire_reset and _needs_fire(env)
    # The time limit in frames, as the C++ env counts them: after the reset's FIRE frame,
    # which ALE's own count (used here) includes.
    env.unwrapped.ale.setInt("max_num_frames_per_episode", _frame_limit(cfg) + fire)
    if fire:
        # Under the frame skip: one frame of FIRE, as ale-py's C++ env. Evaluation (and
        # play) presses it at the start of every life, as Baselines' and CleanRL's
        # FireResetEnv over EpisodicLifeEnv do: a policy trained on life-loss terminals
        # never had to launch the ball itself, and without it a full game of Breakout
        # waits out the time limit in the ball-less state. Training does so with
        # fire_on_life_loss (python backend: the C++ env steps its envs in lockstep).
        env = FireReset(env, on_life_loss=a.fire_on_life_loss or not training)
    env = gym.wrappers.AtariPreprocessing(
        env, noop_max=a.noop_max, frame_skip=a.frame_skip, screen_size=a.screen_size,
        terminal_on_life_loss=False, grayscale_obs=True, scale_obs=False,
    )  # fmt: skip
    # Zero padding at an episode's start, as ale-py's vector env stacks.
    env = gym.wrappers.FrameStackObservation(env, a.stack, padding_type="zero")
    env = ChannelsLast(env)
    if training and a.terminal_on_life_loss:
        env = LifeLossTerminal(env)
    if training and a.clip_rewards:
        env = gym.wrappers.ClipReward(env, -1.0, 1.0)
    # Videos play at the game's own speed: the emulator's 60 frames/s, one agent step per
    # frame_skip frames (ALE's metadata says 30 whatever the skip).
    env.metadata = {**env.metadata, "render_fps": round(60 / a.frame_skip)}
    return env


def _frame_limit(cfg: EnvConfig) -> int:
    """`max_episode_steps` agent steps in frames; ALE v5's 108,000 frames by default."""
    if cfg.max_episode_steps is None:
        return 108_000
    return cfg.max_episode_steps * cfg.atari.frame_skip  # type: ignore[union-attr]


def _needs_fire(env: gym.Env) -> bool:
    meanings = env.unwrapped.get_action_meanings()
    return len(meanings) > 1 and meanings[1] == "FIRE"


class FireReset(gym.Wrapper):
    """Press FIRE for one frame after reset (before the no-ops): games like Breakout wait
    for it to start. With `on_life_loss`, also for one frame after each frame that loses a
    life (its reward is added to that frame's)."""

    def __init__(self, env: gym.Env, on_life_loss: bool = False):
        super().__init__(env)
        self._on_life_loss = on_life_loss
        self._lives = 0

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        self._lives = self.env.unwrapped.ale.lives()
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        if self._on_life_loss and lives < self._lives and not (terminated or truncated):
            obs, fire_reward, terminated, truncated, info = self.env.step(1)
            reward += fire_reward
        self._lives = lives
        return obs, reward, terminated, truncated, info


class ChannelsLast(gym.ObservationWrapper):
    """[stack, h, w] → [h, w, stack]."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        stack, h, w = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0, 255, (h, w, stack), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.moveaxis(observation, 0, -1)


class LifeLossTerminal(gym.Wrapper):
    """A life loss ends the learner's episode; the following reset continues the same
    game (and stack) unless the game is really over."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._lives = 0
        self._alive = False  # the game goes on behind a life-loss terminal
        self._obs: Any = None

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        lives = self.env.unwrapped.ale.lives()
        lost = lives < self._lives and not (terminated or truncated)
        self._lives, self._alive, self._obs = lives, lost, obs
        return obs, reward, terminated or lost, truncated, info

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        if self._alive and kwargs.get("seed") is None:
            self._alive = False
            return self._obs, {}
        obs, info = self.env.reset(**kwargs)
        self._lives, self._alive = self.env.unwrapped.ale.lives(), False
        return obs, info


def ale_game(env_id: str) -> str:
    """The ROM name ale-py's vector env wants ("space_invaders" for ALE/SpaceInvaders-v5)."""
    register()
    try:
        return gym.spec(env_id).kwargs["game"]
    except gym.error.Error as exc:
        raise env_id_error(env_id, exc) from None


class AleVectorEnvs:
    """ale-py's C++ AtariVectorEnv with LockstepEnvs' contract: same-step autoreset
    (`obs` starts the next episode where one ended, `final_obs` is the last one), so every
    step is a transition. Life-loss terminals come from info["lives"] (the game goes on)."""

    def __init__(self, cfg: EnvConfig, num_envs: int, training: bool):
        from ale_py.vector_env import AtariVectorEnv

        a: AtariConfig = cfg.atari  # type: ignore[assignment]
        self._vec = AtariVectorEnv(
            ale_game(cfg.id), num_envs, num_threads=a.threads,
            max_num_frames_per_episode=_frame_limit(cfg),
            repeat_action_probability=a.sticky_actions,
            autoreset_mode="SameStep", img_height=a.screen_size, img_width=a.screen_size,
            stack_num=a.stack, frameskip=a.frame_skip, noop_max=a.noop_max,
            episodic_life=False, reward_clipping=training and a.clip_rewards,
            use_fire_reset=a.fire_reset,
        )  # fmt: skip
        self._life_loss = training and a.terminal_on_life_loss
        self.num_envs = num_envs
        s = a.screen_size
        self.single_observation_space = gym.spaces.Box(0, 255, (s, s, a.stack), np.uint8)
        self.single_action_space = self._vec.single_action_space
        self._lives = np.zeros(num_envs, np.int32)

    def reset(self, seed: list[int]) -> np.ndarray:
        obs, info = self._vec.reset(seed=np.asarray(seed, np.int64))
        self._lives = info["lives"]
        return _channels_last(obs)

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(obs, reward, terminated, truncated, final_obs) for a batch of actions."""
        raw, reward, terminated, truncated, info = self._vec.step(np.asarray(actions, np.int64))
        done = terminated | truncated
        obs = _channels_last(raw)
        final = obs
        if done.any():
            final = obs.copy()
            final[done] = _channels_last(info["final_obs"][done])
        lives = info["lives"]
        if self._life_loss:
            terminated = terminated | ((lives < self._lives) & ~done)
        self._lives = lives
        return obs, reward.astype(np.float64), terminated, truncated, final

    def close(self) -> None:
        self._vec.close()


def _channels_last(obs: np.ndarray) -> np.ndarray:
    """(N, stack, h, w) → (N, h, w, stack), one contiguous copy."""
    return np.ascontiguousarray(obs.transpose(0, 2, 3, 1))
