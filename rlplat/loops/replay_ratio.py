"""The off-policy replay ratio, held by a budget of training phases."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class ReplayRatio:
    """One phase of `updates_per_train` gradient steps is due per `train_every` env steps
    after `learning_starts` (and once replay holds anything); `owed` is how many phases
    the learner is behind the data. Collectors stop being relaunched once the learner is
    more than `backlog_phases` behind (what one round of fragments brings), so a slow
    learner holds the ratio instead of falling ever further behind; a learner with
    nothing owed waits for data.
    """

    train_every: int
    learning_starts: int
    backlog_phases: int
    owed: int = 0

    @classmethod
    def for_fragments(
        cls, train_every: int, learning_starts: int, env_steps_per_round: int
    ) -> ReplayRatio:
        """Backlog: the phases that one round of fragments (all collectors) is worth."""
        backlog = math.ceil(env_steps_per_round / train_every)
        return cls(train_every, learning_starts, backlog)

    def due(self, env_steps: int, replay_size: int) -> int:
        """Phases due in all by `env_steps` (counting those already trained)."""
        te, start = self.train_every, self.learning_starts
        if env_steps < start or not replay_size:
            return 0
        return max(0, env_steps // te - math.ceil(start / te) + 1)

    def settle(self, env_steps: int, replay_size: int, phases_done: int) -> int:
        """Recompute and return `owed`."""
        self.owed = self.due(env_steps, replay_size) - phases_done
        return self.owed

    @property
    def behind(self) -> bool:
        """Too far behind the data to ask collectors for more."""
        return self.owed > self.backlog_phases

    @property
    def idle(self) -> bool:
        """Nothing to train: the loop may wait for data."""
        return self.owed == 0
