from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config
from mc_returns import discounted_returns

from rlplat import agents, config, envs
from rlplat.experience.collect import Collector, time_major
from rlplat.export import export_saved_model
from rlplat.train import Trainer


def ppo_config(**agent):
    base = {"type": "ppo", "network": {"hidden": [16, 16]}, "epochs": 2, "minibatch_size": 32}
    data = tiny_config()
    data["agent"] = {**base, **agent}  # replace the DQN defaults of tiny_config
    data["collect"] = {"envs_per_actor": 4, "rollout_length": 32}
    data["replay"] = None
    return data


def build(env_id: str = "CartPole-v1", env_kwargs: dict | None = None, **agent):
    data = ppo_config(**agent)
    data["env"] = {"id": env_id, "kwargs": env_kwargs or {}}
    cfg = config.parse(data)
    return cfg, agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)


def rollout(cfg, agent, steps: int = 32):
    collector = Collector(cfg.env, cfg.collect.envs_per_actor, 0, agent.policy)
    return time_major(collector.collect(steps))


def test_clipped_objective_on_a_toy_batch():
    _, agent = build()
    # Two actions, logits chosen so that pi(a=0) is known; old log-probs set the ratios.
    out = tf.constant([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])  # pi = 0.5 each
    actions = tf.constant([0, 1, 0], tf.int64)
    logp_old = tf.math.log(tf.constant([0.25, 0.5, 1.0]))  # ratios 2.0, 1.0, 0.5
    adv = tf.constant([1.0, -1.0, -2.0])
    v, ret, v_old = tf.constant([1.0, 2.0, 3.0]), tf.constant([0.0, 2.0, 5.0]), tf.zeros(3)
    pg, vloss, ent, kl, frac = (
        float(x) for x in agent._losses(out, v, actions, adv, ret, v_old, logp_old, 0.2)
    )
    # min(r A, clip(r) A): 2*1 vs 1.2*1 -> 1.2; 1*-1 -> -1; 0.5*-2=-1 vs 0.8*-2=-1.6 -> -1.6
    assert pg == pytest.approx(-(1.2 - 1.0 - 1.6) / 3)
    assert vloss == pytest.approx(0.5 * (1 + 0 + 4) / 3)
    assert ent == pytest.approx(np.log(2.0), rel=1e-6)
    assert frac == pytest.approx(2 / 3)
    ratios = np.array([2.0, 1.0, 0.5])
    assert kl == pytest.approx(np.mean(ratios - 1 - np.log(ratios)), rel=1e-5)


def test_training_counts_minibatch_steps_and_updates_normalisation():
    cfg, agent = build()
    batch = rollout(cfg, agent)
    result = agent.train(batch)
    # 4 envs x 32 steps = 128 samples, minibatches of 32, 2 epochs.
    assert agent.train_steps == 2 * 4
    assert set(result.metrics) >= {"losses/policy_loss", "losses/value_loss", "losses/entropy",
                                   "losses/approx_kl", "losses/clip_fraction"}  # fmt: skip
    obs = batch.obs.reshape(-1, 4)
    np.testing.assert_allclose(agent._obs_mean.numpy(), obs.mean(0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(agent._obs_var.numpy(), obs.var(0), rtol=1e-3, atol=1e-4)


def test_normalisation_survives_checkpoint_and_export(tmp_path: Path):
    cfg, agent = build()
    agent.train(rollout(cfg, agent))
    obs = (np.random.default_rng(0).normal(size=(16, 4)) * 3).astype(np.float32)  # raw
    expected = agent.act(obs, explore=False)
    # Checkpoint round trip into a fresh agent.
    tf.train.Checkpoint(**agent.checkpoint_items()).write(str(tmp_path / "ckpt"))
    _, fresh = build()
    tf.train.Checkpoint(**fresh.checkpoint_items()).read(
        str(tmp_path / "ckpt")
    ).assert_existing_objects_matched()
    fresh.on_restore()
    np.testing.assert_array_equal(fresh._obs_mean.numpy(), agent._obs_mean.numpy())
    np.testing.assert_array_equal(fresh.act(obs, explore=False), expected)
    # The served graph normalises raw observations itself.
    path = export_saved_model(agent.serving_module(), tmp_path / "models", "pg", {})
    served = tf.saved_model.load(str(path))
    out = served.signatures["serving_default"](observations=tf.constant(obs))
    np.testing.assert_array_equal(out["actions"].numpy(), expected)
    logits = agent.policy.outputs(obs)
    np.testing.assert_allclose(out["logits"].numpy(), logits, rtol=1e-4, atol=1e-5)
    sampled = served.signatures["sample"](observations=tf.constant(obs))["actions"].numpy()
    assert sampled.shape == (16,) and set(sampled) <= {0, 1}


def test_continuous_actions_act_train_and_serve_within_bounds(tmp_path: Path):
    cfg, agent = build("LunarLander-v3", {"continuous": True}, log_std_init=0.5)
    acts = agent.act(np.zeros((5, 8), np.float32), explore=True)
    assert acts.shape == (5, 2) and acts.dtype == np.float32
    batch = rollout(cfg, agent, steps=16)
    assert batch.action.shape == (16, 4, 2)
    result = agent.train(batch)
    assert np.isfinite(result.metrics["losses/policy_loss"])
    path = export_saved_model(agent.serving_module(), tmp_path, "cont", {})
    served = tf.saved_model.load(str(path))
    obs = tf.constant(np.random.default_rng(1).normal(size=(64, 8)).astype(np.float32) * 50)
    det = served.signatures["serving_default"](observations=obs)
    assert det["actions"].shape == (64, 2) and "mean" in det and "log_std" in det
    for out in (det, served.signatures["sample"](observations=obs)):
        assert np.all(np.abs(out["actions"].numpy()) <= 1.0)


def test_on_policy_loop_runs_whole_rollouts(tmp_path: Path):
    data = ppo_config()
    data["train"] = {"env_steps": 500, "log_every": 128}
    data["eval"] = {"every_env_steps": 256, "episodes": 2, "final_episodes": 20}
    data["export"] = {"enabled": False}
    summary = Trainer(config.parse(data), tmp_path / "run").run(show_progress=False)
    # Rollouts of 4 envs x 32 steps = 128: four of them cover the 500-step budget.
    assert summary.env_steps == 512
    assert summary.train_steps == 4 * (2 * 4)
    assert summary.final_eval["episodes"] == 20


def test_reinforce_is_one_full_batch_policy_gradient_step():
    data = ppo_config()
    data["agent"] = {"type": "reinforce", "network": {"hidden": [16]}, "learning_rate": 0.1}
    cfg = config.parse(data)
    agent = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    batch = rollout(cfg, agent)
    critic_before = [v.numpy().copy() for v in agent._critic.trainable_variables]
    obs = batch.obs.reshape(-1, 4)
    actions = batch.action.ravel()
    # Hand-made REINFORCE gradient: normalised Monte-Carlo returns-to-go x grad log pi.
    returns = discounted_returns(
        batch.reward, np.zeros_like(batch.reward), batch.discount == 0, batch.last, 0.99
    ).ravel()
    adv = (returns - returns.mean()) / (returns.std() + 1e-8)
    policy_vars = [*agent._torso.trainable_variables, *agent._head.trainable_variables]
    with tf.GradientTape() as tape:
        logp, _ = agent._log_prob_entropy(agent._policy_out(agent._normalize(obs)), actions)
        loss = -tf.reduce_mean(logp * adv)
    grads = tape.gradient(loss, policy_vars)
    expected_norm = float(tf.linalg.global_norm(grads))
    before = [v.numpy().copy() for v in policy_vars]
    agent.train(batch)
    assert agent.train_steps == 1  # one step on the whole rollout
    # Adam's first step moves each weight by ~lr * sign(grad): check direction agreement.
    moved = [b - v.numpy() for b, v in zip(before, policy_vars, strict=True)]
    agree = np.mean([np.mean(np.sign(m[np.abs(g.numpy()) > 1e-6]) ==
                             np.sign(g.numpy()[np.abs(g.numpy()) > 1e-6]))
                     for m, g in zip(moved, grads, strict=True)])  # fmt: skip
    assert expected_norm > 0 and agree > 0.99
    for b, v in zip(critic_before, agent._critic.trainable_variables, strict=True):
        np.testing.assert_array_equal(b, v.numpy())  # no baseline: the critic is unused


def test_reinforce_with_a_baseline_trains_its_critic():
    data = ppo_config()
    data["agent"] = {"type": "reinforce", "network": {"hidden": [16]}, "baseline": True}
    cfg = config.parse(data)
    agent = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    critic_before = [v.numpy().copy() for v in agent._critic.trainable_variables]
    agent.train(rollout(cfg, agent))
    moved = [not np.array_equal(b, v.numpy()) for b, v in
             zip(critic_before, agent._critic.trainable_variables, strict=True)]  # fmt: skip
    assert all(moved)
