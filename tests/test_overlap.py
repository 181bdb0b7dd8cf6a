"""Collection that overlaps learning (`collect.overlap`): the collecting policy's
log-probabilities, the rollout gather's bounded lag, the threaded local source, the PPO
update weighing a lagged rollout, the config check, and a run end to end."""

from __future__ import annotations

import glob
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_config

from rlplat import agents, config, envs
from rlplat.errors import ConfigError
from rlplat.experience.collect import Collector, RolloutGather, time_major
from rlplat.experience.data import Fragment, Transitions
from rlplat.experience.sources import ThreadSource, open_source
from rlplat.train import train


def ppo_config(
    env: str = "CartPole-v1", continuous: bool = False, **collect
) -> config.ExperimentConfig:
    data = tiny_config(env={"id": env, "kwargs": {"continuous": True} if continuous else {}})
    data["agent"] = {"type": "ppo", "network": {"hidden": [8]}, "epochs": 2,
                     "minibatch_size": 16}  # fmt: skip
    data["replay"] = None
    data["collect"] = {"envs_per_actor": 2, "rollout_length": 16, **collect}
    return config.parse(data)


@pytest.mark.parametrize(
    "env, continuous", [("CartPole-v1", False), ("LunarLander-v3", True)], ids=["discrete", "box"]
)
def test_the_collectors_log_prob_is_the_learners(env: str, continuous: bool):
    cfg = ppo_config(env, continuous)
    agent = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    policy = agent.actor_policy(0, 1, seed=3)
    policy.set_weights(agent.get_weights())
    fragment = Collector(cfg.env, 2, 0, policy, log_probs=True).collect(16)
    t = fragment.transitions
    out = agent._policy_out(agent._normalize(tf.constant(t.obs)))  # the learner's graph
    actions = tf.constant(t.action, tf.float32 if continuous else tf.int64)
    learner, _ = agent._log_prob_entropy(out, actions)
    assert t.log_prob.shape == (32,) and t.log_prob.dtype == np.float32
    np.testing.assert_allclose(t.log_prob, learner.numpy(), atol=1e-5)


def test_a_collector_without_log_probs_hands_back_none_and_the_same_actions():
    cfg = ppo_config()
    agent = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    runs = []
    for logged in (False, True):
        policy = agent.actor_policy(0, 1, seed=3)
        policy.set_weights(agent.get_weights())
        runs.append(Collector(cfg.env, 2, 0, policy, log_probs=logged).collect(16).transitions)
    assert runs[0].log_prob is None
    np.testing.assert_array_equal(runs[0].action, runs[1].action)  # same RNG draws


def fragment(version: int, actor: int = 0) -> Fragment:
    t = Transitions(*(np.zeros(4) for _ in range(5)), last=np.zeros(4, bool))
    return Fragment(transitions=t, episodes=[], env_steps=4, num_envs=2, actor=actor,
                    version=version)  # fmt: skip


def test_the_gather_keeps_fragments_at_most_max_lag_behind_and_reports_the_lag():
    serial = RolloutGather(1)
    serial.version = 3
    assert not serial.add(fragment(2)) and serial.stale_dropped == 1

    lagged = RolloutGather(2, max_lag=1)
    lagged.version = 3
    assert not lagged.add(fragment(1))  # two behind: dropped
    assert not lagged.add(fragment(4))  # from the future: dropped
    assert lagged.add(fragment(2, actor=0)) and lagged.add(fragment(3, actor=1))
    rollout = lagged.pop()
    assert lagged.lag == 1 and lagged.version == 4 and lagged.stale_dropped == 2
    assert rollout.reward.shape == (2, 4)  # [T, both collectors' envs]


def test_the_thread_source_collects_beside_the_caller_with_the_weights_it_was_given():
    cfg = ppo_config(overlap=True)
    agent = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    source = open_source(cfg, agent, 0, None, None, None)
    assert isinstance(source, ThreadSource)
    try:
        source.broadcast(agent.get_weights(), 0)
        got = source.gather([0], 16, 0, block=False)  # launched; the caller goes on
        if not got:  # (unless 32 CartPole steps were done already)
            assert source.pending == 1 and source.idle() == []
            assert source.inflight_env_steps == 32
        while not got:
            got = source.gather([], 16, 0, block=True)
        assert got[0].version == 0 and got[0].transitions.log_prob is not None
        assert source.pending == 0 and source.idle() == [0]
        source.broadcast(agent.get_weights(), 1)
        source.gather([0], 16, 32, block=False)  # the close below waits for it
    finally:
        source.close()


def test_a_rollout_weighed_by_its_own_log_probs_trains_as_an_on_policy_one():
    """With no lag the importance ratio is 1: passing the collector's log-probabilities
    must give the update the learner computes itself. (One minibatch of the whole rollout:
    the update then does not depend on the shuffle.)"""
    cfg = ppo_config()
    cfg = cfg.model_copy(update={"agent": cfg.agent.model_copy(update={"minibatch_size": None})})
    first = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    start = first.get_weights()
    policy = first.actor_policy(0, 1, seed=3)
    policy.set_weights(start)
    batch = time_major(Collector(cfg.env, 2, 0, policy, log_probs=True).collect(16))
    first.train(Transitions(**{**batch.__dict__, "log_prob": None}))
    second = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    second.set_weights(start)
    metrics = second.train(batch).metrics
    assert metrics["lag/importance_ratio_max"] == pytest.approx(1.0, abs=1e-5)
    assert metrics["lag/importance_ratio_min"] == pytest.approx(1.0, abs=1e-5)
    trained = first.get_weights()
    for name, value in second.get_weights().items():
        np.testing.assert_allclose(value, trained[name], atol=1e-5)


def test_overlap_is_refused_for_an_off_policy_agent():
    with pytest.raises(ConfigError, match=r"collect\.overlap: agent type 'dqn' is off-policy"):
        config.parse(tiny_config(collect={"overlap": True}))


def test_an_overlapped_run_trains_and_logs_its_lag(tmp_path: Path):
    cfg = ppo_config(overlap=True)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"env_steps": 320})})
    summary = train(cfg, tmp_path / "run", show_progress=False)
    assert summary.env_steps >= 320
    tags: dict[str, list[float]] = {}
    for event in tf.compat.v1.train.summary_iterator(glob.glob(str(tmp_path / "run/tb/*"))[0]):
        for v in event.summary.value:
            tags.setdefault(v.tag, []).append(float(tf.make_ndarray(v.tensor)))
    assert set(tags["collect/policy_lag"]) <= {0.0, 1.0} and 1.0 in tags["collect/policy_lag"]
    assert all(r > 0 for r in tags["lag/importance_ratio_min"])


def test_ray_collectors_overlap_too(tmp_path: Path):
    cfg = ppo_config(overlap=True, num_actors=2)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"env_steps": 512})})
    summary = train(cfg, tmp_path / "run", show_progress=False)
    assert summary.env_steps >= 512 and summary.stale_fragments == 0
    lags = [
        float(tf.make_ndarray(v.tensor))
        for event in tf.compat.v1.train.summary_iterator(glob.glob(str(tmp_path / "run/tb/*"))[0])
        for v in event.summary.value
        if v.tag == "collect/policy_lag"
    ]
    assert 1.0 in lags and set(lags) <= {0.0, 1.0}


def test_an_overlapped_run_repeats_itself_for_a_seed(tmp_path: Path):
    cfg = ppo_config(overlap=True)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"env_steps": 640})})
    runs = [train(cfg, tmp_path / name, show_progress=False) for name in ("a", "b")]
    evals = [(tmp_path / name / "evals.jsonl").read_text().splitlines() for name in ("a", "b")]
    returns = [[json.loads(line)["return_mean"] for line in lines] for lines in evals]
    assert returns[0] == returns[1] and len(returns[0]) >= 2
    assert runs[0].train_steps == runs[1].train_steps > 0
