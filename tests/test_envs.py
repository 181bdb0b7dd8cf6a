from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from rlplat import envs
from rlplat.agents.actors import ActorPolicy
from rlplat.config import EnvConfig
from rlplat.envs.tf_agents_adapter import tensor_specs
from rlplat.errors import ConfigError
from rlplat.experience.collect import Collector


class _Always(ActorPolicy):
    """A scripted policy: a constant action for every env."""

    def __init__(self, action: int):
        self.action = action

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        pass

    def act(self, observations: np.ndarray, explore: bool) -> np.ndarray:
        return np.full(len(observations), self.action, np.int64)


class Corridor(gym.Env):
    """Walk right to the goal at `length` (terminates, reward 1); used via module:Class."""

    def __init__(self, length: int = 3):
        self.length = length
        self.observation_space = gym.spaces.Box(0.0, float(length), (1,), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return np.array([self.pos], np.float32), {}

    def step(self, action):
        self.pos = max(0, self.pos + (1 if action == 1 else -1))
        done = self.pos >= self.length
        return np.array([self.pos], np.float32), float(done), done, False, {}


def test_specs_for_discrete_and_box():
    spaces = envs.spaces(EnvConfig(id="CartPole-v1"))
    ts_spec, action_spec = tensor_specs(spaces)
    assert ts_spec.observation.shape == (4,)
    assert action_spec.dtype.name == "int64"
    assert (int(action_spec.minimum), int(action_spec.maximum)) == (0, 1)
    spaces = envs.spaces(EnvConfig(id="LunarLander-v3", kwargs={"continuous": True}))
    _, action_spec = tensor_specs(spaces)
    assert action_spec.shape == (2,) and action_spec.dtype.name == "float32"


def _collect(cfg: EnvConfig, num_envs: int, policy: ActorPolicy, steps: int):
    fragment = Collector(cfg, num_envs, seed=0, policy=policy).collect(steps)
    assert fragment.env_steps == num_envs * steps
    return fragment.transitions, fragment.episodes


def test_collector_bootstraps_truncation_but_not_termination():
    cfg = EnvConfig(id="test_envs:Corridor", kwargs={"length": 3}, max_episode_steps=2)
    # Walking left never reaches the goal: every 2nd step is a truncation.
    batch, episodes = _collect(cfg, 2, _Always(0), 4)
    assert len(batch) == 8 and len(episodes) == 4
    assert np.all(batch.discount == 1.0)
    # Walking right to a goal 2 steps away terminates: discount 0 there, and next_obs is
    # the goal state (the final observation), not the next episode's first observation.
    cfg = EnvConfig(id="test_envs:Corridor", kwargs={"length": 2}, max_episode_steps=5)
    batch, episodes = _collect(cfg, 1, _Always(1), 4)
    np.testing.assert_array_equal(batch.discount, [1.0, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(batch.next_obs[:, 0], [1.0, 2.0, 1.0, 2.0])
    np.testing.assert_array_equal(batch.obs[:, 0], [0.0, 1.0, 0.0, 1.0])
    assert [(e.ret, e.length) for e in episodes] == [(1.0, 2), (1.0, 2)]


def test_truncated_transition_keeps_final_observation():
    cfg = EnvConfig(id="test_envs:Corridor", kwargs={"length": 10}, max_episode_steps=2)
    batch, _ = _collect(cfg, 1, _Always(1), 2)
    np.testing.assert_array_equal(batch.next_obs[:, 0], [1.0, 2.0])
    np.testing.assert_array_equal(batch.discount, [1.0, 1.0])


def test_seeding_is_reproducible():
    cfg = EnvConfig(id="LunarLander-v3")
    a = envs.make(cfg, seed=5).reset(seed=5)[0]
    b = envs.make(cfg, seed=5).reset(seed=5)[0]
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "env_cfg, message",
    [
        (
            EnvConfig(id="CartPol-v1"),
            "env.id: unknown environment 'CartPol-v1'; did you mean 'CartPole-v1'",
        ),
        (EnvConfig(id="NoSuchEnv-v9"), r"env.id: unknown environment 'NoSuchEnv-v9' \(a "),
        (EnvConfig(id="LunarLander-v2"), "env.id: .*deprecated"),
        (EnvConfig(id="no_such_module:Env"), "env.id: cannot import module 'no_such_module'"),
        (EnvConfig(id="test_envs:Nope"), "env.id: module 'test_envs' has no attribute"),
        (EnvConfig(id="CartPole-v1", kwargs={"bogus": 1}), "env.kwargs: .*bogus"),
        (EnvConfig(id="Blackjack-v1"), "env.id: Blackjack-v1 has observation space Tuple"),
    ],
)
def test_bad_env_configs_are_user_errors(env_cfg, message):
    with pytest.raises(ConfigError, match=message):
        envs.make(env_cfg)
