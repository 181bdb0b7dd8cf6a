"""n-step returns: `window` is the one place they are formed. Two callers hand it windows
of consecutive steps: `NStepAccumulator`, in a collector, over each env's stream as it
arrives; and the frame storage (rlplat/experience/storage.py), at sample time, over the
steps it keeps in order. Which of the two runs is the replay's choice
(`experience.replay.row_spec`).

A window's transition: obs_t, a_t, R = sum_{k<m} gamma^k r_{t+k}, next_obs = obs_{t+m}, and
`discount` = gamma^m if the episode goes on after t+m-1, 0 if it terminated inside the
window. The sum stops at any episode end; termination also stops the bootstrap, while
time-limit truncation keeps it (discount gamma^m, next_obs = the final observation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlplat.experience.data import Transitions


@dataclass
class Window:
    """What `window` found for each start."""

    ret: np.ndarray  # float64: the discounted sum of the rewards taken
    steps: np.ndarray  # int64: m, the steps taken (1..n)
    complete: bool | np.ndarray  # whether the window closed (n steps, or an episode end)


def window(
    reward: np.ndarray, last: np.ndarray, gamma: float, inside: np.ndarray | None = None
) -> Window:
    """Fold the windows `reward[k]`, `last[k]` (k = 0..n-1: the k-th step after each start,
    any shape after the first axis) up to the first episode end. `inside[k]`: whether that
    step has been seen yet (a collector's stream may end mid-window); None: all were."""
    shape = reward.shape[1:]
    ret = np.zeros(shape, np.float64)
    steps = np.zeros(shape, np.int64)
    alive = np.ones(shape, bool)  # the window is still open
    closed = np.zeros(shape, bool)  # the window ended at an episode end
    for k in range(len(reward)):
        take = alive if inside is None else alive & inside[k]
        ret += np.where(take, gamma**k * reward[k], 0.0)
        steps += take
        ended = take & last[k]
        closed |= ended
        alive = take & ~ended
    return Window(ret, steps, closed | alive)


def discount(gamma: float, steps: np.ndarray, terminated: np.ndarray) -> np.ndarray:
    """The bootstrapped value's multiplier: gamma^m, or 0 after a termination."""
    return (gamma ** steps.astype(np.float64) * ~terminated).astype(np.float32)


class NStepAccumulator:
    """Turns each env's stream of one-step transitions into n-step transitions.

    Input rows are ordered (step, env) as collectors return them, with `last` flags; a
    start whose window is not complete yet waits for the next call (at most n - 1 rows per
    env are carried). Vectorised over (time, env): it runs in every collector's hot path,
    where a per-row Python loop was a visible share of a LunarLander collector's time.
    With n = 1 this is just discount = gamma * (not terminated).
    """

    _FIELDS = ("obs", "action", "reward", "next_obs", "discount", "last")

    def __init__(self, n: int, gamma: float, num_envs: int):
        self.n, self.gamma, self.num_envs = n, gamma, num_envs
        self.reset()

    def reset(self) -> None:
        """Forget partial windows (after a resume the envs start new episodes)."""
        self._carry: dict[str, np.ndarray] | None = None
        self._carry_pending: np.ndarray | None = None

    def add(self, t: Transitions) -> Transitions | None:
        if t.last is None:
            raise ValueError("n-step returns need `last` flags on the transitions")
        n_env = self.num_envs
        steps = len(t) // n_env
        data = {f: getattr(t, f).reshape(steps, n_env, *getattr(t, f).shape[1:])
                for f in self._FIELDS}  # fmt: skip
        pending = np.ones((steps, n_env), bool)
        if self._carry is not None:
            data = {f: np.concatenate([self._carry[f], data[f]]) for f in self._FIELDS}
            pending = np.concatenate([self._carry_pending, pending])
        length = len(pending)
        pos = np.arange(length)[None, :] + np.arange(self.n)[:, None]  # [k, start]
        inside = np.broadcast_to((pos < length)[..., None], (self.n, length, n_env))
        pos = np.minimum(pos, length - 1)
        w = window(data["reward"][pos], data["last"][pos], self.gamma, inside)
        emit = pending & w.complete
        keep = min(self.n - 1, length)
        self._carry = {f: a[length - keep :] for f, a in data.items()}
        self._carry_pending = (pending & ~w.complete)[length - keep :]
        rows, envs_ = np.nonzero(emit)  # (time, env) order
        if len(rows) == 0:
            return None
        m = w.steps[rows, envs_]
        ends = rows + m - 1
        return Transitions(
            obs=data["obs"][rows, envs_],
            action=data["action"][rows, envs_],
            reward=w.ret[rows, envs_].astype(np.float32),
            next_obs=data["next_obs"][ends, envs_],
            discount=discount(self.gamma, m, data["discount"][ends, envs_] == 0.0),
        )
