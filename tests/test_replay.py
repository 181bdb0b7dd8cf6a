"""The composed replay (rlplat/experience/replay.py) over a transition storage: the ring,
sampling shapes, checkpoints, and what the replay asks collectors to send."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from rlplat import config
from rlplat.experience.data import Fragment, Transitions
from rlplat.experience.replay import LocalReplay, RowSpec, row_spec
from rlplat.experience.sampler import PrioritizedSampler, UniformSampler
from rlplat.experience.storage import FrameStorage, TransitionStorage


def uniform(capacity: int, obs_shape=(2,), seed: int = 0) -> LocalReplay:
    storage = TransitionStorage(capacity, obs_shape)
    return LocalReplay(storage, UniformSampler(capacity, seed, dense=True))


def transitions(start: int, n: int) -> Fragment:
    ids = np.arange(start, start + n, dtype=np.float32)
    return Fragment(Transitions(
        obs=ids[:, None].repeat(2, 1),
        action=np.arange(start, start + n) % 3,
        reward=ids,
        next_obs=(ids + 1)[:, None].repeat(2, 1),
        discount=np.ones(n, np.float32),
    ))  # fmt: skip


def test_ring_buffer_keeps_the_newest():
    replay = uniform(5)
    replay.add(transitions(0, 3))
    assert len(replay) == 3
    replay.add(transitions(3, 4))  # wraps: holds 2..6
    assert len(replay) == 5
    assert sorted(replay.storage.rows(np.arange(5)).reward.tolist()) == [2, 3, 4, 5, 6]
    replay.add(transitions(100, 7))  # more than capacity at once: newest 5
    assert sorted(replay.storage.rows(np.arange(5)).reward.tolist()) == [102, 103, 104, 105, 106]
    replay.add(Fragment(None))  # a collector call that completed no n-step window
    assert len(replay) == 5


def test_sample_shapes_and_rows_stay_aligned():
    replay = uniform(100)
    replay.add(transitions(0, 50))
    s = replay.sample(8, num_batches=3)
    assert s.batch.obs.shape == (3, 8, 2) and s.batch.reward.shape == (3, 8)
    assert s.indices.shape == (3, 8) and s.weights is None and s.priorities is None
    np.testing.assert_array_equal(s.batch.obs[..., 0], s.batch.reward)
    np.testing.assert_array_equal(s.batch.next_obs[..., 0], s.batch.reward + 1)
    np.testing.assert_array_equal(s.batch.reward, s.indices)
    assert s.batch.reward.max() < 50


def test_uniform_sampling_covers_the_buffer_evenly():
    replay = uniform(10, seed=1)
    replay.add(transitions(0, 10))
    counts = np.bincount(replay.sample(1000, 20).batch.reward.astype(int).ravel(), minlength=10)
    # 20,000 draws over 10 items: 2,000 each; 5 sigma ~ 210.
    assert np.all(np.abs(counts - 2000) < 250), counts


def test_a_uniform_draw_is_one_integers_call_on_the_seeded_generator():
    """Seeded runs keep their minibatches: uniform replay's draws are exactly
    `default_rng(seed).integers(0, len, size=(batches, batch))`."""
    replay = uniform(100, seed=7)
    replay.add(transitions(0, 60))
    expected = np.random.default_rng(7).integers(0, 60, size=(3, 16))
    np.testing.assert_array_equal(replay.sample(16, 3).indices, expected)


def test_empty_sample_is_an_error():
    with pytest.raises(ValueError, match="empty"):
        uniform(4).sample(2)


def test_save_and_load_round_trip_including_rng(tmp_path):
    replay = uniform(8, seed=3)
    replay.add(transitions(0, 11))
    replay.save(tmp_path)
    expected = replay.sample(4, 2).batch.reward
    restored = uniform(8, seed=99)
    restored.load(tmp_path)
    assert len(restored) == 8
    np.testing.assert_array_equal(restored.sample(4, 2).batch.reward, expected)
    restored.add(transitions(50, 1))
    replay.add(transitions(50, 1))
    everything = np.arange(8)
    np.testing.assert_array_equal(
        restored.storage.rows(everything).reward, replay.storage.rows(everything).reward
    )


def test_a_checkpoint_in_the_earlier_single_class_layout_loads(tmp_path):
    """replay.npz/replay.json as the single-class buffers wrote them (the same keys):
    checkpoints from before the composed replay resume."""
    ids = np.arange(6, dtype=np.float32)
    np.savez(tmp_path / "replay.npz", obs=ids[:, None], action=np.zeros(6, np.int64),
             reward=ids, next_obs=ids[:, None] + 1, discount=np.ones(6, np.float32),
             priorities=np.array([1.0, 2, 3, 4, 5, 6]))  # fmt: skip
    rng = np.random.default_rng(5).bit_generator.state
    meta = {"pos": 6, "size": 6, "rng": rng, "max_priority": 6.0, "beta": 0.55}
    (tmp_path / "replay.json").write_text(json.dumps(meta))
    replay = LocalReplay(TransitionStorage(10, (1,)), PrioritizedSampler(10, seed=0))
    replay.load(tmp_path)
    assert len(replay) == 6 and replay.sampler.is_weights.beta == 0.55
    assert replay.sampler.mass()[:2] == (21.0, 1.0)
    replay.add(Fragment(Transitions(*(a[:1] for a in (ids[:, None], np.zeros(6, np.int64), ids,
                                                      ids[:, None], ids)))))  # fmt: skip
    assert replay.sampler.mass()[0] == 27.0  # a new item comes in at the max priority, 6


def test_a_frame_checkpoint_does_not_load_into_a_transition_replay(tmp_path):
    (tmp_path / "replay.json").write_text(json.dumps({"kind": "frames", "size": 0}))
    with pytest.raises(ValueError, match="holds a frames replay.*replay.frames: true"):
        uniform(4).load(tmp_path)


def _cfg(**over) -> config.ExperimentConfig:
    return config.parse(tiny_config(**over))


class _Agent:
    on_policy, n_step, gamma = False, 3, 0.9


def test_the_replay_says_what_collectors_send():
    """n-step transitions for a transition storage (with Ape-X priorities where asked
    for), one-step rows for the frame storage and for on-policy agents."""
    plain = _cfg(replay={"type": "uniform", "capacity": 100})
    assert row_spec(plain, _Agent()) == RowSpec(3, 0.9, priorities=False)
    per = {"type": "prioritized", "capacity": 100}
    assert row_spec(_cfg(replay=per), _Agent()) == RowSpec(3, 0.9, priorities=False)  # max
    ray = {"num_actors": 2, "envs_per_actor": 1}
    assert row_spec(_cfg(replay=per, collect=ray), _Agent()) == RowSpec(3, 0.9, True)  # td
    per_max = {**per, "initial_priority": "max"}
    assert not row_spec(_cfg(replay=per_max, collect=ray), _Agent()).priorities
    frames = _cfg(replay={"type": "prioritized", "capacity": 100, "frames": True})
    assert frames.replay.n_step_at == "sample"
    assert row_spec(frames, _Agent()) == RowSpec(None, 0.9)

    class OnPolicy(_Agent):
        on_policy = True

    assert row_spec(plain, OnPolicy()).n_step is None


OLD = Path(__file__).parent / "data" / "replay_ac9907a"


@pytest.mark.parametrize("kind", ["uniform", "prioritized", "frames"])
def test_checkpoints_of_the_single_class_buffers_resume_and_sample_alike(kind: str):
    """tests/data/replay_ac9907a: replays saved by the buffers before they were composed
    of a storage and a sampler (commit ac9907a), with the sample each drew right after
    saving. Loaded now, each draws that same sample: data, priorities, beta and RNG."""
    expected = json.loads((OLD / "expected.json").read_text())[kind]
    if kind == "frames":
        storage = FrameStorage(2 * 40, (6, 5, 4), num_streams=2, n_step=3, gamma=0.9)
        replay = LocalReplay(storage, PrioritizedSampler(storage.capacity, seed=0))
    elif kind == "prioritized":
        replay = LocalReplay(TransitionStorage(50, (3,)), PrioritizedSampler(50, seed=0))
    else:
        replay = uniform(50, obs_shape=(3,))
    replay.load(OLD / kind)
    s = replay.sample(8, 1 if kind == "frames" else 2)
    np.testing.assert_array_equal(s.indices, expected["indices"])
    np.testing.assert_allclose(s.batch.reward, expected["reward"], rtol=1e-6)
    if expected["weights"] is not None:
        np.testing.assert_allclose(s.weights, expected["weights"], rtol=1e-6)
    if kind == "frames":
        assert int(s.batch.obs.astype(np.int64).sum()) == expected["obs_sum"]
        np.testing.assert_allclose(s.batch.discount, expected["discount"], rtol=1e-6)
