"""`learner.mixed_precision`: float16 compute in the Nature torso with float32 variables,
heads, losses and exports, and dynamic loss scaling, for DQN and PPO. There is no GPU
here, so the mixed path is forced on the CPU (`agents.build(..., mixed_precision=True)`,
what rlplat/learner.py asks for on a GPU); `rlplat train` on a CPU warns and trains float32."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
import yaml
from conftest import run_cli, tiny_config

from rlplat import agents
from rlplat.agents.configs import DQNConfig, PPOConfig
from rlplat.config import LearnerConfig
from rlplat.envs import EnvSpaces
from rlplat.experience.data import Transitions
from rlplat.learner import Placement, with_precision

PIXELS = EnvSpaces(gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), gym.spaces.Discrete(4))
LossScaleOptimizer = tf.keras.mixed_precision.LossScaleOptimizer


def pixels(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 84, 84, 4), dtype=np.uint8)


def dqn_batch(k: int = 1, b: int = 4) -> Transitions:
    obs, rng = pixels(k, b), np.random.default_rng(1)
    reward = rng.normal(size=(k, b)).astype(np.float32)
    return Transitions(obs, rng.integers(0, 4, (k, b)), reward, pixels(k, b, seed=2),
                       np.full((k, b), 0.99, np.float32))  # fmt: skip


def ppo_rollout(t: int = 2, n: int = 2) -> Transitions:
    rng = np.random.default_rng(3)
    return Transitions(pixels(t, n), rng.integers(0, 4, (t, n)),
                       rng.normal(size=(t, n)).astype(np.float32), pixels(t, n, seed=4),
                       np.ones((t, n), np.float32), last=np.zeros((t, n), bool))  # fmt: skip


def build(kind: str, mixed: bool = True) -> agents.Agent:
    """PPO (`ppo`), or a double DQN: plain (`dqn`), or `dueling` under XLA (a GPU's default)."""
    dueling = kind == "dueling"
    cfg = (
        PPOConfig(type="ppo", minibatch_size=4, epochs=1)
        if kind == "ppo"
        else DQNConfig(type="dqn", jit_compile=dueling, dueling=dueling, double=True)
    )
    return agents.build(cfg, PIXELS, mixed_precision=mixed)


def parts(agent: agents.Agent) -> tuple:
    """(torso, heads, the optimizer that applies gradients, a train call) of either agent."""
    if isinstance(agent.cfg, PPOConfig):
        heads = [agent._head, agent._value_head]
        return agent._torso, heads, agent._apply, lambda: agent.train(ppo_rollout())
    heads, opt = agent._q.heads, agent._agent._optimizer
    return agent._q.torso, heads, opt, lambda: agent.train(dqn_batch())


def outputs(agent: agents.Agent, obs: np.ndarray) -> tf.Tensor:
    if isinstance(agent.cfg, PPOConfig):
        return agent._forward(tf.constant(obs))[0]
    return agent._q(tf.constant(obs))[0]


@pytest.mark.parametrize("kind", ["dqn", "dueling", "ppo"])
def test_mixed_precision_dtypes_and_a_loss_scaled_update(kind):
    agent = build(kind)
    torso, heads, opt, train = parts(agent)
    assert agent.mixed_precision
    # float16 compute in the torso, float32 variables everywhere; heads compute float32.
    assert {layer.compute_dtype for layer in [*torso.convs, torso.dense]} == {"float16"}
    assert {h.compute_dtype for h in heads} == {"float32"}
    assert {dtype for _, dtype in agent.weight_spec().values()} == {"float32"}
    assert torso(tf.constant(pixels(2)))[0].dtype == tf.float16
    assert outputs(agent, pixels(2)).dtype == tf.float32  # Q-values / logits
    assert isinstance(opt, LossScaleOptimizer) and opt.dynamic
    before = agent.get_weights()
    result = train()
    after = agent.get_weights()
    assert all(np.isfinite(v) for v in result.metrics.values())
    assert all(after[n].dtype == np.float32 and np.isfinite(after[n]).all() for n in after)
    assert any(not np.array_equal(before[n], after[n]) for n in before)
    assert int(opt.dynamic_counter) == 1  # the step went through the loss-scale optimizer


@pytest.mark.parametrize("kind", ["dqn", "ppo"])
def test_an_overflowing_loss_scale_skips_the_step_and_halves(kind):
    """The loss is scaled inside the tape: a scale too big for float16 gradients makes
    them non-finite, so the update is skipped (weights kept) and the scale halved."""
    agent = build(kind)
    _, _, opt, train = parts(agent)
    opt._loss_scale.current_loss_scale.assign(2.0**60)
    before = agent.get_weights()
    train()
    after = agent.get_weights()
    assert all(np.array_equal(before[n], after[n]) for n in before)
    assert float(opt.loss_scale) == 2.0**59


@pytest.mark.parametrize("kind", ["dueling", "ppo"])
def test_export_checkpoint_and_weights_stay_float32(tmp_path, kind):
    mixed, plain = build(kind), build(kind, mixed=False)
    assert not plain.mixed_precision
    # Weights travel between a mixed learner and float32 actors/agents as they are.
    assert mixed.weight_spec() == plain.weight_spec()
    plain.set_weights(mixed.get_weights())
    # One checkpoint format: each restores the other's.
    path = tf.train.Checkpoint(**mixed.checkpoint_items()).write(str(tmp_path / "mixed"))
    tf.train.Checkpoint(**plain.checkpoint_items()).read(path).assert_existing_objects_matched()
    path = tf.train.Checkpoint(**plain.checkpoint_items()).write(str(tmp_path / "plain"))
    tf.train.Checkpoint(**mixed.checkpoint_items()).read(path).assert_existing_objects_matched()
    # The export computes in float32 with the mixed agent's weights: the float32 agent's
    # outputs exactly, and the float16 learner's up to float16 rounding.
    module = mixed.serving_module()
    obs = pixels(2, seed=5)
    out = module.serving_default(tf.constant(obs))
    raw = out["logits" if kind == "ppo" else "q_values"]
    assert raw.dtype == tf.float32
    np.testing.assert_allclose(raw.numpy(), outputs(plain, obs).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(raw.numpy(), outputs(mixed, obs).numpy(), rtol=0.05, atol=0.05)
    assert {v.dtype for v in module.trainable_variables} == {tf.float32}


def test_placement_turns_mixed_precision_on_for_a_gpu_only(caplog):
    on = LearnerConfig(mixed_precision=True)
    assert with_precision(Placement("/GPU:0", "a GPU"), on).mixed_precision
    assert not with_precision(Placement("/GPU:0", "a GPU"), LearnerConfig()).mixed_precision
    assert not with_precision(Placement("/CPU:0", "no GPU visible"), on).mixed_precision
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "learner.mixed_precision: off"
    ]


def test_train_on_a_cpu_warns_once_and_trains_float32(tmp_path: Path):
    cfg = tiny_config(
        learner={"device": "cpu", "mixed_precision": True},
        train={"env_steps": 400, "learning_starts": 100},
        eval={"every_env_steps": 400},
    )
    (tmp_path / "mp.yaml").write_text(yaml.safe_dump(cfg))
    train = run_cli("train", "mp.yaml", cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    warnings = [line for line in train.stderr.splitlines() if "learner.mixed_precision" in line]
    assert len(warnings) == 1 and "float32" in warnings[0], train.stderr
    assert (tmp_path / "models" / "tiny" / "1" / "saved_model.pb").exists()
