"""Experience replay in numpy: a ring buffer of one-step transitions.

`sample` returns indices and importance weights too, so prioritized replay (same
interface, `update_priorities` doing real work) can drop in without touching the loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlplat.data import Transitions


@dataclass
class Sample:
    batch: Transitions
    indices: np.ndarray
    weights: np.ndarray | None  # importance-sampling weights; None for uniform replay


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

    def add(self, t: Transitions) -> None:
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

    def update_priorities(self, indices: np.ndarray, priorities: np.ndarray) -> None:
        """Uniform replay has no priorities; the loop may call this regardless."""

    def _gather(self, idx: np.ndarray) -> Transitions:
        return Transitions(*(self._data[f][idx] for f in self._FIELDS))

    # -------------------------------------------------------------- checkpoints
    def save(self, path: Path) -> None:
        """Only the filled part is written; with the RNG state, sampling resumes exactly."""
        n = self._size
        np.savez(path / "replay.npz", **{f: self._data[f][:n] for f in self._FIELDS})
        meta = {"pos": self._pos, "size": n, "rng": self._rng.bit_generator.state}
        (path / "replay.json").write_text(json.dumps(meta))

    def load(self, path: Path) -> None:
        meta = json.loads((path / "replay.json").read_text())
        n = meta["size"]
        if n > self.capacity:
            raise ValueError(f"checkpoint replay holds {n} > capacity {self.capacity}")
        with np.load(path / "replay.npz") as arrays:
            for f in self._FIELDS:
                self._data[f][:n] = arrays[f]
        self._pos, self._size = meta["pos"] % self.capacity, n
        self._rng.bit_generator.state = meta["rng"]
