"""The replay an experiment asks for: `make` picks local or Ray-sharded, and the storage
and sampler (rlplat/experience/replay.py builds them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlplat.experience.replay import (
    LocalReplay,
    Replay,
    frame_storage,
    sampler,
    transition_storage,
)
from rlplat.experience.sharded import ShardedReplay
from rlplat.experience.storage import Storage

if TYPE_CHECKING:
    from rlplat.config import ReplayConfig
    from rlplat.envs import EnvSpaces


def make(
    cfg: ReplayConfig, spaces: EnvSpaces, seed: int, *, n_step: int, gamma: float,
    num_streams: int,
) -> Replay:  # fmt: skip
    """The replay an experiment's `replay:` section asks for: split over Ray actors when
    `shards` > 0 (Ray must be up), else in this process; frame by frame for `frames`
    (`num_streams` env streams of one-step rows, read back as `n_step` transitions with
    `gamma`)."""
    if cfg.shards:
        return ShardedReplay(cfg, spaces, seed)
    storage: Storage
    if cfg.frames:
        storage = frame_storage(cfg, spaces, n_step=n_step, gamma=gamma, streams=num_streams)
    else:
        storage = transition_storage(cfg, spaces)
    return LocalReplay(storage, sampler(cfg, storage, seed))
