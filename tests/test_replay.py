from __future__ import annotations

import numpy as np
import pytest

from rlplat.data import Transitions
from rlplat.replay import UniformReplay


def transitions(start: int, n: int) -> Transitions:
    ids = np.arange(start, start + n, dtype=np.float32)
    return Transitions(
        obs=ids[:, None].repeat(2, 1),
        action=np.arange(start, start + n) % 3,
        reward=ids,
        next_obs=(ids + 1)[:, None].repeat(2, 1),
        discount=np.ones(n, np.float32),
    )


def test_ring_buffer_keeps_the_newest():
    replay = UniformReplay(5, (2,), seed=0)
    replay.add(transitions(0, 3))
    assert len(replay) == 3
    replay.add(transitions(3, 4))  # wraps: holds 2..6
    assert len(replay) == 5
    assert sorted(replay._data["reward"].tolist()) == [2, 3, 4, 5, 6]
    replay.add(transitions(100, 7))  # more than capacity at once: newest 5
    assert sorted(replay._data["reward"].tolist()) == [102, 103, 104, 105, 106]


def test_sample_shapes_and_rows_stay_aligned():
    replay = UniformReplay(100, (2,), seed=0)
    replay.add(transitions(0, 50))
    s = replay.sample(8, num_batches=3)
    assert s.batch.obs.shape == (3, 8, 2) and s.batch.reward.shape == (3, 8)
    assert s.indices.shape == (3, 8) and s.weights is None
    np.testing.assert_array_equal(s.batch.obs[..., 0], s.batch.reward)
    np.testing.assert_array_equal(s.batch.next_obs[..., 0], s.batch.reward + 1)
    assert s.batch.reward.max() < 50


def test_uniform_sampling_covers_the_buffer_evenly():
    replay = UniformReplay(10, (2,), seed=1)
    replay.add(transitions(0, 10))
    counts = np.bincount(replay.sample(1000, 20).batch.reward.astype(int).ravel(), minlength=10)
    # 20,000 draws over 10 items: 2,000 each; 5 sigma ~ 210.
    assert np.all(np.abs(counts - 2000) < 250), counts


def test_empty_sample_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        UniformReplay(4, (2,)).sample(2)


def test_save_and_load_round_trip_including_rng(tmp_path):
    replay = UniformReplay(8, (2,), seed=3)
    replay.add(transitions(0, 11))
    replay.save(tmp_path)
    expected = replay.sample(4, 2).batch.reward
    restored = UniformReplay(8, (2,), seed=99)
    restored.load(tmp_path)
    assert len(restored) == 8 and restored._pos == replay._pos
    np.testing.assert_array_equal(restored.sample(4, 2).batch.reward, expected)
    restored.add(transitions(50, 1))
    replay.add(transitions(50, 1))
    np.testing.assert_array_equal(restored._data["reward"], replay._data["reward"])
