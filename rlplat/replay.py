"""Experience replay: uniform and prioritized ring buffers in numpy, and the same buffers
split over Ray actors (`ShardedReplay`).

All of them implement `Replay`, so the training loop and the checkpointer never know which
one they drive. (n-step transitions are assembled before they get here, by the collectors:
rlplat/nstep.py.)
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from rlplat.data import Sample, Transitions
from rlplat.errors import UserError
from rlplat.frame_replay import FrameReplay
from rlplat.priority import SumTree, anneal_beta, is_weights

if TYPE_CHECKING:
    from rlplat.collect import Fragment
    from rlplat.config import ReplayConfig
    from rlplat.envs import EnvSpaces


class Replay(Protocol):
    """What the training loop and the checkpointer need of a replay buffer."""

    def __len__(self) -> int: ...

    def add(self, t: Transitions, td_errors: np.ndarray | None = None) -> None:
        """Store `t`; `td_errors`: initial priorities' |TD| (prioritized; else ignored)."""

    def sample(self, batch_size: int, num_batches: int = 1) -> Sample:
        """`num_batches` minibatches at once: arrays are [num_batches, batch_size, ...]."""
        ...

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """New |TD| errors for sampled `indices` (a no-op without priorities)."""

    def anneal(self, progress: float) -> dict[str, float]:
        """Move schedules (prioritized: beta) to `progress` in [0, 1]; returns values to log."""
        ...

    def save(self, path: Path) -> None:
        """Write the buffer (with its RNG state) into checkpoint directory `path`."""

    def load(self, path: Path) -> None:
        """Read what `save` wrote into `path`."""

    def pids(self) -> list[int]:
        """Processes holding the data outside this one (Ray shards), for ray.json."""
        ...

    def close(self) -> None:
        """Release what the buffer holds outside this process."""


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
        obs_dtype: np.dtype = np.float32,
    ):
        self.capacity = capacity
        self._data = {
            "obs": np.zeros((capacity, *obs_shape), obs_dtype),
            "action": np.zeros((capacity, *action_shape), action_dtype),
            "reward": np.zeros(capacity, np.float32),
            "next_obs": np.zeros((capacity, *obs_shape), obs_dtype),
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
        return Sample(self.rows(idx), idx, None)

    def draw(self, n: int) -> tuple[np.ndarray, None]:
        """`n` uniform draws: (indices, None)."""
        if n == 0:
            return np.zeros(0, np.int64), None
        return self._rng.integers(0, self._size, size=n), None

    def mass(self) -> tuple[float, float, int]:
        """Sampling mass for choosing among shards: the size (every item weighs 1)."""
        return float(self._size), 1.0, self._size

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        """Uniform replay has no priorities; the loop may call this regardless."""

    def anneal(self, progress: float) -> dict[str, float]:
        """Move schedules (prioritized: beta) to `progress` in [0, 1]; returns values to log."""
        return {}

    def rows(self, idx: np.ndarray) -> Transitions:
        """The stored items at `idx` (any shape): what `draw` picked, for a shard's reply."""
        return Transitions(*(self._data[f][idx] for f in self._FIELDS))

    def pids(self) -> list[int]:
        return []  # all in this process

    def close(self) -> None:
        pass

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
        if meta.get("kind") == "frames":
            raise ValueError(f"{path / 'replay.json'}: holds a frame replay (replay.frames: true)")
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
        obs_dtype: np.dtype = np.float32,
    ):
        super().__init__(capacity, obs_shape, action_shape, action_dtype, seed, obs_dtype)
        self.alpha, self.priority_epsilon = alpha, priority_epsilon
        self._beta_start, self._beta_end = beta_start, beta_end
        self.beta = beta_start
        self._tree = SumTree(capacity)
        self._max_priority = 1.0  # in alpha space: what new items get

    def anneal(self, progress: float) -> dict[str, float]:
        self.beta = anneal_beta(self._beta_start, self._beta_end, progress)
        return {"replay/beta": self.beta}

    def add(self, t: Transitions, td_errors: np.ndarray | None = None) -> None:
        n = min(len(t), self.capacity)
        idx = (self._pos + np.arange(n)) % self.capacity
        super().add(t)
        if td_errors is None:
            self._tree.set(idx, np.full(n, self._max_priority))
        else:
            self.update_priorities(idx, np.asarray(td_errors)[-n:])

    def sample(self, batch_size: int, num_batches: int = 1) -> Sample:
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx, prios = self.draw(batch_size * num_batches)
        total, low, _ = self.mass()
        weights = is_weights(prios, total, low, self.beta).astype(np.float32)
        shape = (num_batches, batch_size)
        return Sample(
            self.rows(idx.reshape(shape)),
            idx.reshape(shape),
            weights.reshape(shape),
            prios.reshape(shape),
        )

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """`n` stratified draws in random order: (indices, priorities in alpha space)."""
        if n == 0:
            return np.zeros(0, np.int64), np.zeros(0)
        total = self._tree.total
        targets = (np.arange(n) + self._rng.random(n)) * (total / n)
        # Float round-off can step past the last filled leaf: clamp into the filled range.
        idx = np.minimum(self._tree.find(targets), self._size - 1)
        order = self._rng.permutation(n)  # strata are sorted by position: mix them
        idx = idx[order]
        return idx, self._tree.leaf(idx)

    def mass(self) -> tuple[float, float, int]:
        """(sum of priorities, smallest priority, size): what sampling across shards needs."""
        return self._tree.total, self._tree.low, self._size

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        prios = (np.abs(td_errors).ravel() + self.priority_epsilon) ** self.alpha
        self._tree.set(indices.ravel(), prios)
        self._max_priority = max(self._max_priority, float(prios.max()))

    def priorities(self) -> np.ndarray:
        """Current priorities (alpha space) of the stored items."""
        return self._tree.leaf(np.arange(self._size))

    # ------------------------------------------------------------- checkpoints
    def _extra_arrays(self) -> dict[str, np.ndarray]:
        return {"priorities": self.priorities().copy()}

    def _extra_meta(self) -> dict:
        return {"max_priority": self._max_priority, "beta": self.beta}

    def _load_extra(self, arrays: np.lib.npyio.NpzFile, meta: dict) -> None:
        self._tree.clear()
        if self._size:
            self._tree.set(np.arange(self._size), arrays["priorities"])
        self._max_priority = meta["max_priority"]
        self.beta = meta["beta"]


@runtime_checkable
class StepReplay(Replay, Protocol):
    """A replay that takes collectors' one-step rows and assembles n-step itself (so it
    can store pixel frames once): `FrameReplay`."""

    def add_steps(self, t: Transitions, streams: np.ndarray) -> None:
        """One-step rows with `last` flags, and the env stream each row comes from."""


def add_collected(replay: Replay, f: Fragment) -> None:
    """Store a collector's fragment: n-step transitions, or one-step rows tagged with their
    stream (actor, env) for a `StepReplay`."""
    if f.transitions is None:
        return
    if isinstance(replay, StepReplay):
        rows = np.arange(len(f.transitions)) % f.num_envs  # rows are ordered (step, env)
        replay.add_steps(f.transitions, f.actor * f.num_envs + rows)
    else:
        replay.add(f.transitions, f.priorities)


def make(
    cfg: ReplayConfig, spaces: EnvSpaces, seed: int, *, n_step: int, gamma: float,
    num_streams: int,
) -> Replay:  # fmt: skip
    """The replay an experiment's `replay:` section asks for: split over Ray actors when
    `shards` > 0 (Ray must be up), frame by frame for `frames` (`num_streams` env streams
    of one-step rows, assembled into `n_step` transitions with `gamma` here), else a
    buffer of whole transitions in this process."""
    if cfg.frames:
        return build_frames(cfg, spaces, seed, n_step=n_step, gamma=gamma, streams=num_streams)
    if cfg.shards:
        return ShardedReplay(cfg, spaces, seed)
    return build(cfg, spaces, seed)


def build_frames(
    cfg: ReplayConfig, spaces: EnvSpaces, seed: int, *, n_step: int, gamma: float, streams: int
) -> Replay:
    obs = spaces.observation
    if len(obs.shape) != 3 or obs.dtype != np.uint8:
        raise UserError(
            f"replay.frames: needs stacked uint8 [H, W, K] observations; this env's are "
            f"{obs.dtype} {list(obs.shape)} (set replay.frames: false)"
        )
    try:
        return FrameReplay(
            cfg.capacity, obs.shape, spaces.action.shape, spaces.action.dtype, seed,
            num_streams=streams, n_step=n_step, gamma=gamma,
            prioritized=cfg.type == "prioritized", alpha=cfg.alpha,
            beta_start=cfg.beta.start, beta_end=cfg.beta.end,
            priority_epsilon=cfg.priority_epsilon,
        )  # fmt: skip
    except ValueError as err:
        raise UserError(str(err)) from None


def build(cfg: ReplayConfig, spaces: EnvSpaces, seed: int) -> UniformReplay:
    """The in-process buffer `cfg` asks for (also each shard's)."""
    common = dict(
        capacity=cfg.capacity,
        obs_shape=spaces.observation.shape,
        action_shape=spaces.action.shape,
        action_dtype=spaces.action.dtype,
        seed=seed,
        # uint8 pixels are stored as uint8 (a quarter of float32's bytes), the rest float32
        obs_dtype=np.uint8 if spaces.observation.dtype == np.uint8 else np.float32,
    )
    if cfg.type == "prioritized":
        return PrioritizedReplay(
            **common, alpha=cfg.alpha, beta_start=cfg.beta.start, beta_end=cfg.beta.end,
            priority_epsilon=cfg.priority_epsilon,
        )  # fmt: skip
    return UniformReplay(**common)


# ----------------------------------------------------------------------- Ray shards


class ReplayShardError(UserError):
    """A replay shard actor died: its data is gone, the learner cannot go on."""


class _ReplayShardBody:
    """A Ray actor holding one shard (`capacity / shards` items) of the replay."""

    def __init__(self, cfg: ReplayConfig, spaces: EnvSpaces, seed: int):
        self.replay = build(cfg, spaces, seed)

    def add(self, t: Transitions, td_errors: np.ndarray | None) -> None:
        self.replay.add(t, td_errors)

    def draw(self, n: int) -> tuple:
        idx, prios = self.replay.draw(n)
        return (self.replay.rows(idx), idx, prios, *self.replay.mass())

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        self.replay.update_priorities(indices, td_errors)

    def get(self) -> UniformReplay:
        return self.replay

    def set(self, replay: UniformReplay) -> None:
        # Arrays that arrive through Ray's object store are read-only views: copy them.
        self.replay = copy.deepcopy(replay)

    def pid(self) -> int:
        import os

        return os.getpid()


class ShardedReplay:
    """Replay split over `cfg.shards` Ray actors, with the one-buffer interface.

    Adds go round-robin (fire and forget). A sample of n items picks each shard's share
    from a multinomial over the shards' priority mass (sizes for uniform replay), so an
    item's probability is p_i / sum over all shards, as in one buffer; importance weights
    use the global total, size and smallest priority returned with the draws. Indices are
    global (shard * shard_capacity + local). Checkpoints pull each shard's buffer into the
    learner's checkpoint directory (`shard-K/`), so they work on any cluster.
    """

    def __init__(self, cfg: ReplayConfig, spaces: EnvSpaces, seed: int):
        import ray

        self._ray = ray
        self.num_shards = cfg.shards
        self.shard_capacity = -(-cfg.capacity // cfg.shards)
        self.capacity = self.shard_capacity * cfg.shards
        self._prioritized = cfg.type == "prioritized"
        self._beta_start, self._beta_end = cfg.beta.start, cfg.beta.end
        self.beta = self._beta_start
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
        if not self._prioritized:
            return {}
        self.beta = anneal_beta(self._beta_start, self._beta_end, progress)
        return {"replay/beta": self.beta}

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

    def add(self, t: Transitions, td_errors: np.ndarray | None = None) -> None:
        k = self._next
        self._next = (k + 1) % self.num_shards
        self._inflight.append((self._shards[k].add.remote(t, td_errors), k))
        self._sizes[k] = min(self.shard_capacity, self._sizes[k] + len(t))
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
        if self._prioritized:
            prios = np.concatenate([p[2] for p in parts])
            total = float(sum(self._mass))
            low = min(p[4] for p in parts if p[5] > 0)
            weights = is_weights(prios, total, low, self.beta).astype(np.float32)
        order = self._rng.permutation(n)  # shards come in blocks: mix them
        shape = (num_batches, batch_size)

        def arrange(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[order].reshape(*shape, *a.shape[1:])

        return Sample(batch.map(arrange), arrange(idx), arrange(weights), arrange(prios))

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        if not self._prioritized:
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
            self._mass[k], _, self._sizes[k] = replay.mass()
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
