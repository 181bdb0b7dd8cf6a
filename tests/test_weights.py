"""Learner → actor weights travel by variable name and are checked on every set_weights."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from conftest import tiny_config

from rlplat import agents, config, envs
from rlplat.agents.actors import WeightsError

# (env, agent section): each weight layout the agents hand out.
CASES = {
    "dqn": ({"id": "CartPole-v1"}, {"type": "dqn", "network": {"hidden": [16, 8]}}),
    "dueling": ({"id": "CartPole-v1"}, {"type": "dqn", "dueling": True}),
    "ppo": ({"id": "CartPole-v1"}, {"type": "ppo", "network": {"hidden": [16]}}),
    "ppo_box": (
        {"id": "LunarLander-v3", "kwargs": {"continuous": True}},
        {"type": "ppo", "network": {"hidden": [16]}},
    ),
}


def build(case: str, seed: int, **agent):
    env, section = CASES[case]
    data = tiny_config(env=env)
    data["agent"] = {**section, **agent}  # replace tiny_config's DQN section
    if section["type"] != "dqn":
        data["replay"] = None
    cfg = config.parse(data)
    return agents.build(cfg.agent, envs.spaces(cfg.env), seed=seed), cfg


def observations(cfg, n: int = 64) -> np.ndarray:
    space = envs.spaces(cfg.env).observation
    return np.random.default_rng(0).normal(size=(n, *space.shape)).astype(np.float32)


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_gives_identical_actions(case):
    source, cfg = build(case, seed=0)
    target, _ = build(case, seed=1)  # other initial weights, same network
    obs = observations(cfg)
    weights = source.get_weights()
    # Names do not depend on what else this process built (Keras counts layers per process).
    assert list(weights) == list(target.get_weights())
    assert not np.array_equal(target.act(obs, explore=False), source.act(obs, explore=False))
    target.set_weights(weights)
    np.testing.assert_array_equal(target.act(obs, explore=False), source.act(obs, explore=False))
    # An actor policy shipped to another process (pickled, as Ray does) acts the same too,
    # exploring included when it has the same seed.
    actor = pickle.loads(pickle.dumps(source.actor_policy(0, 1, seed=3)))
    actor.set_weights(pickle.loads(pickle.dumps(weights)))
    local = source.actor_policy(0, 1, seed=3)
    local.set_weights(weights)
    for explore in (False, True):
        np.testing.assert_array_equal(actor.act(obs, explore), local.act(obs, explore))


def renamed(weights: dict, old: str, new: str) -> dict:
    return {new if name == old else name: w for name, w in weights.items()}


@pytest.mark.parametrize("case", list(CASES))
def test_mismatched_weights_are_refused_by_name(case):
    agent, _ = build(case, seed=0)
    weights = agent.get_weights()
    first = next(iter(weights))
    actor = agent.actor_policy(0, 1, seed=0)
    bad = {
        f"'{first}' is": {**weights, first: weights[first][..., :-1]},  # one unit fewer
        "missing .*unexpected": renamed(weights, first, first + "_renamed"),
        f"'{first}' is .* float64": {**weights, first: weights[first].astype(np.float64)},
        "expected a mapping": list(weights.values()),  # the old positional format
    }
    for message, w in bad.items():
        for target in (agent, actor):
            with pytest.raises(WeightsError, match=message):
                target.set_weights(w)
    before = agent.get_weights()[first].copy()
    with pytest.raises(WeightsError):
        agent.set_weights({**weights, first: weights[first] + 1, "extra": np.zeros(1)})
    np.testing.assert_array_equal(agent.get_weights()[first], before)  # nothing assigned


def test_weights_of_another_network_are_refused():
    small, _ = build("ppo", seed=0)
    large, _ = build("ppo", seed=0, network={"hidden": [32]})
    with pytest.raises(WeightsError, match="'actor/layer0/kernel' is \\(4, 16\\) float32"):
        large.set_weights(small.get_weights())
    deep, _ = build("ppo", seed=0, network={"hidden": [16, 16]})
    with pytest.raises(WeightsError, match="missing \\['actor/layer2/kernel'"):
        deep.actor_policy().set_weights(small.get_weights())
