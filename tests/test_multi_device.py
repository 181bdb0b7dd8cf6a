"""`learner.strategy: mirrored` on two logical CPUs (issue 18).

TensorFlow's logical devices must be configured before TensorFlow starts, so the training
checks run in a fresh interpreter (`_TWO_CPUS`) that prints one JSON line of measured
differences, and the assertions are here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import RLPLAT, ROOT, tiny_config

from rlplat.errors import ConfigError
from rlplat.learner import pick_devices

# Float32 sums in a different order (two half-minibatch gradients added, versus one) differ
# in the last bits; after a few Adam steps the weights agree to well within this.
TOLERANCE = 1e-5

_TWO_CPUS = r"""
import json, sys
import rlplat  # noqa: F401  (before TensorFlow)
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import gymnasium as gym
from pathlib import Path
from rlplat import agents
from rlplat.agents.configs import DQNConfig, PPOConfig
from rlplat.checkpoint import Checkpointer
from rlplat.experience.data import Transitions
from rlplat.envs import EnvSpaces
from rlplat.export import export_saved_model
from rlplat.learner import Placement, learner_scope

tmp = Path(sys.argv[1])
spaces = EnvSpaces(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2))
cfg = PPOConfig(type="ppo", network={"hidden": [16, 16]}, epochs=2, minibatch_size=32)
rng = np.random.default_rng(0)
T, N = 16, 4
batch = Transitions(
    obs=rng.normal(size=(T, N, 4)).astype(np.float32), action=rng.integers(0, 2, (T, N)),
    reward=rng.normal(size=(T, N)).astype(np.float32),
    next_obs=rng.normal(size=(T, N, 4)).astype(np.float32),
    discount=np.ones((T, N), np.float32), last=np.zeros((T, N), bool),
)
ONE, TWO = Placement("/CPU:0", "test"), Placement("/CPU:0", "test", devices=("/CPU:0", "/CPU:1"))

def build(placement, agent_cfg=cfg):
    tf.random.set_seed(0)
    with learner_scope(placement):
        return agents.build(agent_cfg, spaces, seed=0)

def diff(a, b):
    wa, wb = a.get_weights(), b.get_weights()
    return max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)

def ckpt_round_trip(source, placement, name):
    ckpt = Checkpointer(tmp / name, source, None, keep=1)
    path = ckpt.save({"env_steps": 0})
    target = build(placement)
    Checkpointer(tmp / name, target, None, keep=1).restore(path)
    slots = [float(np.abs(a - b).max()) for a, b in zip(
        source._optimizer.variables, target._optimizer.variables, strict=True)]
    return target, max(diff(source, target), *slots)

one, two = build(ONE), build(TWO)
out = {"replicas": two._strategy.num_replicas_in_sync, "init_diff": diff(one, two)}
start = one.get_weights()
one.train(batch), two.train(batch)
out["moved"] = max(float(np.abs(start[k] - v).max()) for k, v in one.get_weights().items())
out["trained_diff"] = diff(one, two)
# Checkpoints: 2 replicas -> 1 -> (one more phase) -> 2.
on_one, out["ckpt_2_to_1"] = ckpt_round_trip(two, ONE, "a")
on_one.train(batch)
on_two, out["ckpt_1_to_2"] = ckpt_round_trip(on_one, TWO, "b")
out["steps"] = [two.train_steps, on_one.train_steps, on_two.train_steps]
# DQN (Double, PER weights, gradient clipping): K=3 steps on minibatches of 8.
dqn_cfg = DQNConfig(type="dqn", network={"hidden": [16]}, double=True, gradient_clipping=0.5,
                    target_update={"period": 2}, learning_rate=1e-2)
K, B = 3, 8
replay = Transitions(
    obs=rng.normal(size=(K, B, 4)).astype(np.float32), action=rng.integers(0, 2, (K, B)),
    reward=rng.normal(size=(K, B)).astype(np.float32),
    next_obs=rng.normal(size=(K, B, 4)).astype(np.float32),
    discount=np.full((K, B), 0.99, np.float32),
)
is_weights = rng.uniform(0.1, 1.0, (K, B)).astype(np.float32)
q_one, q_two = build(ONE, dqn_cfg), build(TWO, dqn_cfg)
out["dqn_init_diff"] = diff(q_one, q_two)
start = q_one.get_weights()
r_one, r_two = q_one.train(replay, is_weights), q_two.train(replay, is_weights)
out["dqn_moved"] = max(float(np.abs(start[k] - v).max()) for k, v in q_one.get_weights().items())
out["dqn_trained_diff"] = diff(q_one, q_two)
out["dqn_td_diff"] = float(np.abs(r_one.td_errors - r_two.td_errors).max())
out["dqn_td_shape"] = list(r_two.td_errors.shape)
out["dqn_loss_diff"] = abs(r_one.metrics["losses/td_loss"] - r_two.metrics["losses/td_loss"])
target = [q_two._agent._target_q_network.variables, q_one._agent._target_q_network.variables]
out["dqn_target_diff"] = max(float(np.abs(a.numpy() - b.numpy()).max()) for a, b in zip(*target))
out["dqn_steps"] = [q_one.train_steps, q_two.train_steps]
# A Nature CNN torso (uint8 pixels, dueling heads): float32 matches; mixed precision trains.
pixels = EnvSpaces(gym.spaces.Box(0, 255, (36, 36, 4), np.uint8), gym.spaces.Discrete(3))
cnn_cfg = DQNConfig(type="dqn", network={"type": "nature_cnn", "dense": 32}, dueling=True)
frames = Transitions(
    rng.integers(0, 256, (2, 8, 36, 36, 4), dtype=np.uint8), rng.integers(0, 3, (2, 8)),
    rng.normal(size=(2, 8)).astype(np.float32),
    rng.integers(0, 256, (2, 8, 36, 36, 4), dtype=np.uint8), np.full((2, 8), 0.99, np.float32),
)
for mixed in (False, True):
    cnn = []
    for placement in (ONE, TWO):
        with learner_scope(placement):
            cnn.append(agents.build(cnn_cfg, pixels, seed=0, mixed_precision=mixed))
    # Same start: the conv initialisers draw differently under a strategy.
    ckpt = tf.train.Checkpoint(**cnn[0].checkpoint_items()).write(str(tmp / f"cnn{mixed}"))
    tf.train.Checkpoint(**cnn[1].checkpoint_items()).read(ckpt).assert_existing_objects_matched()
    for agent in cnn:
        agent.train(frames)
    out[f"cnn_mixed{mixed}"] = [diff(*cnn), cnn[1].mixed_precision,
                                int(cnn[1]._optimizer.iterations.numpy())]
obs = batch.obs.reshape(-1, 4)
path = export_saved_model(two.serving_module(), tmp / "models", "ppo", {})
out["export"] = str(path)
out["actions"] = two.serving_module().serving_default(tf.constant(obs))["actions"].numpy().tolist()
np.save(tmp / "obs.npy", obs)
print(json.dumps(out))
"""

_PLAIN_TF = r"""
import json, sys
import numpy as np
import tensorflow as tf

model = tf.saved_model.load(sys.argv[1])
obs = np.load(sys.argv[2])
print(json.dumps(model.serving_default(tf.constant(obs))["actions"].numpy().tolist()))
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("rlplat", "tf_agents")))))
"""


def _python(code: str, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def test_two_replicas_match_one_and_checkpoints_and_exports(tmp_path: Path):
    out = json.loads(_python(_TWO_CPUS, str(tmp_path))[-1])
    assert out["replicas"] == 2
    assert out["init_diff"] == 0.0
    assert out["moved"] > 100 * TOLERANCE  # the phase did change the weights
    assert out["trained_diff"] < TOLERANCE
    assert out["ckpt_2_to_1"] == 0.0 and out["ckpt_1_to_2"] == 0.0
    assert out["steps"] == [4, 8, 8]  # 2 epochs x 2 minibatches of 32 per phase
    assert out["dqn_init_diff"] == 0.0 and out["dqn_moved"] > 100 * TOLERANCE
    assert out["dqn_trained_diff"] < TOLERANCE and out["dqn_target_diff"] < TOLERANCE
    # Prioritized replay's TD errors come back [K, B] in the minibatch's order.
    assert out["dqn_td_shape"] == [3, 8] and out["dqn_td_diff"] < TOLERANCE
    assert out["dqn_loss_diff"] < TOLERANCE
    assert out["dqn_steps"] == [3, 3]
    assert out["cnn_mixedFalse"][0] < TOLERANCE
    # float16 rounding differs with the batch split and Adam's first steps (about
    # lr * sign(g)) amplify it: mixed precision is only checked to train on 2 replicas.
    _, mixed, adam_steps = out["cnn_mixedTrue"]
    assert mixed and adam_steps == 2  # no step skipped for non-finite gradients
    # The export is a plain SavedModel: it loads where only TensorFlow is imported.
    actions, modules = (json.loads(line) for line in _python(
        _PLAIN_TF, out["export"], str(tmp_path / "obs.npy"))[-2:])  # fmt: skip
    assert actions == out["actions"]
    assert modules == []


def test_pick_devices():
    cpus = ["/device:CPU:0", "/device:CPU:1"]
    assert pick_devices("auto", "none", cpus) == ("/CPU:0",)
    assert pick_devices("auto", "mirrored", cpus) == ("/CPU:0", "/CPU:1")
    assert pick_devices(1, "mirrored", cpus) == ("/CPU:0",)
    assert pick_devices(["/device:CPU:1"], "mirrored", cpus) == ("/CPU:1",)
    with pytest.raises(ConfigError, match=r"learner.devices: 3, but TensorFlow sees 2"):
        pick_devices(3, "mirrored", cpus)
    with pytest.raises(ConfigError, match=r"learner.devices: \['/GPU:0'\] not among"):
        pick_devices(["/GPU:0"], "mirrored", cpus)
    with pytest.raises(ConfigError, match="learner.devices: 2 devices need learner.strategy"):
        pick_devices(2, "none", cpus)


def test_more_devices_than_the_machine_has_is_a_config_error(tmp_path: Path):
    data = tiny_config()
    data["learner"] = {"devices": 64, "strategy": "mirrored"}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))
    run_dir = tmp_path / "run"
    done = subprocess.run(
        [RLPLAT, "train", str(path), "--run-dir", str(run_dir), "--no-export"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "learner.devices: 64" in line]
    assert len(errors) == 1, done.stderr[-2000:]
    assert not run_dir.exists()


def test_a_batch_the_devices_cannot_split_is_a_config_error_before_the_run():
    from rlplat import config
    from rlplat.learner import check_split

    two = 2
    dqn = config.parse(tiny_config(train={"batch_size": 63}))
    with pytest.raises(ConfigError, match=r"^train.batch_size: 63 does not split evenly .* 2 "):
        check_split(dqn, two)
    check_split(dqn, 1)  # one device splits nothing
    ppo = tiny_config(collect={"rollout_length": 33, "envs_per_actor": 1})
    ppo["agent"] = {"type": "ppo", "minibatch_size": 15}
    ppo.pop("replay")
    with pytest.raises(ConfigError, match=r"^agent.minibatch_size: 15 "):
        check_split(config.parse(ppo), two)
    ppo["agent"]["minibatch_size"] = None  # the whole rollout: 33 rows
    with pytest.raises(ConfigError, match=r"^collect.rollout_length x envs_per_actor"):
        check_split(config.parse(ppo), two)
    ppo["collect"]["rollout_length"] = 32
    check_split(config.parse(ppo), two)
