"""env.atari: the DQN/Nature preprocessing in its two backends (envs/atari.py)."""

from __future__ import annotations

import numpy as np
import pytest

from rlplat import config, envs
from rlplat.agents.actors import ActorPolicy
from rlplat.config import EnvConfig
from rlplat.errors import ConfigError
from rlplat.experience.collect import Collector

CARTPOLE = "experiments/cartpole_dqn.yaml"


def _cfg(game: str, **atari) -> EnvConfig:
    return EnvConfig(id=f"ALE/{game}-v5", atari=atari)


class _Random(ActorPolicy):
    def __init__(self, n: int, seed: int = 0):
        self.n, self.rng = n, np.random.default_rng(seed)

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        pass

    def act(self, observations: np.ndarray, explore: bool) -> np.ndarray:
        return self.rng.integers(0, self.n, len(observations))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["env.atari.sticky_actions=1.5"], "env.atari.sticky_actions: must be <= 1, got 1.5"),
        (["env.atari.noop_max=31"], "env.atari.noop_max: must be <= 30"),
        (["env.atari.stack_size=3"], "env.atari.stack_size: unknown key; did you mean 'stack'"),
        (["env.atari.backend=cpp"], "env.atari.backend: input should be 'python' or 'vector'"),
        (["env.id=CartPole-v1"], "env.atari: needs an ALE id"),
        (["env.atari.backend=vector", "env.kwargs.mode=1"], "env.kwargs: not supported"),
        (
            ["env.atari.backend=vector", "env.atari.fire_on_life_loss=true"],
            "env.atari: fire_on_life_loss needs backend: python",
        ),
    ],
)
def test_atari_block_is_validated(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        config.load(CARTPOLE, ["env.id=ALE/Pong-v5", "env.atari.stack=4", *overrides])
    assert "\n" not in str(err.value)


def test_atari_block_defaults_are_the_v5_nature_setting():
    a = config.load(CARTPOLE, ["env.id=ALE/Breakout-v5", "env.atari.backend=python"]).env.atari
    assert (a.noop_max, a.frame_skip, a.screen_size, a.stack) == (30, 4, 84, 4)
    assert a.sticky_actions == 0.25 and a.terminal_on_life_loss and a.clip_rewards


@pytest.mark.parametrize("backend", ["python", "vector"])
def test_observations_are_uint8_84x84x4(backend):
    cfg = _cfg("Pong", backend=backend)
    assert envs.spaces(cfg).observation.shape == (84, 84, 4)
    vec = envs.make_vec(cfg, 2, seed=0, training=True)
    try:
        assert vec.single_observation_space.shape == (84, 84, 4)
        obs = vec.step(np.zeros(2, np.int64))[0]
        assert obs.shape == (2, 84, 84, 4) and obs.dtype == np.uint8
        assert obs.flags["C_CONTIGUOUS"]
    finally:
        vec.close()


def _until(env, stop, steps: int, seed: int = 0):
    """Random actions until `stop(reward, terminated, lives)`; the step's values."""
    env.reset(seed=seed)
    env.action_space.seed(seed)
    for _ in range(steps):
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        lives = env.unwrapped.ale.lives()
        if stop(reward, terminated, lives) or truncated:
            return reward, terminated, lives
    raise AssertionError(f"no stop within {steps} steps")


def test_training_env_ends_on_life_loss_eval_env_plays_on():
    cfg = _cfg("Breakout", noop_max=0)
    train, full = envs.make(cfg, training=True), envs.make(cfg, training=False)
    _, terminated, lives = _until(train, lambda r, term, lives: term, 500)
    assert lives == 4  # the first life lost ends the training episode
    _, terminated, lives = _until(full, lambda r, term, lives: lives < 5, 500)
    assert lives == 4 and not terminated  # the eval game goes on
    # After a life-loss terminal, a training env's reset continues the same game.
    obs, _ = train.reset()
    assert train.unwrapped.ale.lives() == 4


def test_training_env_clips_rewards_eval_env_reports_the_score():
    cfg = _cfg("SpaceInvaders", noop_max=0, sticky_actions=0.0)
    reward, _, _ = _until(envs.make(cfg, training=False), lambda r, term, lives: r > 1, 500)
    assert reward in (5, 10, 15, 20, 25, 30, 200)  # SpaceInvaders' points per invader
    # The same seed and actions in a training env: the same kill, clipped to 1.
    reward, _, _ = _until(envs.make(cfg, training=True), lambda r, term, lives: r != 0, 500)
    assert reward == 1.0


@pytest.mark.parametrize("backend", ["python", "vector"])
def test_breakout_fires_on_reset(backend):
    """Doing nothing after reset, the ball only comes (and a life is lost) if the env
    pressed FIRE itself."""
    for fire, ends in ((True, True), (False, False)):
        cfg = _cfg("Breakout", noop_max=0, sticky_actions=0.0, fire_reset=fire, backend=backend)
        vec = envs.make_vec(cfg, 1, seed=0, training=True)
        terminated = any(vec.step(np.zeros(1, np.int64))[2][0] for _ in range(150))
        vec.close()
        assert terminated == ends


@pytest.mark.parametrize("training", [True, False])
def test_fire_on_life_loss_plays_a_whole_game_of_noops(training):
    """A policy that never presses FIRE loses all five lives only if the env presses FIRE
    after each lost life; without it the game waits after the first. Evaluation envs
    press it whenever the game needs FIRE (fire_reset), whatever fire_on_life_loss says;
    without fire_reset the ball never comes."""
    cases = [(True, True, 0), (True, False, 0 if not training else 4), (False, False, 5)]
    for fire_reset, fire, lives_left in cases:
        cfg = EnvConfig(
            id="ALE/Breakout-v5", max_episode_steps=1500,
            atari={"noop_max": 0, "sticky_actions": 0.0, "fire_on_life_loss": fire,
                   "fire_reset": fire_reset},
        )  # fmt: skip
        env = envs.make(cfg, training=training)
        env.reset(seed=0)
        game_over = truncated = False
        while not (game_over or truncated):
            _, _, terminated, truncated, _ = env.step(0)
            game_over = terminated and env.unwrapped.ale.game_over()
        assert env.unwrapped.ale.lives() == lives_left, (fire_reset, fire)
        assert game_over == (lives_left == 0)


@pytest.mark.parametrize("game, training", [("Breakout", True), ("SpaceInvaders", False)])
def test_both_backends_give_the_same_observations(game, training):
    """Sticky actions 0 and no no-op starts: the same seed and actions give identical
    observations, rewards, terminals and final observations, across life losses, game
    ends and time limits (the backends differ only in how their RNGs draw sticky
    actions and no-ops)."""
    cfgs = [_cfg(game, noop_max=0, sticky_actions=0.0, backend=b) for b in ("python", "vector")]
    cfgs = [c.model_copy(update={"max_episode_steps": 120}) for c in cfgs]
    py, cpp = (envs.make_vec(c, 2, seed=3, training=training) for c in cfgs)
    rng = np.random.default_rng(0)
    dones = 0
    try:
        np.testing.assert_array_equal(py.reset([3, 4]), cpp.reset([3, 4]))
        for _ in range(300):
            actions = rng.integers(0, py.single_action_space.n, 2)
            a, b = py.step(actions), cpp.step(actions)
            for x, y in zip(a, b, strict=True):
                np.testing.assert_array_equal(x, y)
            dones += int((a[2] | a[3]).sum())
    finally:
        py.close()
        cpp.close()
    assert dones >= 4  # the check crossed episode ends


def test_vector_backend_reset_step_is_never_a_transition():
    """ale-py's own autoreset (NEXT_STEP) spends a step on the reset; here every collected
    transition continues its stack: next_obs's older frames are obs's newer ones, across
    life-loss terminals, game ends and truncations."""
    cfg = _cfg("Breakout", noop_max=0, backend="vector")
    cfg = cfg.model_copy(update={"max_episode_steps": 60})
    collector = Collector(cfg, 2, seed=0, policy=_Random(4))
    t = collector.collect(200).transitions
    collector.close()
    assert t.last.sum() >= 6
    np.testing.assert_array_equal(t.next_obs[..., :-1], t.obs[..., 1:])
    # And the step after an episode's end starts from a fresh stack (zero padding).
    after = np.flatnonzero(t.last[:-2]) + 2  # rows are (step, env): same env, next step
    fresh = t.discount[after - 2] == 1.0  # truncations (a life loss keeps the stack)
    assert fresh.any() and not t.obs[after[fresh], ..., :3].any()


def test_making_a_game_prints_no_ale_banner():
    import subprocess
    import sys

    code = (
        "import rlplat\nfrom rlplat import config, envs\n"
        "envs.make(config.EnvConfig(id='ALE/Pong-v5', atari={}), seed=0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Stella" not in out.stdout + out.stderr
