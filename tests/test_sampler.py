"""Samplers (rlplat/experience/sampler.py): the sum tree's draws, uniform and prioritized
sampling, importance weights, and their checkpoints. Prioritized cases run through a
replay of whole transitions, as training uses them."""

from __future__ import annotations

import numpy as np
import pytest

from rlplat.experience.data import Fragment, Transitions
from rlplat.experience.replay import LocalReplay
from rlplat.experience.sampler import PrioritizedSampler, SumTree, UniformSampler, stratified
from rlplat.experience.storage import TransitionStorage


def rows(n: int, start: int = 0) -> Fragment:
    ids = np.arange(start, start + n, dtype=np.float32)
    return Fragment(Transitions(ids[:, None], np.zeros(n, np.int64), ids, ids[:, None] + 1,
                                np.ones(n, np.float32)))  # fmt: skip


def prioritized(capacity: int, obs_shape=(1,), seed: int = 0, **kw) -> LocalReplay:
    return LocalReplay(
        TransitionStorage(capacity, obs_shape), PrioritizedSampler(capacity, seed, **kw)
    )


def priorities(replay: LocalReplay) -> np.ndarray:
    return replay.sampler.priorities(np.arange(len(replay)))


def filled(prios: list[float], capacity: int | None = None, **kw) -> LocalReplay:
    replay = prioritized(capacity or len(prios), **kw)
    replay.add(rows(len(prios)))
    replay.update_priorities(np.arange(len(prios)), np.asarray(prios))
    return replay


def test_sampling_frequencies_match_priorities():
    prios = [1.0, 2.0, 3.0, 4.0, 0.5, 8.0, 0.0, 1.5, 6.0]  # 9 items: not a power of two
    replay = filled(prios, capacity=12, alpha=1.0, priority_epsilon=1e-9)
    draws = np.concatenate([replay.sample(500, 20).indices.ravel() for _ in range(20)])
    freq = np.bincount(draws, minlength=len(prios)) / len(draws)
    expected = np.asarray(prios) / sum(prios)
    # 200,000 draws: the standard error of each frequency is below 0.0011.
    np.testing.assert_allclose(freq, expected, atol=0.004)
    assert freq[6] == 0.0  # priority 0 (plus a 1e-9 epsilon) is essentially never drawn


def test_alpha_flattens_priorities():
    replay = filled([1.0, 4.0], alpha=0.5, priority_epsilon=1e-9)
    np.testing.assert_allclose(priorities(replay), [1.0, 2.0], rtol=1e-6)


def test_trees_stay_consistent_after_updates_and_overwrites():
    replay = prioritized(6, seed=1, alpha=1.0, priority_epsilon=0.0)
    replay.add(rows(4))
    assert np.all(priorities(replay) == 1.0)  # new items at max priority (initially 1)
    replay.update_priorities(np.array([0, 2, 2]), np.array([5.0, 0.25, 0.5]))
    np.testing.assert_allclose(priorities(replay), [5.0, 1.0, 0.5, 1.0])
    replay.add(rows(3, start=10))  # wraps: slot 0 is overwritten, at max priority 5
    np.testing.assert_allclose(priorities(replay), [5.0, 1.0, 0.5, 1.0, 5.0, 5.0])
    assert replay.sampler._tree.total == pytest.approx(17.5)
    assert replay.sampler._tree.low == pytest.approx(0.5)


def test_importance_weights_match_hand_computed_values():
    replay = filled([1.0, 2.0, 3.0, 4.0], alpha=1.0, priority_epsilon=1e-12)
    replay.anneal(0.0)  # beta = 0.4
    s = replay.sample(64, 4)
    p = np.array([1.0, 2.0, 3.0, 4.0]) / 10.0
    n = 4
    w = (n * p) ** -0.4 / (n * p.min()) ** -0.4
    np.testing.assert_allclose(s.weights, w[s.indices], rtol=1e-5)
    assert s.weights.max() <= 1.0 and s.weights.shape == (4, 64)
    assert replay.anneal(0.5) == {"replay/beta": pytest.approx(0.7)}
    s = replay.sample(64)
    np.testing.assert_allclose(s.weights, ((p / p.min()) ** -0.7)[s.indices], rtol=1e-5)
    np.testing.assert_array_equal(s.batch.reward, s.indices)  # rows follow their indices


def test_save_and_load_keep_priorities(tmp_path):
    replay = filled([1.0, 2.0, 3.0], capacity=5, alpha=1.0, priority_epsilon=0.0)
    replay.anneal(0.25)
    replay.save(tmp_path)
    restored = prioritized(5, alpha=1.0)
    restored.load(tmp_path)
    np.testing.assert_allclose(priorities(restored), [1.0, 2.0, 3.0])
    assert restored.sampler._tree.total == pytest.approx(
        6.0
    ) and restored.sampler._tree.low == pytest.approx(1.0)
    assert restored.sampler.is_weights.beta == pytest.approx(replay.sampler.is_weights.beta)
    restored.add(rows(1, 9))
    assert priorities(restored)[-1] == pytest.approx(3.0)  # max priority survived too


def test_million_capacity_fits_and_samples():
    replay = prioritized(1_000_000, (8,))
    t = rows(5000).transitions
    replay.add(Fragment(Transitions(np.repeat(t.obs, 8, 1), t.action, t.reward,
                                    np.repeat(t.next_obs, 8, 1), t.discount)))  # fmt: skip
    s = replay.sample(256)
    assert s.indices.max() < 5000 and s.batch.obs.shape == (1, 256, 8)


def test_collector_priorities_set_new_items_and_raise_the_max():
    replay = prioritized(5, alpha=1.0, priority_epsilon=0.0)
    replay.add(Fragment(rows(3).transitions, priorities=np.array([1.0, 2.0, 5.0])))
    np.testing.assert_allclose(priorities(replay), [1.0, 2.0, 5.0])
    replay.add(rows(1))  # no estimates: the max priority seen
    np.testing.assert_allclose(priorities(replay), [1.0, 2.0, 5.0, 5.0])


def test_the_tree_descent_never_lands_on_a_zero_leaf():
    """Float round-off can push a target past the filled leaves, or a target of 0 can sit
    on leading zeros (the frame storage's pads): the descent stays on drawable leaves."""
    tree = SumTree(16)
    tree.set(np.array([3, 4, 9]), np.array([0.1, 0.2, 0.3]))
    targets = np.array([0.0, 1e-300, 0.1, 0.3, 0.6, np.nextafter(0.6, 1), 0.6 * (1 + 1e-12), 5.0])
    found = tree.find(targets)
    assert set(found.tolist()) <= {3, 4, 9}
    assert found[0] == 3 and found[-1] == 9 and found[-2] == 9


def test_a_prefix_filled_tree_draws_as_the_clamped_descent_did():
    """On a ring filled from 0 (a transition storage), the descent equals a plain descent
    clamped to the last filled leaf: seeded prioritized runs keep their minibatches."""
    rng = np.random.default_rng(0)
    for size in (1, 5, 100, 1000):
        tree = SumTree(1024)
        prios = rng.random(size) ** 3 + 1e-6
        tree.set(np.arange(size), prios)
        targets = np.concatenate([rng.random(500) * tree.total, [tree.total, tree.total * 1.01]])
        plain, left = np.zeros(len(targets), np.int64), targets.copy()
        for i, t in enumerate(left):  # the per-target definition: first prefix sum >= t
            plain[i] = min(np.searchsorted(np.cumsum(prios), t), size - 1)
        np.testing.assert_array_equal(tree.find(targets), plain)


def test_stratified_draws_cover_each_slice_of_the_mass():
    tree = SumTree(8)
    tree.set(np.arange(4), np.array([1.0, 1.0, 1.0, 1.0]))
    idx = stratified(tree, 4, np.random.default_rng(0))
    assert sorted(idx.tolist()) == [0, 1, 2, 3]  # one draw per quarter of the mass


def test_sparse_uniform_draws_only_drawable_items_alike():
    sampler = UniformSampler(10, seed=0, dense=False)
    sampler.store(np.arange(10), np.array([0, 1, 1, 0, 1, 0, 0, 1, 0, 0], bool))
    assert len(sampler) == 4 and sampler.mass() == (4.0, 1.0, 4)
    sampler.store(np.array([1, 2]), np.array([False, True]))  # 1 stops being drawable
    assert len(sampler) == 3
    idx, prios = sampler.draw(30_000)
    counts = np.bincount(idx, minlength=10)
    assert set(np.flatnonzero(counts).tolist()) == {2, 4, 7} and np.all(prios == 1.0)
    assert np.all(np.abs(counts[[2, 4, 7]] - 10_000) < 500), counts  # 5 sigma ~ 410
    assert sampler.weights(prios) is None


def test_priority_updates_skip_items_no_longer_drawable():
    sampler = PrioritizedSampler(4, seed=0, alpha=1.0, priority_epsilon=0.0)
    sampler.store(np.arange(4), np.array([1, 1, 1, 0], bool))
    sampler.store(np.array([1]), np.array([False]))  # overwritten since it was drawn
    sampler.update(np.array([0, 1, 3]), np.array([7.0, 9.0, 9.0]))
    np.testing.assert_allclose(sampler._tree.leaf(np.arange(4)), [7.0, 0.0, 1.0, 0.0])
    assert len(sampler) == 2 and sampler.mass()[0] == 8.0
    sampler.store(np.array([3]))
    assert sampler._tree.leaf(np.array([3]))[0] == 7.0  # the max seen counts live items only
