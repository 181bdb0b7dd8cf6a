"""Experience replay in numpy: uniform and prioritized ring buffers, and n-step assembly.

Both buffers share one interface (`add`, `sample`, `update_priorities`, `anneal`,
`save`/`load`), so the training loop never knows which one it drives.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rlplat.data import Transitions

if TYPE_CHECKING:
    from envs import EnvSpaces
    from rlplat.config import ReplayConfig


@dataclass
class Sample:
    batch: Transitions
    indices: np.ndarray
    weights: np.ndarray | None  # importance-sampling weights; None for uniform replay
    priorities: np.ndarray | None = None  # of the sampled items (for histograms)


class UniformReplay:
    """Fixed-capacity FIFO; uniform sampling with replacement."""

    _FIELDS = ("obs", "action", "reward", "next_obs", "discount")

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...] = (),
        action_dtype: np.dtype = np.int64,
        seed: int = 0,
    ):
        self.capacity = capacity
        self._data = {
            "obs": np.zeros((capacity, *obs_shape), np.float32),
            "action": np.zeros((capacity, *action_shape), action_dtype),
            "reward": np.zeros(capacity, np.float32),
            "next_obs": np.zeros((capacity, *obs_shape), np.float32),
            "discount": np.zeros(capacity, np.float32),
        }
        self._pos = 0
        self._size = 0
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self._size

    def add(self, t: Transitions, td_errors: np.ndarray | None = None) -> None:
        """Store `t`; `td_errors` (prioritized only) are initial |TD| estimates, e.g. a
        collector's, else new items get the max priority seen."""
        n = len(t)
        if n > self.capacity:  # keep only the newest `capacity`
            t = Transitions(*(getattr(t, f)[-self.capacity :] for f in self._FIELDS))
            n = self.capacity
        idx = (self._pos + np.arange(n)) % self.capacity
        for f in self._FIELDS:
            self._data[f][idx] = getattr(t, f)
        self._pos = int((self._pos + n) % self.capacity)
        self._size = min(self._size + n, self.capacity)

    def sample(self, batch_size: int, num_batches: int = 1) -> Sample:
        """`num_batches` minibatches at once: arrays are [num_batches, batch_size, ...]."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = self._rng.integers(0, self._size, size=(num_batches, batch_size))
        return Sample(self._gather(idx), idx, None)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Uniform replay has no priorities; the loop may call this regardless."""

    def anneal(self, progress: float) -> dict[str, float]:
        """Move schedules (prioritized: beta) to `progress` in [0, 1]; returns values to log."""
        return {}

    def _gather(self, idx: np.ndarray) -> Transitions:
        return Transitions(*(self._data[f][idx] for f in self._FIELDS))

    # -------------------------------------------------------------- checkpoints
    def save(self, path: Path) -> None:
        """Only the filled part is written; with the RNG state, sampling resumes exactly."""
        n = self._size
        arrays = {f: self._data[f][:n] for f in self._FIELDS}
        np.savez(path / "replay.npz", **arrays, **self._extra_arrays())
        meta = {"pos": self._pos, "size": n, "rng": self._rng.bit_generator.state}
        (path / "replay.json").write_text(json.dumps({**meta, **self._extra_meta()}))

    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _extra_meta(self) -> dict:
        return {}

    def _load_extra(self, arrays: np.lib.npyio.NpzFile, meta: dict) -> None:
        pass

    def load(self, path: Path) -> None:
        meta = json.loads((path / "replay.json").read_text())
        n = meta["size"]
        if n > self.capacity:
            raise ValueError(f"checkpoint replay holds {n} > capacity {self.capacity}")
        with np.load(path / "replay.npz") as arrays:
            for f in self._FIELDS:
                self._data[f][:n] = arrays[f]
            self._pos, self._size = meta["pos"] % self.capacity, n
            self._load_extra(arrays, meta)
        self._rng.bit_generator.state = meta["rng"]


class PrioritizedReplay(UniformReplay):
    """Proportional prioritized replay (Schaul et al. 2016) on a sum-tree and a min-tree.

    Item i is drawn with probability p_i^alpha / sum_k p_k^alpha (stratified: one draw per
    equal slice of the total mass); new items get the largest priority seen so far, so
    each is replayed at least about once. Importance weights (N * P(i))^-beta are divided
    by the largest possible weight, so they are <= 1; beta is annealed to 1 over the run.
    Sampling and updating are vectorised: O(log N) numpy operations per call.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...] = (),
        action_dtype: np.dtype = np.int64,
        seed: int = 0,
        alpha: float = 0.6,
        beta_start: float = 0.4,
        beta_end: float = 1.0,
        priority_epsilon: float = 1e-6,
    ):
        super().__init__(capacity, obs_shape, action_shape, action_dtype, seed)
        self.alpha, self.priority_epsilon = alpha, priority_epsilon
        self._beta_start, self._beta_end = beta_start, beta_end
        self.beta = beta_start
        self._depth = max(0, (capacity - 1).bit_length())
        self._leaves = 1 << self._depth  # power of two >= capacity
        self._sum = np.zeros(2 * self._leaves)
        self._min = np.full(2 * self._leaves, np.inf)
        self._max_priority = 1.0  # in alpha space: what new items get

    def anneal(self, progress: float) -> dict[str, float]:
        self.beta = self._beta_start + (self._beta_end - self._beta_start) * min(1.0, progress)
        return {"replay/beta": self.beta}

    def add(self, t: Transitions, td_errors: np.ndarray | None = None) -> None:
        n = min(len(t), self.capacity)
        idx = (self._pos + np.arange(n)) % self.capacity
        super().add(t)
        if td_errors is None:
            self._set(idx, np.full(n, self._max_priority))
        else:
            self.update_priorities(idx, np.asarray(td_errors)[-n:])

    def sample(self, batch_size: int, num_batches: int = 1) -> Sample:
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        n = batch_size * num_batches
        total = self._sum[1]
        targets = (np.arange(n) + self._rng.random(n)) * (total / n)
        idx = self._find(targets)
        prios = self._sum[idx + self._leaves]
        probs = prios / total
        min_prob = self._min[1] / total
        weights = (probs / min_prob) ** -self.beta  # = (N P(i))^-b / (N P_min)^-b
        shape = (num_batches, batch_size)
        order = self._rng.permutation(n)  # strata are sorted by position: mix them
        idx, prios, weights = idx[order], prios[order], weights[order]
        return Sample(
            self._gather(idx.reshape(shape)),
            idx.reshape(shape),
            weights.astype(np.float32).reshape(shape),
            prios.reshape(shape),
        )

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        prios = (np.abs(td_errors).ravel() + self.priority_epsilon) ** self.alpha
        self._set(indices.ravel(), prios)
        self._max_priority = max(self._max_priority, float(prios.max()))

    def priorities(self) -> np.ndarray:
        """Current priorities (alpha space) of the stored items."""
        return self._sum[self._leaves : self._leaves + self._size]

    # ------------------------------------------------------------------ trees
    def _set(self, idx: np.ndarray, prios: np.ndarray) -> None:
        nodes = idx + self._leaves
        self._sum[nodes] = prios
        self._min[nodes] = prios
        # Parents are recomputed from their children, so a parent listed twice just gets
        # the same value twice: no np.unique needed (it made updates 2x slower).
        for _ in range(self._depth):
            nodes //= 2
            left, right = 2 * nodes, 2 * nodes + 1
            self._sum[nodes] = self._sum[left] + self._sum[right]
            self._min[nodes] = np.minimum(self._min[left], self._min[right])

    def _find(self, targets: np.ndarray) -> np.ndarray:
        """Leaf index whose prefix-sum interval holds each target (vectorised descent)."""
        node = np.ones(len(targets), np.int64)
        targets = targets.copy()
        while node[0] < self._leaves:
            left = 2 * node
            left_sum = self._sum[left]
            go_right = targets > left_sum
            targets = np.where(go_right, targets - left_sum, targets)
            node = left + go_right
        # Float round-off can step past the last filled leaf: clamp into the filled range.
        return np.minimum(node - self._leaves, self._size - 1)

    # ------------------------------------------------------------- checkpoints
    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"priorities": self.priorities().copy()}

    def _extra_meta(self) -> dict:
        return {"max_priority": self._max_priority, "beta": self.beta}

    def _load_extra(self, arrays: np.lib.npyio.NpzFile, meta: dict) -> None:
        self._sum[:] = 0.0
        self._min[:] = np.inf
        if self._size:
            self._set(np.arange(self._size), arrays["priorities"])
        self._max_priority = meta["max_priority"]
        self.beta = meta["beta"]


class NStepAssembler:
    """Turns each env's stream of one-step transitions into n-step transitions.

    Output rows: obs_t, a_t, R = sum_{k<m} gamma^k r_{t+k}, next_obs = obs_{t+m}, and
    `discount` = gamma^m if the episode goes on after t+m-1, 0 if it terminated inside the
    window. The sum stops at any episode end; termination also stops the bootstrap, while
    time-limit truncation keeps it (discount gamma^m, next_obs = the final observation).
    With n = 1 this is just discount = gamma * (not terminated).
    Input rows are ordered (step, env) as collectors return them, with `last` flags; a
    start whose window is not complete yet waits for the next call (at most n - 1 rows per
    env are carried). Vectorised over (time, env): a per-row Python loop cost ~27 us per
    env step, a fifth of a LunarLander collector's time (benchmarks/collect_throughput.py).
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


def build(cfg: ReplayConfig, spaces: EnvSpaces, seed: int) -> UniformReplay:
    """The replay buffer an experiment's `replay:` section asks for."""
    common = dict(
        capacity=cfg.capacity,
        obs_shape=spaces.observation.shape,
        action_shape=spaces.action.shape,
        action_dtype=spaces.action.dtype,
        seed=seed,
    )
    if cfg.type == "prioritized":
        return PrioritizedReplay(
            **common, alpha=cfg.alpha, beta_start=cfg.beta.start, beta_end=cfg.beta.end,
            priority_epsilon=cfg.priority_epsilon,
        )  # fmt: skip
    return UniformReplay(**common)
