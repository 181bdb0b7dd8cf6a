"""The replay split over Ray actors: each shard is a `LocalReplay` of whole transitions
(rlplat/experience/replay.py) in its own process."""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rlplat.errors import UserError
from rlplat.experience.data import Fragment, Sample, Transitions
from rlplat.experience.replay import LocalReplay, build
from rlplat.experience.sampler import ImportanceWeights

if TYPE_CHECKING:
    from rlplat.config import ReplayConfig
    from rlplat.envs import EnvSpaces


class ReplayShardError(UserError):
    """A replay shard actor died: its data is gone, the learner cannot go on."""


class _ReplayShardBody:
    """A Ray actor holding one shard (`capacity / shards` items) of the replay."""

    def __init__(self, cfg: ReplayConfig, spaces: EnvSpaces, seed: int):
        self.replay = build(cfg, spaces, seed)

    def add(self, f: Fragment) -> None:
        self.replay.add(f)

    def draw(self, n: int) -> tuple:
        """`n` draws: (rows, local indices, priorities, *the shard's mass)."""
        if n == 0:
            idx, prios = np.zeros(0, np.int64), None
        else:
            idx, prios = self.replay.draw(n)
        return (self.replay.storage.rows(idx), idx, prios, *self.replay.sampler.mass())

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        self.replay.update_priorities(indices, td_errors)

    def get(self) -> LocalReplay:
        return self.replay

    def set(self, replay: LocalReplay) -> None:
        # Arrays that arrive through Ray's object store are read-only views: copy them.
        self.replay = copy.deepcopy(replay)

    def pid(self) -> int:
        return os.getpid()


class ShardedReplay:
    """Replay split over `cfg.shards` Ray actors, with the one-buffer interface.

    Adds go round-robin (fire and forget). A sample of n items picks each shard's share
    from a multinomial over the shards' priority mass (sizes for uniform replay), and each
    shard draws its share with its own sampler, so an item's probability is p_i / sum over
    all shards, as in one buffer; importance weights use the global total, size and
    smallest priority returned with the draws. Indices are global (shard *
    shard_capacity + local). Checkpoints pull each shard's buffer into the learner's
    checkpoint directory (`shard-K/`), so they work on any cluster.
    """

    def __init__(self, cfg: ReplayConfig, spaces: EnvSpaces, seed: int):
        import ray

        self._ray = ray
        self.num_shards = cfg.shards
        self.shard_capacity = -(-cfg.capacity // cfg.shards)
        self.capacity = self.shard_capacity * cfg.shards
        prioritized = cfg.type == "prioritized"
        self._weights = ImportanceWeights(cfg.beta.start, cfg.beta.end) if prioritized else None
        self._shard_cfg = cfg.model_copy(update={"capacity": self.shard_capacity, "shards": 0})
        self._spaces = spaces
        self._seeds = [seed + 7_919 * (k + 1) for k in range(cfg.shards)]
        remote = ray.remote(num_cpus=0, max_restarts=0)(_ReplayShardBody)
        self._shards = [remote.remote(self._shard_cfg, spaces, s) for s in self._seeds]
        self._sizes = [0] * cfg.shards
        self._mass = [0.0] * cfg.shards
        self._next = 0
        self._rng = np.random.default_rng(seed)
        self._inflight: list = []

    def __len__(self) -> int:
        return sum(self._sizes)

    def anneal(self, progress: float) -> dict[str, float]:
        return {} if self._weights is None else self._weights.anneal(progress)

    def _get(self, refs: list, shards: list[int]) -> list:
        try:
            return self._ray.get(refs)
        except self._ray.exceptions.RayActorError as err:
            dead = sorted(
                {k for k, ref in zip(shards, refs, strict=True) if _failed(self._ray, ref)}
            )
            which = ", ".join(map(str, dead)) or "?"
            raise ReplayShardError(
                f"replay shard {which} died ({str(err).splitlines()[0]}); its transitions "
                "are lost and the run cannot go on"
            ) from None

    def add(self, f: Fragment) -> None:
        if f.transitions is None:
            return
        k = self._next
        self._next = (k + 1) % self.num_shards
        self._inflight.append((self._shards[k].add.remote(f), k))
        self._sizes[k] = min(self.shard_capacity, self._sizes[k] + len(f.transitions))
        if len(self._inflight) > 4 * self.num_shards:  # surface errors, bound the queue
            refs, shards = zip(*self._inflight, strict=True)
            self._get(list(refs), list(shards))
            self._inflight.clear()

    def sample(self, batch_size: int, num_batches: int = 1) -> Sample:
        n = batch_size * num_batches
        # Shares follow the masses the shards reported with the previous sample (sizes
        # before the first); every shard answers each time, so they stay one call fresh.
        known = all(m > 0 for m in self._mass)
        mass = np.array(self._mass if known else self._sizes, np.float64)
        if mass.sum() <= 0:
            raise ValueError("cannot sample from an empty replay buffer")
        counts = self._rng.multinomial(n, mass / mass.sum())
        shards = list(range(self.num_shards))
        parts = self._get(
            [s.draw.remote(int(c)) for s, c in zip(self._shards, counts, strict=True)], shards
        )
        batch = Transitions.concat([p[0] for p in parts])
        idx = np.concatenate(
            [p[1] + k * self.shard_capacity for k, p in zip(shards, parts, strict=True)]
        )
        for k, p in zip(shards, parts, strict=True):  # mass(): (priority mass or size, ...)
            self._mass[k], self._sizes[k] = p[3], p[5]
        prios = weights = None
        if self._weights is not None:
            prios = np.concatenate([p[2] for p in parts if p[2] is not None])
            low = min(p[4] for p in parts if p[5] > 0)
            weights = self._weights.of(prios, float(sum(self._mass)), low)
        order = self._rng.permutation(n)  # shards come in blocks: mix them
        shape = (num_batches, batch_size)

        def arrange(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[order].reshape(*shape, *a.shape[1:])

        return Sample(batch.map(arrange), arrange(idx), arrange(weights), arrange(prios))

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        if self._weights is None:
            return
        indices, td_errors = indices.ravel(), np.asarray(td_errors).ravel()
        shard = indices // self.shard_capacity
        for k in np.unique(shard):
            mine = shard == k
            ref = self._shards[k].update_priorities.remote(
                indices[mine] - k * self.shard_capacity, td_errors[mine]
            )
            self._inflight.append((ref, int(k)))

    def pids(self) -> list[int]:
        return self._get([s.pid.remote() for s in self._shards], list(range(self.num_shards)))

    def save(self, path: Path) -> None:
        replays = self._get([s.get.remote() for s in self._shards], list(range(self.num_shards)))
        for k, replay in enumerate(replays):
            (path / f"shard-{k}").mkdir(exist_ok=True)
            replay.save(path / f"shard-{k}")

    def load(self, path: Path) -> None:
        # Built here and sent whole: buffers that come back from Ray are read-only views.
        replays = [build(self._shard_cfg, self._spaces, s) for s in self._seeds]
        for k, replay in enumerate(replays):
            replay.load(path / f"shard-{k}")
            self._mass[k], _, self._sizes[k] = replay.sampler.mass()
        refs = [s.set.remote(r) for s, r in zip(self._shards, replays, strict=True)]
        self._get(refs, list(range(self.num_shards)))

    def close(self) -> None:
        for shard in self._shards:
            with contextlib.suppress(Exception):
                self._ray.kill(shard)


def _failed(ray, ref) -> bool:
    """Whether `ref`'s actor died (a call still running is not a failure)."""
    try:
        ray.get(ref, timeout=1.0)
    except ray.exceptions.RayActorError:
        return True
    except Exception:
        return False
    return False
