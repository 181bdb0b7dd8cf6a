"""The replay split over Ray actors (rlplat/experience/sharded.py): draws, importance
weights and priority updates as one buffer's, and checkpoints of every shard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlplat import config, envs
from rlplat.experience.data import Fragment, Transitions


@pytest.fixture
def local_ray():
    from rlplat import cluster

    info = cluster.start(None, 1)
    yield info
    cluster.stop()


def _rows(values) -> Transitions:
    obs = np.asarray(values, np.float32)[:, None]
    n = len(obs)
    return Transitions(obs, np.zeros(n, np.int64), np.zeros(n, np.float32), obs,
                       np.ones(n, np.float32))  # fmt: skip


@pytest.mark.slow
def test_sharded_prioritized_replay_samples_like_one_buffer(local_ray, tmp_path: Path):
    from rlplat.config import ReplayConfig
    from rlplat.experience.sharded import ShardedReplay

    spaces = envs.spaces(config.EnvConfig(id="test_envs:Corridor"))
    cfg = ReplayConfig(type="prioritized", capacity=8, shards=2, alpha=1.0,
                       priority_epsilon=1e-9, beta={"start": 0.5, "end": 0.5})  # fmt: skip
    replay = ShardedReplay(cfg, spaces, seed=0)
    replay.add(Fragment(_rows([0, 1]), priorities=np.array([1.0, 2.0])))  # round-robin: shard 0
    replay.add(Fragment(_rows([2, 3]), priorities=np.array([3.0, 4.0])))  # shard 1
    assert len(replay) == 4
    replay.anneal(0.0)
    counts = np.zeros(4)
    for _ in range(60):
        s = replay.sample(50, 2)
        ids = s.batch.obs[..., 0].astype(int).ravel()
        counts += np.bincount(ids, minlength=4)
        # Importance weights are one buffer's: (p_i / p_min)^-beta, from global figures.
        prios = np.array([1.0, 2.0, 3.0, 4.0])[ids]
        np.testing.assert_allclose(s.weights.ravel(), (prios / 1.0) ** -0.5, rtol=1e-5)
    np.testing.assert_allclose(counts / counts.sum(), [0.1, 0.2, 0.3, 0.4], atol=0.02)
    # Priority updates go back to the shard an index came from.
    s = replay.sample(4)
    replay.update_priorities(s.indices, np.full(s.indices.shape, 10.0))
    replay.save(tmp_path)
    fresh = ShardedReplay(cfg, spaces, seed=1)
    fresh.load(tmp_path)
    assert len(fresh) == 4 and sorted(p.name for p in tmp_path.iterdir()) == [
        "shard-0", "shard-1"]  # fmt: skip
    # Global index = shard * 4 + local: shard 0 holds items 0, 1; shard 1 items 2, 3.
    prios = np.array([1.0, 2.0, 3.0, 4.0])
    updated = np.unique(s.indices)
    prios[(updated // 4) * 2 + updated % 4] = 10.0
    np.testing.assert_allclose(fresh._mass, [prios[:2].sum(), prios[2:].sum()], rtol=1e-6)
    fresh.close()
    replay.close()
