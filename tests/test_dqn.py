from __future__ import annotations

import numpy as np
import pytest
from conftest import tiny_config

from rlplat import agents, config, envs
from rlplat.experience.data import Transitions


def make_agent(**agent_cfg):
    import tensorflow as tf

    tf.random.set_seed(0)  # same initial online and target weights for every agent
    cfg = config.parse(tiny_config(agent=agent_cfg))
    return agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)


def fixed_batch(k: int = 1, b: int = 32) -> Transitions:
    rng = np.random.default_rng(0)
    return Transitions(
        obs=rng.normal(size=(k, b, 4)).astype(np.float32),
        action=rng.integers(0, 2, size=(k, b)),
        reward=rng.normal(size=(k, b)).astype(np.float32),
        next_obs=rng.normal(size=(k, b, 4)).astype(np.float32),
        discount=(rng.random((k, b)) > 0.1).astype(np.float32),
    )


def test_train_steps_on_a_fixed_batch_lower_the_loss():
    # Fixed targets (no target update within the test): plain regression, loss must fall.
    agent = make_agent(
        network={"hidden": [64, 64]}, learning_rate=3e-3, target_update={"period": 1000}
    )
    batch = fixed_batch()
    first = agent.train(batch).metrics["losses/td_loss"]
    for _ in range(100):
        result = agent.train(batch)
    assert result.metrics["losses/td_loss"] < 0.5 * first
    assert agent.train_steps == 101
    assert result.td_errors.shape == (1, 32) and np.all(result.td_errors >= 0)


def test_a_phase_of_k_updates_counts_k_steps_and_matches_jit():
    batch = fixed_batch(k=5)
    plain, jitted = make_agent(jit_compile=False), make_agent(jit_compile=True)
    first = "q/layer0/kernel"
    np.testing.assert_array_equal(plain.get_weights()[first], jitted.get_weights()[first])
    a, b = plain.train(batch), jitted.train(batch)
    assert plain.train_steps == jitted.train_steps == 5
    assert a.td_errors.shape == (5, 32)
    np.testing.assert_allclose(a.td_errors, b.td_errors, rtol=1e-4, atol=1e-5)


def test_terminal_transitions_do_not_bootstrap():
    agent = make_agent(gamma=0.99, network={"hidden": [64, 64]}, learning_rate=3e-3)
    b = fixed_batch()
    b.reward[:] = 1.0
    b.discount[:] = 0.0
    for _ in range(300):
        agent.train(b)
    q = agent.q_values(b.obs[0])
    taken = q[np.arange(32), b.action[0]]
    np.testing.assert_allclose(taken, 1.0, atol=0.05)  # Q -> r, no gamma * max Q'


def test_acting_policy_tracks_training():
    # Learner and actor agree on the same weights (tests/test_network_spec.py); here the
    # in-process policy picks up the weights each training phase changes.
    agent = make_agent()
    obs = fixed_batch().obs[0]
    before = agent.q_values(obs)
    agent.train(fixed_batch())
    assert not np.allclose(agent.q_values(obs), before)
    np.testing.assert_allclose(agent.q_values(obs), agent._q(obs)[0].numpy(), rtol=1e-5, atol=1e-6)


def test_epsilon_schedule_and_greedy_eval():
    agent = make_agent(epsilon={"start": 1.0, "end": 0.1, "decay_env_steps": 100})
    assert agent.update_schedules(0, 0.0)["charts/epsilon"] == 1.0
    assert agent.update_schedules(50, 0.5)["charts/epsilon"] == pytest.approx(0.55)
    assert agent.update_schedules(1000, 1.0)["charts/epsilon"] == pytest.approx(0.1)
    obs = fixed_batch(b=64).obs[0]
    greedy = agent.q_values(obs).argmax(1)
    np.testing.assert_array_equal(agent.act(obs, explore=False), greedy)
    agent.update_schedules(0, 0.0)  # epsilon 1: uniformly random actions
    acts = np.concatenate([agent.act(obs, explore=True) for _ in range(20)])
    assert 0.4 < acts.mean() < 0.6


def test_dqn_on_continuous_actions_is_a_config_error():
    from rlplat.errors import ConfigError

    cfg = config.parse(tiny_config(env={"id": "LunarLander-v3", "kwargs": {"continuous": True}}))
    with pytest.raises(ConfigError, match="agent.type: dqn needs a Discrete action space"):
        agents.build(cfg.agent, envs.spaces(cfg.env))


def test_dueling_aggregation_subtracts_the_mean_advantage():
    agent = make_agent(dueling=True, network={"hidden": [16]})
    net = agent._q
    obs = fixed_batch(b=8).obs[0]
    hidden, _ = net._encoder(obs)
    value = net._value(hidden).numpy()
    advantage = net._advantage(hidden).numpy()
    q = net(obs)[0].numpy()
    np.testing.assert_allclose(q, value + advantage - advantage.mean(1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(q.mean(1, keepdims=True), value, atol=1e-6)  # V = mean_a Q
    # The target network is a real copy (same architecture, its own variables).
    target = agent._agent._target_q_network
    assert isinstance(target, type(net)) and target.variables[0] is not net.variables[0]


@pytest.mark.parametrize("double", [True, False])
def test_double_dqn_target_uses_online_argmax_and_target_value(double):
    agent = make_agent(double=double, network={"hidden": [16]}, jit_compile=False)
    target = agent._agent._target_q_network
    rng = np.random.default_rng(1)
    target.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in target.get_weights()])
    b = fixed_batch(b=64)
    online_next = agent._q(b.next_obs[0])[0].numpy()
    target_next = target(b.next_obs[0])[0].numpy()
    online_now = agent._q(b.obs[0])[0].numpy()[np.arange(64), b.action[0]]
    bootstrap = target_next[np.arange(64), online_next.argmax(1)] if double else target_next.max(1)
    expected = np.abs(b.reward[0] + b.discount[0] * bootstrap - online_now)
    np.testing.assert_allclose(agent.train(b).td_errors[0], expected, rtol=1e-4, atol=1e-5)
    # The two targets really differ on this data, so the test tells them apart.
    differ = online_next.argmax(1) != target_next.argmax(1)
    assert differ.sum() > 5


def test_importance_weights_scale_the_loss():
    b = fixed_batch(b=32)
    weights = np.zeros((1, 32), np.float32)
    weights[0, :16] = 1.0
    full, half = make_agent(), make_agent()
    loss_full = full.train(b).metrics["losses/td_loss"]
    loss_half = half.train(b, weights).metrics["losses/td_loss"]
    assert 0.0 < loss_half < loss_full
    zero = make_agent()
    before = {name: w.copy() for name, w in zero.get_weights().items()}
    zero.train(b, np.zeros((1, 32), np.float32))
    for name, w in zero.get_weights().items():
        np.testing.assert_array_equal(before[name], w)  # weight 0 everywhere: no gradient
