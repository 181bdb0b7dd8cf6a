"""Prioritized replay (sum-tree / min-tree), IS weights and n-step assembly."""

from __future__ import annotations

import numpy as np
import pytest

from rlplat.data import Transitions
from rlplat.nstep import NStepAssembler
from rlplat.replay import PrioritizedReplay


def rows(n: int, start: int = 0) -> Transitions:
    ids = np.arange(start, start + n, dtype=np.float32)
    return Transitions(ids[:, None], np.zeros(n, np.int64), ids, ids[:, None] + 1,
                       np.ones(n, np.float32))  # fmt: skip


def filled(prios: list[float], capacity: int | None = None, **kw) -> PrioritizedReplay:
    replay = PrioritizedReplay(capacity or len(prios), (1,), seed=0, **kw)
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
    np.testing.assert_allclose(replay.priorities(), [1.0, 2.0], rtol=1e-6)


def test_trees_stay_consistent_after_updates_and_overwrites():
    replay = PrioritizedReplay(6, (1,), seed=1, alpha=1.0, priority_epsilon=0.0)
    replay.add(rows(4))
    assert np.all(replay.priorities() == 1.0)  # new items at max priority (initially 1)
    replay.update_priorities(np.array([0, 2, 2]), np.array([5.0, 0.25, 0.5]))
    np.testing.assert_allclose(replay.priorities(), [5.0, 1.0, 0.5, 1.0])
    replay.add(rows(3, start=10))  # wraps: slot 0 is overwritten, at max priority 5
    np.testing.assert_allclose(replay.priorities(), [5.0, 1.0, 0.5, 1.0, 5.0, 5.0])
    assert replay._tree.total == pytest.approx(17.5)
    assert replay._tree.low == pytest.approx(0.5)


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
    restored = PrioritizedReplay(5, (1,), alpha=1.0)
    restored.load(tmp_path)
    np.testing.assert_allclose(restored.priorities(), [1.0, 2.0, 3.0])
    assert restored._tree.total == pytest.approx(6.0) and restored._tree.low == pytest.approx(1.0)
    assert restored.beta == pytest.approx(replay.beta)
    restored.add(rows(1, 9))
    assert restored.priorities()[-1] == pytest.approx(3.0)  # max priority survived too


def test_million_capacity_fits_and_samples():
    replay = PrioritizedReplay(1_000_000, (8,), seed=0)
    t = rows(5000)
    replay.add(Transitions(np.repeat(t.obs, 8, 1), t.action, t.reward, np.repeat(t.next_obs, 8, 1),
                           t.discount))  # fmt: skip
    s = replay.sample(256)
    assert s.indices.max() < 5000 and s.batch.obs.shape == (1, 256, 8)


def stream(rewards, terminated, truncated, num_envs=1) -> Transitions:
    n = len(rewards)
    obs = np.arange(n, dtype=np.float32)[:, None]
    return Transitions(
        obs=obs, action=np.arange(n) % 2, reward=np.asarray(rewards, np.float32),
        next_obs=obs + 0.5,  # next_obs of step t is "t.5": easy to see which one is used
        discount=1.0 - np.asarray(terminated, np.float32),
        last=np.asarray(terminated, bool) | np.asarray(truncated, bool),
    )  # fmt: skip


def test_nstep_returns_stop_at_termination_and_bootstrap_after_truncation():
    g = 0.5
    asm = NStepAssembler(3, g, num_envs=1)
    # Episode 1: r=1,2,3,4 then terminates at step 3. Episode 2: r=10,20 truncated at 5.
    t = stream([1, 2, 3, 4, 10, 20], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 0, 1])
    out = asm.add(t)
    got = sorted(zip(out.obs[:, 0], out.reward, out.next_obs[:, 0], out.discount, strict=True))
    expected = [
        (0, 1 + g * 2 + g * g * 3, 2.5, g**3),  # full window, episode goes on: gamma^3
        (1, 2 + g * 3 + g * g * 4, 3.5, 0.0),  # window reaches the terminal step: no bootstrap
        (2, 3 + g * 4, 3.5, 0.0),
        (3, 4, 3.5, 0.0),
        (4, 10 + g * 20, 5.5, g**2),  # truncation: sum stops, bootstrap from final obs
        (5, 20, 5.5, g),
    ]
    assert len(got) == len(expected)
    for row, exp in zip(got, expected, strict=True):
        np.testing.assert_allclose(row, exp, rtol=1e-6)


def test_nstep_keeps_envs_apart_and_carries_windows_across_calls():
    asm = NStepAssembler(2, 1.0, num_envs=2)
    # Rows are (step, env): env 0 gets rewards 1, 3, 5; env 1 gets 2, 4, 6.
    t = stream([1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 0, 0])
    out = asm.add(t)
    np.testing.assert_allclose(sorted(out.reward), [1 + 3, 2 + 4])
    t2 = stream([5, 6], [0, 0], [0, 0])
    out = asm.add(t2)
    np.testing.assert_allclose(sorted(out.reward), [3 + 5, 4 + 6])


def test_one_step_assembly_is_gamma_times_not_terminated():
    asm = NStepAssembler(1, 0.9, num_envs=1)
    out = asm.add(stream([1, 2, 3], [0, 1, 0], [0, 0, 1]))
    np.testing.assert_allclose(out.discount, [0.9, 0.0, 0.9])
    np.testing.assert_allclose(out.reward, [1, 2, 3])


def _reference_nstep(n: int, gamma: float, num_envs: int, chunks: list[Transitions]):
    """The straightforward per-row n-step assembly, for checking the vectorised one."""
    pending: list[list[tuple]] = [[] for _ in range(num_envs)]
    out = []

    def emit(window):
        ret, scale = 0.0, 1.0
        for row in window:
            ret += scale * row[2]
            scale *= gamma
        return window[0][0], ret, window[-1][3], scale * window[-1][4]

    for t in chunks:
        for row in range(len(t)):
            p = pending[row % num_envs]
            p.append((float(t.obs[row, 0]), 0, float(t.reward[row]), float(t.next_obs[row, 0]),
                      float(t.discount[row]), bool(t.last[row])))  # fmt: skip
            if p[-1][5]:
                while p:
                    out.append(emit(p))
                    p.pop(0)
            elif len(p) == n:
                out.append(emit(p))
                p.pop(0)
    return sorted(out)


@pytest.mark.parametrize("n,num_envs", [(1, 1), (3, 1), (3, 4), (5, 3)])
def test_vectorised_nstep_matches_the_per_row_definition(n, num_envs):
    rng = np.random.default_rng(n * 10 + num_envs)
    chunks, start = [], 0
    for steps in rng.integers(1, 9, size=12):  # uneven chunks: windows cross calls
        rows = int(steps) * num_envs
        obs = np.arange(start, start + rows, dtype=np.float32)[:, None]
        start += rows
        term = rng.random(rows) < 0.1
        trunc = ~term & (rng.random(rows) < 0.05)
        chunks.append(Transitions(obs, np.zeros(rows, np.int64),
                                  rng.normal(size=rows).astype(np.float32), obs + 0.5,
                                  (1.0 - term).astype(np.float32), term | trunc))  # fmt: skip
    asm = NStepAssembler(n, 0.9, num_envs)
    got = []
    for t in chunks:
        out = asm.add(t)
        if out is not None:
            got += zip(out.obs[:, 0].tolist(), out.reward.tolist(), out.next_obs[:, 0].tolist(),
                       out.discount.tolist(), strict=True)  # fmt: skip
    expected = _reference_nstep(n, 0.9, num_envs, chunks)
    assert len(got) == len(expected) > 0
    np.testing.assert_allclose(np.array(sorted(got)), np.array(expected), rtol=1e-5, atol=1e-5)
