"""Ray collectors, Ape-X exploration and priorities, stale fragments, learner placement."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import RLPLAT, processes_of, tiny_config, user_env

from rlplat import agents, config, envs
from rlplat.agents.actors import EpsilonGreedyQ, apex_epsilon, weight_spec
from rlplat.errors import ConfigError
from rlplat.experience.collect import RolloutGather
from rlplat.experience.data import Fragment, Transitions
from rlplat.learner import place_learner


def dqn_cfg(**agent):
    return config.parse(tiny_config(agent=agent)).agent


def test_apex_epsilons_per_actor():
    # Ape-X: eps_i = eps^(1 + 7 i / (N - 1)); the first actor keeps eps, the last eps^8.
    got = [apex_epsilon(0.4, i, 8, 7.0) for i in range(8)]
    np.testing.assert_allclose(got, [0.4 ** (1 + i) for i in range(8)])
    assert apex_epsilon(0.4, 0, 1, 7.0) == 0.4  # one actor: the schedule itself
    assert apex_epsilon(0.4, 3, 4, 0.0) == 0.4  # exponent 0: Ape-X spread off
    # The actor policies the agent hands out follow the schedule, spread per actor.
    cfg = dqn_cfg(epsilon={"start": 1.0, "end": 0.4, "decay_env_steps": 100})
    policies = [EpsilonGreedyQ(cfg, {}, 2, i, 3, seed=i) for i in range(3)]
    for p in policies:
        p.update(0)
    assert [p.epsilon for p in policies] == [1.0, 1.0, 1.0]  # 1^x = 1: all random at first
    for p in policies:
        p.update(100)
    np.testing.assert_allclose([p.epsilon for p in policies], [0.4, 0.4**4.5, 0.4**8])


def test_actor_priorities_are_n_step_td_errors():
    cfg = dqn_cfg(network={"hidden": [3]})
    rng = np.random.default_rng(0)
    w = [rng.normal(size=s).astype(np.float32) for s in [(4, 3), (3,), (3, 2), (2,)]]
    names = ["q/layer0/kernel", "q/layer0/bias", "q/layer1/kernel", "q/layer1/bias"]
    weights = dict(zip(names, w, strict=True))
    policy = EpsilonGreedyQ(cfg, weight_spec(weights), 2, 0, 1, seed=0)
    policy.set_weights(weights)

    def q(x):
        return np.maximum(x @ w[0] + w[1], 0) @ w[2] + w[3]

    obs, next_obs = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    action = np.array([0, 1, 1, 0, 1])
    reward = rng.normal(size=5)
    discount = np.array([0.97, 0.0, 0.97, 0.5, 0.97])  # gamma^n, 0 after termination
    t = Transitions(*(a.astype(np.float32) for a in (obs, action, reward, next_obs, discount)))
    t.action = action
    expected = np.abs(reward + discount * q(next_obs).max(1) - q(obs)[np.arange(5), action])
    np.testing.assert_allclose(policy.priorities(t), expected, rtol=1e-5, atol=1e-5)


def _fragment(actor: int, version: int, steps: int = 3, n_envs: int = 2) -> Fragment:
    rows = steps * n_envs
    obs = np.full((rows, 1), actor, np.float32)
    t = Transitions(obs, np.zeros(rows, np.int64), np.zeros(rows, np.float32), obs,
                    np.ones(rows, np.float32), np.zeros(rows, bool))  # fmt: skip
    return Fragment(t, [], rows, n_envs, version=version, actor=actor)


def test_stale_fragments_are_dropped_and_counted_never_mixed():
    gather = RolloutGather(num_fragments=2)
    assert gather.add(_fragment(0, version=0))
    assert not gather.ready() and gather.missing() == [1]
    assert gather.add(_fragment(1, version=0))
    rollout = gather.pop()  # [T, envs of actor 0 + envs of actor 1]
    assert rollout.obs.shape == (3, 4, 1)
    np.testing.assert_array_equal(rollout.obs[0, :, 0], [0, 0, 1, 1])
    assert gather.version == 1
    # A fragment collected with version 0 weights arrives after the update: dropped.
    assert not gather.add(_fragment(1, version=0))
    assert gather.stale_dropped == 1 and gather.missing() == [0, 1]


def test_learner_placement():
    assert place_learner("auto", ["/physical_device:GPU:0"]).device == "/GPU:0"
    assert place_learner("cpu", ["/physical_device:GPU:0"]).device == "/CPU:0"
    assert place_learner("auto", []).device == "/CPU:0"
    with pytest.raises(ConfigError, match="learner.device: gpu, but TensorFlow sees no GPU"):
        place_learner("gpu", [])


def test_agent_variables_live_on_the_placed_device(tmp_path: Path):
    from rlplat.train import Trainer

    cfg = config.parse(tiny_config())
    trainer = Trainer(cfg, tmp_path)
    assert trainer.placement.device == "/CPU:0"  # CI and this machine have no GPU
    devices = {v.device for v in trainer.agent.checkpoint_items()["q_network"].variables}
    assert devices and all(d.endswith("CPU:0") for d in devices)


def test_actor_policies_pickle_without_tensorflow():
    import cloudpickle

    cfg = config.parse(tiny_config())
    agent = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    policy = cloudpickle.loads(cloudpickle.dumps(agent.actor_policy(1, 2, seed=3)))
    policy.set_weights(agent.get_weights())
    obs = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    np.testing.assert_array_equal(policy.act(obs, explore=False), agent.act(obs, explore=False))
    code = (
        "import sys, rlplat.agents.actors, rlplat.experience.collect; "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run(
        [str(Path(RLPLAT).with_name("python")), "-c", code],
        capture_output=True, text=True, env=user_env(), timeout=60,
    )  # fmt: skip
    assert out.stdout.strip() == "False", out.stderr  # collector processes stay TF-free


# ----------------------------------------------------------------- end to end (Ray)


def ray_config(tmp_path: Path, **sections) -> Path:
    base = {
        "name": "cartpole_ray",
        "collect": {"num_actors": 2, "envs_per_actor": 4, "rollout_length": 16,
                    "weight_sync_every": 50},
        "agent": {"network": {"hidden": [64, 64]}, "learning_rate": 2.3e-3,
                  "target_update": {"period": 100}, "jit_compile": False,
                  "epsilon": {"decay_env_steps": 4000, "end": 0.05}},
        "replay": {"type": "prioritized", "capacity": 20000},
        "train": {"env_steps": 12000, "batch_size": 64, "learning_starts": 1000,
                  "train_every": 128, "updates_per_train": 64, "log_every": 1000},
        "eval": {"every_env_steps": 4000, "episodes": 5, "final_episodes": 20},
        "checkpoint": {"every_env_steps": 4000, "keep": 2},
    }  # fmt: skip
    for key, value in sections.items():
        base[key] = {**base[key], **value}
    path = tmp_path / "ray.yaml"
    path.write_text(yaml.safe_dump(tiny_config(**base)))
    return path


def ray_processes(session_dir: str) -> list[int]:
    """Live processes of one Ray session (each carries its session dir on its command line)."""
    return processes_of(Path(session_dir).name)


def start_train(path: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [RLPLAT, "train", str(path), "--run-dir", str(run_dir), *extra],
        cwd=path.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=user_env(), start_new_session=True,
    )  # fmt: skip


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240, until=bool) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and until(info := json.loads(path.read_text())):
            return info
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError(f"{path} did not appear")


def wait_for_collectors(path: Path, proc: subprocess.Popen) -> dict:
    return wait_for(path, proc, until=lambda info: len(info["collectors"]) == 2)


def ppo_ray_config(tmp_path: Path) -> Path:
    """RL-Zoo-like CartPole PPO, its rollouts collected by 2 Ray actors x 4 envs."""
    data = tiny_config(
        name="cartpole_ppo_ray",
        collect={"num_actors": 2, "envs_per_actor": 4, "rollout_length": 32},
        train={"env_steps": 30000, "log_every": 2048},
        eval={"every_env_steps": 10000, "episodes": 5, "final_episodes": 20},
        checkpoint={"every_env_steps": 10000},
    )
    data["agent"] = {
        "type": "ppo", "network": {"hidden": [64, 64]}, "learning_rate": 1e-3,
        "gamma": 0.98, "gae_lambda": 0.8, "epochs": 20, "minibatch_size": 256,
    }  # fmt: skip
    data["replay"] = None
    path = tmp_path / "ppo.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.slow
def test_two_ray_collectors_learn_cartpole_and_leave_nothing_behind(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = start_train(ppo_ray_config(tmp_path), run_dir)
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] >= 30000
    assert summary["actor_restarts"] == 0 and summary["stale_fragments"] == 0
    # Random play scores ~22. Seeds 0-3 while building this: 500 / 500 / 150.6 / 320.8.
    assert summary["final_eval"]["return_mean"] >= 100, summary["final_eval"]
    info = json.loads((run_dir / "ray.json").read_text())
    assert len(info["collectors"]) == 2 and info["ray"]["local"]
    assert "Traceback" not in err and "Token authentication" not in err
    assert ray_processes(info["ray"]["session_dir"]) == []  # local Ray is gone with the run


@pytest.mark.slow
def test_sigkilled_collector_is_replaced_and_the_run_completes(tmp_path: Path):
    run_dir = tmp_path / "run"
    proc = start_train(ray_config(tmp_path, train={"env_steps": 16000}), run_dir)
    info = wait_for_collectors(run_dir / "ray.json", proc)
    victim = info["collectors"]["1"]
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] >= 16000 and summary["actor_restarts"] >= 1
    # Ape-X DQN: the replay ratio was held, updates x batch / env steps = 64 x 64 / 128.
    assert 28 <= summary["train_steps"] * 64 / summary["env_steps"] <= 33
    after = json.loads((run_dir / "ray.json").read_text())
    assert after["collectors"]["1"] != victim and after["collector_restarts"] >= 1
    assert ray_processes(after["ray"]["session_dir"]) == []


@pytest.mark.slow
def test_ctrl_c_with_ray_collectors_checkpoints_and_cleans_up(tmp_path: Path):
    run_dir = tmp_path / "run"
    path = ray_config(tmp_path, train={"env_steps": 200000})
    proc = start_train(path, run_dir)
    info = wait_for_collectors(run_dir / "ray.json", proc)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "resume with: rlplat train --resume" in err
    assert list((run_dir / "checkpoints").glob("ckpt-*"))
    assert ray_processes(info["ray"]["session_dir"]) == []


# ------------------------------------------------------------------- replay shards


@pytest.mark.slow
def test_dead_replay_shard_stops_the_run_clearly_and_resume_recovers(tmp_path: Path):
    run_dir = tmp_path / "run"
    path = ray_config(
        tmp_path,
        collect={"num_actors": 0, "envs_per_actor": 1},
        replay={"shards": 2},
        train={"env_steps": 60000},
        checkpoint={"every_env_steps": 2000},
    )
    proc = start_train(path, run_dir)
    info = wait_for(run_dir / "ray.json", proc)
    assert len(info["replay_shards"]) == 2
    deadline = time.monotonic() + 120
    while not list((run_dir / "checkpoints").glob("ckpt-*/state.json")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.2)
    os.kill(info["replay_shards"][1], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: replay shard 1 died") and f"--resume {run_dir}" in line
    assert ray_processes(info["ray"]["session_dir"]) == []
    resumed = subprocess.run(
        [RLPLAT, "train", "--resume", str(run_dir), "--set", "train.env_steps=8000"],
        capture_output=True, text=True, env=user_env(), timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert json.loads((run_dir / "summary.json").read_text())["env_steps"] >= 8000


def test_unreachable_cluster_address_is_one_clear_line(tmp_path: Path):
    path = ray_config(tmp_path)
    out = subprocess.run(
        [RLPLAT, "train", str(path), "--address", "127.0.0.1:1"],
        cwd=tmp_path, capture_output=True, text=True, env=user_env(), timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("error: --address 127.0.0.1:1: nothing answers there")
    )
    assert not (tmp_path / "runs").exists()  # Ray first: no half-made run directory


def test_log_window_averages_each_metric_over_its_own_count():
    from rlplat.logging import MetricsWindow

    window = MetricsWindow(0, 0)
    window.add({"losses/td_loss": 1.0})
    window.add({"losses/td_loss": 3.0})
    for lag in (10.0, 20.0, 30.0):  # one per fragment, more often than train phases
        window.add({"collect/weight_lag_updates": lag})
    out = window.flush(100, 2)
    assert out["losses/td_loss"] == 2.0 and out["collect/weight_lag_updates"] == 20.0
