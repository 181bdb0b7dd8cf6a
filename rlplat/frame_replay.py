"""Replay for stacked pixel observations that stores each frame once.

An Atari observation is a stack of K = 4 frames [84, 84, 4] uint8 and consecutive
observations of one episode share K - 1 of them, so storing obs and next_obs per transition
(as `UniformReplay` does) costs 2 K frames where one is new. Here every env stream writes
one slot per step into its own ring (frames of two streams never meet in a stack): the
step's newest frame, its action, reward and end flags. Stacks are read back as the K slots
ending at a step, n-step returns and next observations are computed at sample time from the
stored rewards (as in Dopamine's circular replay buffer), so the replay receives one-step
transitions with `last` flags (`add_steps`), not the collector's n-step ones.

Layout of one episode in a stream's ring:
    [pad_1 .. pad_{K-1}] [step_0 .. step_{L-1}] [final]
the pads are the first observation's older frames as the env emitted them (repeats of the
reset frame for gymnasium's FrameStackObservation, zeros for others: whatever came), and
`final` is the last step's next observation's newest frame (a truncated episode bootstraps
from it). So a stack never reaches into another episode and a sampled obs equals the
emitted one exactly, whatever the env pads with; the price is K slots per episode.

Validity lives in one `SumTree` over all slots: a step is drawable (priority > 0) once its
n-step window is complete and until a write overwrites it or a frame of its stack; pads,
finals and the slots just ahead of each write head have priority 0. Uniform replay is the
same tree with every drawable step at priority 1.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np

from rlplat.data import Sample, Transitions
from rlplat.priority import SumTree, anneal_beta, is_weights


class FrameReplay:
    """`Replay` for [H, W, K] uint8 observations, frames stored once; uniform or prioritized.

    `num_streams` rings of capacity // num_streams slots each. `add_steps` takes one-step
    transitions and the stream of each row; `add` is `add_steps` for rows ordered
    (step, stream) over all streams (one collector's vector env).
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, int, int],
        action_shape: tuple[int, ...] = (),
        action_dtype: np.dtype = np.int64,
        seed: int = 0,
        *,
        num_streams: int = 1,
        n_step: int = 1,
        gamma: float = 0.99,
        prioritized: bool = False,
        alpha: float = 0.6,
        beta_start: float = 0.4,
        beta_end: float = 1.0,
        priority_epsilon: float = 1e-6,
    ):
        if len(obs_shape) != 3:
            raise ValueError(f"frame replay needs [H, W, K] observations, not {obs_shape}")
        *self.frame_shape, self.stack = obs_shape
        self.obs_shape = tuple(obs_shape)
        self.num_streams, self.n_step, self.gamma = num_streams, n_step, gamma
        self.ring = capacity // num_streams
        if self.ring < 2 * self.stack + n_step + 2:
            raise ValueError(
                f"replay.capacity {capacity} is too small for {num_streams} streams "
                f"(each needs more than {2 * self.stack + n_step + 1} slots)"
            )
        self.capacity = self.ring * num_streams
        slots = self.capacity
        self._frames = np.zeros((slots, *self.frame_shape), np.uint8)
        self._action = np.zeros((slots, *action_shape), action_dtype)
        self._reward = np.zeros(slots, np.float32)
        self._terminated = np.zeros(slots, bool)
        self._last = np.zeros(slots, bool)  # the episode ends after this step
        self._tree = SumTree(slots)
        self._size = 0  # drawable steps
        self._head = np.zeros(num_streams, np.int64)  # next slot to write, per ring
        self._filled = np.zeros(num_streams, np.int64)  # slots written, up to the ring
        self._open = np.zeros(num_streams, bool)  # an episode is in progress
        self._held = np.zeros((num_streams, *obs_shape), np.uint8)  # its last next_obs
        self._pending: list[deque[int]] = [deque() for _ in range(num_streams)]
        self._prioritized = prioritized
        self.alpha, self.priority_epsilon = alpha, priority_epsilon
        self._beta_start, self._beta_end = beta_start, beta_end
        self.beta = beta_start
        self._max_priority = 1.0
        self._rng = np.random.default_rng(seed)
        self._changes: dict[int, float] = {}  # slot -> new priority, applied per add

    def __len__(self) -> int:
        return self._size

    # ------------------------------------------------------------------- adding
    def add(self, t: Transitions, td_errors: np.ndarray | None = None) -> None:
        """One-step rows ordered (step, stream) over all `num_streams` streams.
        `td_errors` are ignored: new steps get the max priority (their n-step window is
        only known here)."""
        self.add_steps(t, np.arange(len(t)) % self.num_streams)

    def add_steps(self, t: Transitions, streams: np.ndarray) -> None:
        """One-step transitions (a collector's raw rows: `discount` 0 where terminated,
        `last` at every episode end) with the stream each row belongs to, in time order
        within each stream."""
        if t.last is None:
            raise ValueError("the frame replay needs `last` flags on the transitions")
        if len(t) and (np.min(streams) < 0 or np.max(streams) >= self.num_streams):
            raise ValueError(f"stream ids must be in [0, {self.num_streams})")
        obs = np.asarray(t.obs).astype(np.uint8, copy=False)
        next_obs = np.asarray(t.next_obs).astype(np.uint8, copy=False)
        self._changes = {}
        for i, s in enumerate(np.asarray(streams, np.int64)):
            self._add_row(int(s), obs[i], next_obs[i], t, i)
        if self._changes:
            idx = np.fromiter(self._changes, np.int64, len(self._changes))
            prios = np.fromiter(self._changes.values(), np.float64, len(self._changes))
            self._size += int((prios > 0).sum() - (self._tree.leaf(idx) > 0).sum())
            self._tree.set(idx, prios)

    def _add_row(self, s: int, obs: np.ndarray, next_obs: np.ndarray, t: Transitions, i: int):
        if self._open[s] and not np.array_equal(obs, self._held[s]):
            self._close(s)  # the stream jumped (a collector restarted): end it truncated
        if not self._open[s]:
            for k in range(self.stack - 1):  # the first observation's older frames
                self._write(s, obs[..., k])
        slot = self._write(s, obs[..., -1])
        self._action[slot] = t.action[i]
        self._reward[slot] = t.reward[i]
        self._terminated[slot] = t.discount[i] == 0.0
        pending = self._pending[s]
        pending.append(slot)
        if t.last[i]:
            self._last[slot] = True
            self._write(s, next_obs[..., -1])
            self._open[s] = False
            self._complete(pending, len(pending))
        else:
            self._open[s] = True
            self._held[s] = next_obs
            self._complete(pending, len(pending) - self.n_step)

    def _write(self, s: int, frame: np.ndarray) -> int:
        """Write `frame` at stream `s`'s head; the slot and the K - 1 after it (whose
        stacks reach back into it) stop being drawable."""
        local = int(self._head[s])
        slot = s * self.ring + local
        self._frames[slot] = frame
        self._last[slot] = self._terminated[slot] = False
        self._reward[slot] = 0.0
        for k in range(self.stack):
            self._changes[s * self.ring + (local + k) % self.ring] = 0.0
        self._head[s] = (local + 1) % self.ring
        self._filled[s] = max(self._filled[s], local + 1)
        return slot

    def _complete(self, pending: deque[int], count: int) -> None:
        """The oldest `count` pending steps have their whole n-step window: drawable."""
        for _ in range(max(0, count)):
            self._changes[pending.popleft()] = self._max_priority

    def _close(self, s: int) -> None:
        """End stream `s`'s open episode as truncated at its last step (bootstrapped from
        the held next observation)."""
        pending = self._pending[s]
        self._last[s * self.ring + (int(self._head[s]) - 1) % self.ring] = True
        self._write(s, self._held[s][..., -1])
        self._open[s] = False
        self._complete(pending, len(pending))

    # ----------------------------------------------------------------- sampling
    def sample(self, batch_size: int, num_batches: int = 1) -> Sample:
        """`num_batches` minibatches at once: arrays are [num_batches, batch_size, ...]."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        n = batch_size * num_batches
        idx = self._draw(n)
        prios = self._tree.leaf(idx)
        shape = (num_batches, batch_size)
        weights = None
        if self._prioritized:
            weights = is_weights(prios, self._tree.total, self._tree.low, self.beta)
            weights = weights.astype(np.float32).reshape(shape)
        batch = self.rows(idx).map(lambda a: a.reshape(*shape, *a.shape[1:]))
        return Sample(batch, idx.reshape(shape), weights, prios.reshape(shape))

    def _draw(self, n: int) -> np.ndarray:
        """`n` stratified draws over the drawable steps' mass, in random order."""
        total = self._tree.total
        targets = (np.arange(n) + self._rng.random(n)) * (total / n)
        idx = self._tree.find(np.minimum(targets, np.nextafter(total, 0)))
        # Round-off can land on a zero leaf next to the interval: redraw those few.
        while (bad := self._tree.leaf(idx) <= 0).any():
            idx[bad] = self._tree.find(self._rng.random(int(bad.sum())) * total)
        return idx[self._rng.permutation(n)]

    def rows(self, idx: np.ndarray) -> Transitions:
        """The n-step transitions starting at steps `idx` (1-D): stacks gathered from
        their rings, returns summed up to the first episode end within n steps."""
        base, local = np.divmod(idx, self.ring)
        base *= self.ring
        ret = np.zeros(len(idx), np.float64)
        steps = np.zeros(len(idx), np.int64)  # m: steps in the window
        terminated = np.zeros(len(idx), bool)
        alive = np.ones(len(idx), bool)
        for k in range(self.n_step):
            slot = base + (local + k) % self.ring
            ret += np.where(alive, self.gamma**k * self._reward[slot], 0.0)
            steps += alive
            terminated |= alive & self._terminated[slot]
            alive &= ~self._last[slot]
        discount = self.gamma**steps * ~terminated
        return Transitions(
            obs=self._stacks(base, local),
            action=self._action[idx],
            reward=ret.astype(np.float32),
            next_obs=self._stacks(base, local + steps),
            discount=discount.astype(np.float32),
        )

    def _stacks(self, base: np.ndarray, local: np.ndarray) -> np.ndarray:
        """[B, H, W, K] uint8: the K slots ending at each `local` position of its ring."""
        back = np.arange(1 - self.stack, 1)
        slots = base[:, None] + (local[:, None] + back) % self.ring
        return np.moveaxis(self._frames[slots], 1, -1)

    # --------------------------------------------------------------- priorities
    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """New |TD| errors for sampled steps; steps overwritten since the sample keep
        priority 0 (setting theirs would make a half-overwritten stack drawable)."""
        if not self._prioritized:
            return
        indices = indices.ravel()
        prios = (np.abs(np.asarray(td_errors)).ravel() + self.priority_epsilon) ** self.alpha
        live = self._tree.leaf(indices) > 0
        self._tree.set(indices[live], prios[live])
        if live.any():
            self._max_priority = max(self._max_priority, float(prios[live].max()))

    def anneal(self, progress: float) -> dict[str, float]:
        if not self._prioritized:
            return {}
        self.beta = anneal_beta(self._beta_start, self._beta_end, progress)
        return {"replay/beta": self.beta}

    def pids(self) -> list[int]:
        return []  # all in this process

    def close(self) -> None:
        pass

    # -------------------------------------------------------------- checkpoints
    _SLOT_ARRAYS = ("_frames", "_action", "_reward", "_terminated", "_last")
    _STREAM_ARRAYS = ("_head", "_filled", "_open", "_held")

    def save(self, path: Path) -> None:
        """The written slots of each ring (views: nothing is copied), their priorities, and
        each stream's open episode, so sampling and adding resume exactly. Uncompressed:
        frames hardly compress fast enough to be worth it."""
        arrays = {name[1:]: getattr(self, name) for name in self._STREAM_ARRAYS}
        for s, part in enumerate(self._parts()):
            for name in self._SLOT_ARRAYS:
                arrays[f"{name[1:]}_{s}"] = getattr(self, name)[part]
            arrays[f"priorities_{s}"] = self._tree.leaf(np.arange(self.capacity)[part])
        np.savez(path / "replay.npz", **arrays)
        meta = {
            "kind": "frames", "capacity": self.capacity, "num_streams": self.num_streams,
            "size": self._size, "pending": [list(p) for p in self._pending],
            "max_priority": self._max_priority, "beta": self.beta,
            "rng": self._rng.bit_generator.state,
        }  # fmt: skip
        (path / "replay.json").write_text(json.dumps(meta))

    def load(self, path: Path) -> None:
        meta = json.loads((path / "replay.json").read_text())
        shape = (meta.get("kind"), meta.get("capacity"), meta.get("num_streams"))
        if shape != ("frames", self.capacity, self.num_streams):
            raise ValueError(
                f"{path / 'replay.json'}: holds a replay of (kind, capacity, streams) {shape}, "
                f"this run's is ('frames', {self.capacity}, {self.num_streams})"
            )
        with np.load(path / "replay.npz") as arrays:
            for name in self._STREAM_ARRAYS:
                getattr(self, name)[...] = arrays[name[1:]]
            self._tree.clear()
            for s, part in enumerate(self._parts()):
                for name in self._SLOT_ARRAYS:
                    getattr(self, name)[part] = arrays[f"{name[1:]}_{s}"]
                self._tree.set(np.arange(self.capacity)[part], arrays[f"priorities_{s}"])
        self._pending = [deque(p) for p in meta["pending"]]
        self._size, self._max_priority = meta["size"], meta["max_priority"]
        self.beta = meta["beta"]
        self._rng.bit_generator.state = meta["rng"]

    def _parts(self) -> list[slice]:
        """Each ring's written slots (a ring fills from its start)."""
        return [slice(s * self.ring, s * self.ring + int(n)) for s, n in enumerate(self._filled)]
