"""The Nature CNN for pixel observations (DQN and PPO) on a fake [84, 84, 4] uint8 env:
network selection, uint8 scaled in the graph, a training phase, weights by name, and the
uint8 export signature (the TF acting policy against the learner: tests/test_network_spec.py;
the CNN DQN through `rlplat train` with 2 Ray collectors, its uint8 export and `rlplat eval`
of it: tests/test_atari_e2e.py, on Pong)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf
from pixel_env import PixelEnv

from rlplat import agents
from rlplat.agents.configs import DQNConfig, PPOConfig, ReinforceConfig
from rlplat.agents.networks import NatureQNetwork
from rlplat.envs import EnvSpaces
from rlplat.errors import ConfigError
from rlplat.experience.data import Transitions
from rlplat.export import export_saved_model
from rlplat.policies import load_policy

PIXELS = EnvSpaces(gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), gym.spaces.Discrete(4))
VECTOR = EnvSpaces(gym.spaces.Box(-1.0, 1.0, (4,), np.float32), gym.spaces.Discrete(2))


def dqn(**kw) -> agents.Agent:
    return agents.build(DQNConfig(type="dqn", jit_compile=False, **kw), PIXELS)


def rollout(agent: agents.Agent, steps: int, num_envs: int = 2) -> Transitions:
    """[steps, num_envs] transitions of `agent` acting on PixelEnv (uint8 throughout)."""
    envs = [PixelEnv() for _ in range(num_envs)]
    obs = np.stack([env.reset(seed=i)[0] for i, env in enumerate(envs)])
    rows = []
    for _ in range(steps):
        actions = agent.act(obs, explore=True)
        out = [env.step(a) for env, a in zip(envs, actions, strict=True)]
        next_obs = np.stack([o[0] for o in out])
        reward = np.array([o[1] for o in out], np.float32)
        last = np.array([o[3] for o in out])
        rows.append((obs, actions, reward, next_obs, np.ones(num_envs, np.float32), last))
        pairs = zip(envs, next_obs, last, strict=True)
        obs = np.stack([env.reset()[0] if done else o for env, o, done in pairs])
    cols = [np.stack(c) for c in zip(*rows, strict=True)]
    return Transitions(*cols[:5], last=cols[5])


def changed(before: dict, after: dict) -> list[str]:
    return [n for n in before if not np.array_equal(before[n], after[n])]


def test_network_selection_and_inference():
    # Not given: inferred from the observation space (image → CNN, vector → MLP).
    assert "q/conv0/kernel" in agents.build(DQNConfig(type="dqn"), PIXELS).weight_spec()
    assert "q/layer0/kernel" in agents.build(DQNConfig(type="dqn"), VECTOR).weight_spec()
    ppo = agents.build(PPOConfig(type="ppo"), PIXELS)
    assert "torso/conv0/kernel" in ppo.weight_spec() and "obs/mean" not in ppo.weight_spec()
    # REINFORCE (PPO underneath) keeps the inference.
    reinforce = agents.build(ReinforceConfig(type="reinforce"), PIXELS)
    assert "torso/conv0/kernel" in reinforce.weight_spec()
    # Given: honoured (an MLP on pixels flattens them), and refused where it cannot work.
    mlp = DQNConfig(type="dqn", network={"type": "mlp", "hidden": [8]})
    assert "q/layer0/kernel" in agents.build(mlp, PIXELS).weight_spec()
    # XLA unset: on for MLPs, off for conv nets without a GPU (XLA's CPU convs are slow).
    gpu = bool(tf.config.list_physical_devices("GPU"))
    assert agents.build(DQNConfig(type="dqn"), PIXELS).jit_compile is gpu
    assert agents.build(DQNConfig(type="dqn"), VECTOR).jit_compile is True
    with pytest.raises(ConfigError, match="nature_cnn"):
        agents.build(DQNConfig(type="dqn", network={"type": "nature_cnn"}), VECTOR)


def test_nature_torso_shapes_and_uint8_scaled_in_graph():
    agent = dqn()
    spec = agent.weight_spec()
    assert spec["q/conv0/kernel"] == ((8, 8, 4, 32), "float32")
    assert spec["q/conv1/kernel"] == ((4, 4, 32, 64), "float32")
    assert spec["q/conv2/kernel"] == ((3, 3, 64, 64), "float32")
    assert spec["q/dense0/kernel"] == ((7 * 7 * 64, 512), "float32")
    assert spec["q/head/kernel"] == ((512, 4), "float32")
    q_net = agent._q
    assert isinstance(q_net, NatureQNetwork) and q_net.input_tensor_spec.dtype == tf.uint8
    pixels = np.random.default_rng(0).integers(0, 256, (3, 84, 84, 4), dtype=np.uint8)
    q_uint8, _ = q_net(tf.constant(pixels))
    # The same layers, one by one, on pixels scaled outside the network.
    x = tf.constant(pixels.astype(np.float32) / 255.0)
    for conv in q_net.torso.convs:
        x = conv(x)
    q_float = q_net.heads[0](q_net.torso.dense(tf.reshape(x, [3, -1])))
    assert q_uint8.shape == (3, 4) and q_uint8.dtype == tf.float32
    np.testing.assert_allclose(q_uint8.numpy(), q_float.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flags", [{}, {"dueling": True, "double": True, "n_step": 3}])
def test_dqn_training_phase_on_pixels(flags):
    agent = dqn(**flags)
    d = rollout(agent, 8)  # [8 steps, 2 envs] → K = 2 minibatches of 8
    fields = (d.obs, d.action, d.reward, d.next_obs, d.discount)
    batch = Transitions(*(x.reshape(2, 8, *x.shape[2:]) for x in fields))
    assert batch.obs.dtype == np.uint8
    before = agent.get_weights()
    is_weights = np.random.default_rng(0).uniform(0.5, 1.0, (2, 8)).astype(np.float32)
    result = agent.train(batch, is_weights)
    assert np.isfinite(result.metrics["losses/td_loss"])
    assert result.td_errors.shape == (2, 8) and np.isfinite(result.td_errors).all()
    assert set(changed(before, agent.get_weights())) == set(before)


def test_ppo_training_phase_on_pixels():
    agent = agents.build(PPOConfig(type="ppo", minibatch_size=8, epochs=1), PIXELS)
    before = agent.get_weights()
    result = agent.train(rollout(agent, 8))
    assert all(np.isfinite(v) for v in result.metrics.values())
    assert set(changed(before, agent.get_weights())) == set(before)


@pytest.mark.parametrize("make", [lambda: dqn(dueling=True), lambda: dqn()])
def test_weights_round_trip_by_name(make):
    a, b = make(), make()
    assert a.weight_spec() == b.weight_spec()
    assert changed(a.get_weights(), b.get_weights())  # fresh initialisations differ
    b.set_weights(a.get_weights())
    assert not changed(a.get_weights(), b.get_weights())


@pytest.mark.parametrize("cfg", [DQNConfig(type="dqn", dueling=True), PPOConfig(type="ppo")])
def test_checkpoint_restores_every_cnn_variable(tmp_path, cfg):
    a, b = agents.build(cfg, PIXELS, seed=0), agents.build(cfg, PIXELS, seed=1)
    assert changed(a.get_weights(), b.get_weights())
    path = tf.train.Checkpoint(**a.checkpoint_items()).write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(**b.checkpoint_items()).read(path).assert_existing_objects_matched()
    assert not changed(a.get_weights(), b.get_weights())


@pytest.mark.parametrize("cfg", [DQNConfig(type="dqn"), PPOConfig(type="ppo")])
def test_export_takes_uint8_observations(tmp_path, cfg):
    agent = agents.build(cfg, PIXELS)
    meta = {"env": {"id": "pixel_env:PixelEnv"}}
    version = export_saved_model(agent.serving_module(), tmp_path, "pixels", meta)
    loaded = tf.saved_model.load(str(version))
    serve = loaded.signatures["serving_default"]
    assert serve.structured_input_signature[1]["observations"].dtype == tf.uint8
    pixels = np.random.default_rng(2).integers(0, 256, (2, 84, 84, 4), dtype=np.uint8)
    out = serve(observations=tf.constant(pixels))
    np.testing.assert_array_equal(out["actions"].numpy(), agent.act(pixels, explore=False))
    assert out["q_values" if cfg.type == "dqn" else "logits"].shape == (2, 4)
    if cfg.type == "ppo":
        sample = loaded.signatures["sample"](observations=tf.constant(pixels))
        assert sample["actions"].shape == (2,)
    # `rlplat eval/play` of the model: its observations go in as the signature's uint8.
    played = load_policy(version, stochastic=False)
    np.testing.assert_array_equal(played.act(pixels.astype(np.float32)), out["actions"].numpy())
