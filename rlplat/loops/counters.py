"""The run's counters: what a run has done so far, kept by the Trainer, advanced by the loops
(through `Session`), saved in each checkpoint's state.json and restored on resume."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunCounters:
    env_steps: int = 0
    episodes: int = 0  # training episodes ended
    wall_s: float = 0.0  # the run's wall time up to the last checkpoint, all sessions
    # every eval's record, as in evals.jsonl (rlplat.train.Trainer._evaluate)
    evals: list[dict[str, Any]] = field(default_factory=list)
    # where the first eval reached eval.threshold: {"env_steps": ..., "wall_s": ...}
    first_threshold: dict[str, float] | None = None
    train_phases: int = 0  # training phases done (the off-policy replay ratio owes against it)
    actor_restarts: int = 0  # Ray collectors replaced
    stale_fragments: int = 0  # on-policy fragments dropped for old weights

    def to_checkpoint(self) -> dict[str, Any]:
        """state.json's counters, under the keys (and in the order) the dict they replace
        had, so that checkpoints read the same whichever rlplat wrote them."""
        return {
            "env_steps": self.env_steps,
            "episodes": self.episodes,
            "wall_s": self.wall_s,
            "evals": [dict(e) for e in self.evals],
            "first_threshold": None if self.first_threshold is None else dict(self.first_threshold),
            "train_phases": self.train_phases,
            "actor_restarts": self.actor_restarts,
            "stale_fragments": self.stale_fragments,
        }

    @classmethod
    def from_checkpoint(cls, state: Mapping[str, Any], updates_per_train: int) -> RunCounters:
        """The counters in a checkpoint's state.json. Keys it lacks keep their defaults (a
        checkpoint of an older rlplat); keys that are not counters (`train_steps`, `agent`:
        the Checkpointer's) are ignored, except that a checkpoint without `train_phases`
        (written before phases were counted) has them from its `train_steps`."""
        counters = cls()
        for name in counters.to_checkpoint():
            if name in state:
                setattr(counters, name, state[name])
        counters.env_steps = int(counters.env_steps)
        counters.wall_s = float(counters.wall_s)
        if "train_phases" not in state:
            counters.train_phases = int(state.get("train_steps", 0)) // updates_per_train
        return counters
