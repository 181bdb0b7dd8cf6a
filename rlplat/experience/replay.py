"""Experience replay, composed: a storage (whole transitions, or pixel frames stored once)
and a sampler (uniform or prioritized) make a `LocalReplay`; `ShardedReplay`
(rlplat/experience/sharded.py) splits LocalReplays over Ray actors. The loops and the
checkpointer see only `Replay`, and add what was collected with one call, `add(fragment)`.

The replay also owns what collectors must send it (`row_spec`): n-step transitions formed
in the collector (a transition storage, which stores them whole), or one-step rows whose
n-step returns are formed at sample time (the frame storage, which keeps each stream's
steps in order).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rlplat.errors import UserError
from rlplat.experience.data import Fragment, Sample
from rlplat.experience.sampler import PrioritizedSampler, Sampler, UniformSampler
from rlplat.experience.storage import FrameStorage, Storage, TransitionStorage

if TYPE_CHECKING:
    from rlplat.agents.base import Agent
    from rlplat.config import ExperimentConfig, ReplayConfig
    from rlplat.envs import EnvSpaces


class Replay(Protocol):
    """What the training loop and the checkpointer need of a replay buffer."""

    def __len__(self) -> int: ...

    def add(self, f: Fragment) -> None:
        """Store what a collector sent (in the form `row_spec` asked for)."""

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


class LocalReplay:
    """A storage and a sampler in this process."""

    def __init__(self, storage: Storage, sampler: Sampler):
        self.storage, self.sampler = storage, sampler
        self.capacity = storage.capacity

    def __len__(self) -> int:
        return len(self.sampler)

    def add(self, f: Fragment) -> None:
        if f.transitions is None:
            return
        w = self.storage.write(f)
        self.sampler.store(w.idx, w.drawable, w.td_errors)

    def sample(self, batch_size: int, num_batches: int = 1) -> Sample:
        idx, prios = self.draw(batch_size * num_batches)
        shape = (num_batches, batch_size)

        def arrange(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a.reshape(*shape, *a.shape[1:])

        idx = idx.reshape(shape)
        weights = self.sampler.weights(prios)
        return Sample(self.storage.rows(idx), idx, arrange(weights), arrange(prios))

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray | None]:
        """`n` items: (indices, their priorities or None)."""
        if len(self.sampler) == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        return self.sampler.draw(n)

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray) -> None:
        self.sampler.update(indices, td_errors)

    def anneal(self, progress: float) -> dict[str, float]:
        return self.sampler.anneal(progress)

    def pids(self) -> list[int]:
        return []  # all in this process

    def close(self) -> None:
        pass

    def save(self, path: Path) -> None:
        """Uncompressed (frames hardly compress fast enough to be worth it); with the
        sampler's RNG state, sampling resumes exactly."""
        arrays, meta = self.storage.state()
        extra, sampling = self.sampler.state(self.storage.parts())
        np.savez(path / "replay.npz", **arrays, **extra)
        (path / "replay.json").write_text(json.dumps({**meta, **sampling}))

    def load(self, path: Path) -> None:
        meta = json.loads((path / "replay.json").read_text())
        kind = meta.get("kind", "transitions")
        if kind != self.storage.kind:
            frames = "true" if kind == "frames" else "false"
            raise ValueError(
                f"{path / 'replay.json'}: holds a {kind} replay (replay.frames: {frames}); "
                f"this run's is a {self.storage.kind} replay"
            )
        with np.load(path / "replay.npz") as npz:
            arrays = dict(npz)
        try:
            self.storage.restore(arrays, meta)
        except ValueError as err:
            raise ValueError(f"{path / 'replay.json'}: {err}") from None
        self.sampler.restore(arrays, meta, self.storage.parts())


@dataclass(frozen=True)
class RowSpec:
    """What collectors send to the loop: raw one-step rows (`n_step` None: on-policy
    rollouts, or a replay that forms n-step returns at sample time), or n-step
    transitions with discount `gamma`, and with them (`priorities`) their initial
    priorities, |n-step TD error| by the collector's copy of the policy (Ape-X)."""

    n_step: int | None = None
    gamma: float = 0.99
    priorities: bool = False


def row_spec(cfg: ExperimentConfig, agent: Agent) -> RowSpec:
    """What `cfg`'s replay wants from `agent`'s collectors."""
    r = cfg.replay
    if agent.on_policy or r is None or r.n_step_at == "sample":
        return RowSpec(None, agent.gamma)
    mode = r.initial_priority or ("td" if cfg.collect.num_actors > 0 else "max")
    return RowSpec(agent.n_step, agent.gamma, r.type == "prioritized" and mode == "td")


def build(cfg: ReplayConfig, spaces: EnvSpaces, seed: int) -> LocalReplay:
    """A replay of whole transitions in this process (also each Ray shard's)."""
    storage = transition_storage(cfg, spaces)
    return LocalReplay(storage, sampler(cfg, storage, seed))


def sampler(cfg: ReplayConfig, storage: Storage, seed: int) -> Sampler:
    if cfg.type == "prioritized":
        return PrioritizedSampler(
            storage.capacity, seed, alpha=cfg.alpha, beta_start=cfg.beta.start,
            beta_end=cfg.beta.end, priority_epsilon=cfg.priority_epsilon,
        )  # fmt: skip
    return UniformSampler(storage.capacity, seed, dense=storage.dense)


def transition_storage(cfg: ReplayConfig, spaces: EnvSpaces) -> TransitionStorage:
    obs = spaces.observation
    return TransitionStorage(
        cfg.capacity, obs.shape, spaces.action.shape, spaces.action.dtype,
        # uint8 pixels are stored as uint8 (a quarter of float32's bytes), the rest float32
        obs_dtype=np.uint8 if obs.dtype == np.uint8 else np.float32,
    )  # fmt: skip


def frame_storage(
    cfg: ReplayConfig, spaces: EnvSpaces, *, n_step: int, gamma: float, streams: int
) -> FrameStorage:
    obs = spaces.observation
    if len(obs.shape) != 3 or obs.dtype != np.uint8:
        raise UserError(
            f"replay.frames: needs stacked uint8 [H, W, K] observations; this env's are "
            f"{obs.dtype} {list(obs.shape)} (set replay.frames: false)"
        )
    try:
        return FrameStorage(
            cfg.capacity, obs.shape, spaces.action.shape, spaces.action.dtype,
            num_streams=streams, n_step=n_step, gamma=gamma,
        )  # fmt: skip
    except ValueError as err:
        raise UserError(str(err)) from None
