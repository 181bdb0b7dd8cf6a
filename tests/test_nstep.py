"""n-step returns (rlplat/experience/nstep.py): the one window fold, and the collectors'
accumulator over streams that arrive in chunks."""

from __future__ import annotations

import numpy as np
import pytest

from rlplat.experience.data import Transitions
from rlplat.experience.nstep import NStepAccumulator, discount, window


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
    asm = NStepAccumulator(3, g, num_envs=1)
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
    asm = NStepAccumulator(2, 1.0, num_envs=2)
    # Rows are (step, env): env 0 gets rewards 1, 3, 5; env 1 gets 2, 4, 6.
    t = stream([1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 0, 0])
    out = asm.add(t)
    np.testing.assert_allclose(sorted(out.reward), [1 + 3, 2 + 4])
    t2 = stream([5, 6], [0, 0], [0, 0])
    out = asm.add(t2)
    np.testing.assert_allclose(sorted(out.reward), [3 + 5, 4 + 6])


def test_one_step_assembly_is_gamma_times_not_terminated():
    asm = NStepAccumulator(1, 0.9, num_envs=1)
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
    asm = NStepAccumulator(n, 0.9, num_envs)
    got = []
    for t in chunks:
        out = asm.add(t)
        if out is not None:
            got += zip(out.obs[:, 0].tolist(), out.reward.tolist(), out.next_obs[:, 0].tolist(),
                       out.discount.tolist(), strict=True)  # fmt: skip
    expected = _reference_nstep(n, 0.9, num_envs, chunks)
    assert len(got) == len(expected) > 0
    np.testing.assert_allclose(np.array(sorted(got)), np.array(expected), rtol=1e-5, atol=1e-5)


def test_window_folds_up_to_the_first_episode_end_and_only_over_seen_steps():
    reward = np.array([[1.0, 1.0, 1.0], [2.0, 2.0, 2.0], [4.0, 4.0, 4.0]], np.float32)
    last = np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0]], bool)  # column 1 ends at once
    inside = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0]], bool)  # column 2 not seen at k=2
    w = window(reward, last, 0.5, inside)
    np.testing.assert_allclose(w.ret, [1 + 1 + 1, 1, 1 + 1])
    np.testing.assert_array_equal(w.steps, [3, 1, 2])
    np.testing.assert_array_equal(w.complete, [True, True, False])
    np.testing.assert_allclose(discount(0.5, w.steps, np.array([True, False, False])),
                               [0.0, 0.5, 0.25])  # fmt: skip
