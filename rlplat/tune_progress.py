"""What `rlplat tune` shows while trials run: one plain line per trial report and per
trial end (trials running and done, the best so far), in place of Ray Tune's status
tables (`--verbose` keeps those)."""

from __future__ import annotations

import sys
from typing import Any

from ray.tune import Callback

from rlplat.text import shown
from rlplat.tune_space import finite


class SweepProgress(Callback):
    """A Ray Tune callback in the sweep's own process (the driver). It writes to stderr
    itself, holding no console: Ray Tune pickles its callbacks with the sweep's state."""

    def __init__(self, phase: str, metric: str, mode: str) -> None:
        self.phase, self.metric, self.mode = phase, metric, mode
        self.best: tuple[str, float] | None = None  # (trial, score)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any
    ) -> None:
        score = finite(result.get(self.metric))
        if score is not None and (self.best is None or self._better(score, self.best[1])):
            self.best = (str(trial), score)
        line = (
            f"{trial}: {int(result.get('env_steps', 0)):,} env steps, {self.metric} {_text(score)}"
        )
        self._print(line, trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        end = "finished" if last.get("final") else "stopped early by the scheduler"
        steps = f" at {int(last['env_steps']):,} env steps" if "env_steps" in last else ""
        self._print(f"{trial}: {end}{steps}", trials, ended=trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        where = f" (details: {trial.path}/error.txt)" if trial.path else ""
        self._print(f"{trial}: failed{where}", trials, ended=trial)

    def _better(self, score: float, than: float) -> bool:
        return score > than if self.mode == "max" else score < than

    def _print(self, line: str, trials: list[Any], ended: Any = None) -> None:
        # Ray Tune calls on_trial_complete/_error before it changes the trial's status
        states = ["TERMINATED" if t is ended else t.status for t in trials]
        done = sum(s in ("TERMINATED", "ERROR") for s in states)
        best = f"; best {self.best[0]} {_text(self.best[1])}" if self.best else ""
        running = states.count("RUNNING")
        print(f"[{self.phase}] {line} ({running} running, {done}/{len(trials)} done{best})",
              file=sys.stderr, flush=True)  # fmt: skip


def _text(score: float | None) -> str:
    return "not reached" if score is None else shown(score)
