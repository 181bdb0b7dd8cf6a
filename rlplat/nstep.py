"""n-step transitions, assembled where each env's stream is seen in order: in the collector
(rlplat/collect.py), before anything travels to replay."""

from __future__ import annotations

import numpy as np

from rlplat.data import Transitions


class NStepAssembler:
    """Turns each env's stream of one-step transitions into n-step transitions.

    Output rows: obs_t, a_t, R = sum_{k<m} gamma^k r_{t+k}, next_obs = obs_{t+m}, and
    `discount` = gamma^m if the episode goes on after t+m-1, 0 if it terminated inside the
    window. The sum stops at any episode end; termination also stops the bootstrap, while
    time-limit truncation keeps it (discount gamma^m, next_obs = the final observation).
    With n = 1 this is just discount = gamma * (not terminated).
    Input rows are ordered (step, env) as collectors return them, with `last` flags; a
    start whose window is not complete yet waits for the next call (at most n - 1 rows per
    env are carried). Vectorised over (time, env): it runs in every collector's hot path,
    where a per-row Python loop was a visible share of a LunarLander collector's time.
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
            raise ValueError("n-step assembly needs `last` flags on the transitions")
        n_env = self.num_envs
        steps = len(t) // n_env
        data = {f: getattr(t, f).reshape(steps, n_env, *getattr(t, f).shape[1:])
                for f in self._FIELDS}  # fmt: skip
        pending = np.ones((steps, n_env), bool)
        if self._carry is not None:
            data = {f: np.concatenate([self._carry[f], data[f]]) for f in self._FIELDS}
            pending = np.concatenate([self._carry_pending, pending])
        length = len(pending)
        start = np.arange(length)[:, None]
        cols = np.arange(n_env)[None, :]
        ret = np.zeros((length, n_env), np.float64)
        end = np.broadcast_to(start, (length, n_env)).copy()
        alive = np.ones((length, n_env), bool)  # window still open
        closed = np.zeros((length, n_env), bool)  # window ended by an episode end
        for k in range(self.n):
            pos = start + k
            inside = pos < length
            pos = np.minimum(pos, length - 1)
            take = alive & inside
            ret += np.where(take, self.gamma**k * data["reward"][pos, cols], 0.0)
            end = np.where(take, pos, end)
            ended = take & data["last"][pos, cols]
            closed |= ended
            alive &= inside & ~ended
        complete = closed | alive  # alive after n in-range steps: a full window
        emit = pending & complete
        keep = min(self.n - 1, length)
        self._carry = {f: a[length - keep :] for f, a in data.items()}
        self._carry_pending = (pending & ~complete)[length - keep :]
        rows, envs_ = np.nonzero(emit)  # (time, env) order
        if len(rows) == 0:
            return None
        ends = end[rows, envs_]
        scale = self.gamma ** (ends - rows + 1).astype(np.float64)
        return Transitions(
            obs=data["obs"][rows, envs_],
            action=data["action"][rows, envs_],
            reward=ret[rows, envs_].astype(np.float32),
            next_obs=data["next_obs"][ends, envs_],
            discount=(scale * data["discount"][ends, envs_]).astype(np.float32),
        )
