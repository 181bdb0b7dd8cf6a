"""Pixels stay uint8 from the env to the learner's graph: collectors' fragments (what Ray
carries), plain replays and evaluation hand uint8 images on as uint8; vector observations
stay float32 as before."""

from __future__ import annotations

import numpy as np
import pytest
from test_atari_env import _Random

from rlplat import envs
from rlplat.config import EnvConfig, ReplayConfig
from rlplat.evaluate import run_episodes
from rlplat.experience.collect import Collector
from rlplat.experience.replay import RowSpec, build

PIXELS = EnvConfig(id="pixel_env:PixelEnv", kwargs={"episode_steps": 3})
CARTPOLE = EnvConfig(id="CartPole-v1")


@pytest.mark.parametrize(
    ("cfg", "dtype"),
    [
        (PIXELS, np.uint8),
        (EnvConfig(id="ALE/Pong-v5", atari={"noop_max": 0}), np.uint8),
        (CARTPOLE, np.float32),
    ],
)
def test_fragments_keep_the_envs_pixels(cfg: EnvConfig, dtype):
    collector = Collector(cfg, 2, seed=0, policy=_Random(2))
    try:
        t = collector.collect(5).transitions
    finally:
        collector.close()
    assert t.obs.dtype == dtype and t.next_obs.dtype == dtype
    assert t.obs.shape[0] == 10
    # n-step assembly (off-policy fragments) keeps the dtype too
    collector = Collector(cfg, 2, seed=0, policy=_Random(2), rows=RowSpec(n_step=2))
    try:
        t = collector.collect(5).transitions
    finally:
        collector.close()
    assert t.obs.dtype == dtype and t.next_obs.dtype == dtype


@pytest.mark.parametrize(("cfg", "dtype"), [(PIXELS, np.uint8), (CARTPOLE, np.float32)])
def test_plain_replay_stores_pixels_as_uint8(cfg: EnvConfig, dtype):
    spaces = envs.spaces(cfg)
    for kind in ("uniform", "prioritized"):
        replay = build(ReplayConfig(type=kind, capacity=8), spaces, seed=0)
        collector = Collector(cfg, 2, seed=0, policy=_Random(2))
        try:
            fragment = collector.collect(3)
        finally:
            collector.close()
        replay.add(fragment)
        batch = replay.sample(4).batch
        assert batch.obs.dtype == dtype and batch.next_obs.dtype == dtype


@pytest.mark.parametrize(("cfg", "dtype"), [(PIXELS, np.uint8), (CARTPOLE, np.float32)])
def test_evaluation_hands_the_policy_the_envs_dtype(cfg: EnvConfig, dtype):
    seen = []

    def policy(obs: np.ndarray) -> np.ndarray:
        seen.append(obs.dtype)
        return np.zeros(len(obs), np.int64)

    run_episodes(policy, cfg, episodes=2, seed=0)
    assert seen and set(seen) == {np.dtype(dtype)}
