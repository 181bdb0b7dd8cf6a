from __future__ import annotations

import numpy as np
from mc_returns import discounted_returns

from rlplat.agents.advantages import gae


def col(*xs):
    return np.asarray(xs, np.float64)[:, None]  # [T, 1]


def test_gae_against_hand_computed_values_with_termination_and_truncation():
    g, lam = 0.9, 0.5
    r = col(1, 2, 3, 4, 5)
    v = col(10, 20, 30, 40, 50)
    # Step 1 terminates (no bootstrap); step 3 is truncated (bootstraps from V(final)=7);
    # step 4 is the rollout's last step, bootstrapping from V(next obs)=8.
    nv = col(20, 99, 40, 7, 8)
    term = col(0, 1, 0, 0, 0)
    last = col(0, 1, 0, 1, 0)
    adv, ret = gae(r, v, nv, term, last, g, lam)
    d0 = 1 + g * 20 - 10
    d1 = 2 - 20  # terminal: the 99 is ignored
    d2 = 3 + g * 40 - 30
    d3 = 4 + g * 7 - 40  # truncation: bootstrap from the final observation's value
    d4 = 5 + g * 8 - 50
    a4 = d4
    a3 = d3  # episode boundary after step 3: nothing flows back from step 4
    a2 = d2 + g * lam * a3
    a1 = d1
    a0 = d0 + g * lam * a1
    np.testing.assert_allclose(adv[:, 0], [a0, a1, a2, a3, a4], rtol=1e-6)
    np.testing.assert_allclose(ret[:, 0], adv[:, 0] + v[:, 0], rtol=1e-6)


def test_envs_are_independent_columns():
    r = np.array([[1.0, 0.0], [1.0, 0.0]])
    v = np.zeros((2, 2))
    nv = np.array([[0.0, 5.0], [0.0, 5.0]])
    term = np.array([[0, 0], [1, 0]])
    last = np.array([[0, 0], [1, 0]])
    adv, _ = gae(r, v, nv, term, last, 1.0, 1.0)
    np.testing.assert_allclose(adv[:, 0], [2.0, 1.0])
    np.testing.assert_allclose(adv[:, 1], [10.0, 5.0])


def returns_to_go(rewards, next_values, terminated, last, gamma):
    """What REINFORCE trains on: GAE with lambda = 1 and no baseline."""
    _, returns = gae(rewards, np.zeros_like(rewards), next_values, terminated, last, gamma, 1.0)
    return returns


def test_returns_to_go_restart_at_episode_ends():
    r = col(1, 1, 1, 1)
    zeros = np.zeros_like(r)
    term = col(0, 1, 0, 0)
    last = col(0, 1, 0, 0)
    ret = returns_to_go(r, zeros, term, last, 0.5)
    np.testing.assert_allclose(ret[:, 0], [1.5, 1.0, 1.5, 1.0])
    # A truncated episode is completed with the bootstrapped value.
    ret = returns_to_go(r, col(0, 0, 0, 4), col(0, 0, 0, 0), col(0, 0, 0, 1), 0.5)
    np.testing.assert_allclose(ret[:, 0], [1 + 0.5 + 0.25 + 0.125 * 3, 1 + 0.5 + 0.25 * 3,
                                           1 + 0.5 * 3, 3.0])  # fmt: skip


def test_returns_to_go_match_the_written_out_reference():
    # tests/mc_returns.py is what test_ppo checks REINFORCE against.
    rng = np.random.default_rng(0)
    r = rng.normal(size=(50, 3))
    last = rng.random((50, 3)) < 0.1
    term = last & (rng.random((50, 3)) < 0.5)
    nv = np.where(last, rng.normal(size=(50, 3)), 0.0)
    nv[-1] = rng.normal(size=3)  # the rollout's end bootstraps too
    np.testing.assert_allclose(
        returns_to_go(r, nv, term, last, 0.9), discounted_returns(r, nv, term, last, 0.9), rtol=1e-5
    )
