"""What both training loops share within one session of a run (from start or resume to the
end of the loop): the run's counters, TensorBoard, the metrics window, the progress bar,
and the periodic logs, evals and checkpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Column

from rlplat import agents
from rlplat.agents.base import TrainResult
from rlplat.config import ExperimentConfig
from rlplat.experience.data import Fragment, Transitions
from rlplat.experience.replay import Replay
from rlplat.experience.sources import Source
from rlplat.logging import MetricsWindow, TensorBoardLogger
from rlplat.loops.counters import RunCounters
from rlplat.text import HEARTBEAT_S, shown


class WeightVersions:
    """The learner step each broadcast weight version was taken at, so a fragment's weight
    lag (in updates) is known when it arrives."""

    KEEP = 100  # versions remembered; an older one counts from the last sync

    def __init__(self, train_steps: int):
        self.steps = {0: train_steps}
        self.synced_at = train_steps

    @property
    def latest(self) -> int:
        return max(self.steps)

    def lag(self, version: int, train_steps: int) -> int:
        return train_steps - self.steps.get(version, self.synced_at)

    def only(self, version: int, train_steps: int) -> None:
        """On-policy: older versions' fragments are dropped anyway."""
        self.steps = {version: train_steps}

    def next(self, train_steps: int) -> int:
        """A new version taken at `train_steps`; returns its number."""
        self.synced_at = train_steps
        version = self.latest + 1
        self.steps[version] = train_steps
        self.steps.pop(version - self.KEEP, None)
        return version


@dataclass
class Session:
    """One session's shared state and steps. `evaluate(step)` runs a periodic eval and
    returns its mean; `checkpoint()` saves one (both belong to the Trainer)."""

    cfg: ExperimentConfig
    agent: agents.Agent
    counters: RunCounters  # the Trainer's, checkpointed
    replay: Replay | None
    tb: TensorBoardLogger
    progress: Progress
    device: str  # where the learner trains (rlplat.learner.Placement)
    distributed: bool  # Ray collectors
    evaluate: Callable[[int], float | None]  # None: stopped by a signal, not recorded
    checkpoint: Callable[[], Path]
    window: MetricsWindow = field(init=False)
    versions: WeightVersions = field(init=False)

    def __post_init__(self) -> None:
        counters, train_steps = self.counters, self.agent.train_steps
        self.window = MetricsWindow(counters.env_steps, train_steps)
        self.versions = WeightVersions(train_steps)
        self.last_return = float("nan")
        evals = counters.evals
        self.last_eval = evals[-1]["return_mean"] if evals else float("nan")
        self._restarts0 = counters.actor_restarts
        self._next_log = _next_multiple(counters.env_steps, self.cfg.train.log_every)
        # from the last recorded eval: an eval a signal stopped is run first on resume
        evaluated = max((e["env_steps"] for e in evals if not e["final"]), default=0)
        self._next_eval = _next_multiple(evaluated, self.cfg.eval.every_env_steps)
        self._next_ckpt = _next_multiple(counters.env_steps, self.cfg.checkpoint.every_env_steps)
        self._beat = (time.monotonic(), counters.env_steps)  # the last plain line's (time, step)
        self._task: TaskID = self.progress.add_task(
            self.cfg.name, total=self.cfg.train.env_steps, completed=counters.env_steps,
            sps=0.0, ret=shown(self.last_return), eval=shown(self.last_eval),
        )  # fmt: skip

    def schedules(self, env_steps: int) -> dict[str, float]:
        """Move the agent's (and replay's) schedules to `env_steps`; returns them to log."""
        progress = min(1.0, env_steps / self.cfg.train.env_steps)
        schedules = self.agent.update_schedules(env_steps, progress)
        if self.replay is not None:
            schedules.update(self.replay.anneal(progress))
        return schedules

    def record(self, f: Fragment) -> None:
        """Count a fragment's env steps and log its episodes (each at the step it ended)."""
        counters = self.counters
        for ep in f.episodes:
            counters.episodes += 1
            self.last_return = ep.ret
            self.tb.scalars(
                {"charts/episodic_return": ep.ret, "charts/episodic_length": ep.length},
                counters.env_steps + ep.index + 1,
            )
        counters.env_steps += f.env_steps
        if self.distributed:
            lag = self.versions.lag(f.version, self.agent.train_steps)
            self.window.add({"collect/weight_lag_updates": float(lag)})

    def count_restarts(self, source: Source) -> None:
        self.counters.actor_restarts = self._restarts0 + source.restarts

    def train(self, batch: Transitions, weights: np.ndarray | None = None) -> TrainResult:
        """One training phase on the learner's device; its metrics go to the window."""
        import tensorflow as tf

        with tf.device(self.device):
            result = self.agent.train(batch, weights)
        self.window.add(result.metrics)
        self.counters.train_phases += 1
        return result

    def log_due(self, step: int) -> bool:
        return step >= self._next_log

    def log(
        self,
        step: int,
        schedules: dict[str, float],
        collect: dict[str, float],
        histograms: dict[str, np.ndarray] | None = None,
    ) -> None:
        """The window's metrics, `schedules`, replay and collection figures (distributed:
        with restarts and weight version), and the loop's own `collect` figures, at `step`."""
        self._next_log = _next_multiple(step, self.cfg.train.log_every)
        scalars = self.window.flush(step, self.agent.train_steps)
        scalars.update(schedules)
        if self.replay is not None:
            scalars["charts/replay_size"] = len(self.replay)
            scalars["charts/replay_ratio"] = (
                self.agent.train_steps * self.cfg.train.batch_size / max(step, 1)
            )
        if self.distributed:
            scalars["collect/actor_restarts"] = float(self.counters.actor_restarts)
            scalars["collect/weight_version"] = float(self.versions.latest)
        scalars.update(collect)
        self.tb.scalars(scalars, step)
        if histograms is not None:
            self.tb.histograms(histograms, step)
        self.progress.update(self._task, sps=scalars["charts/SPS"])

    def evaluate_and_checkpoint(self, step: int) -> None:
        """Periodic evals and checkpoints when due (the final ones are the Trainer's)."""
        total = self.cfg.train.env_steps
        if step >= self._next_eval and step < total:
            mean = self.evaluate(step)
            if mean is None:  # a signal stopped it: the run checkpoints and stops now
                return
            self._next_eval = _next_multiple(step, self.cfg.eval.every_env_steps)
            self.last_eval = mean
        if step >= self._next_ckpt and step < total:
            self._next_ckpt = _next_multiple(step, self.cfg.checkpoint.every_env_steps)
            self.tb.flush()
            self.checkpoint()
        self.progress.update(
            self._task, completed=step, ret=shown(self.last_return), eval=shown(self.last_eval)
        )
        self._heartbeat(step)

    def _heartbeat(self, step: int) -> None:
        """Without the live bar (output piped to a file or a pager), a plain progress line
        every HEARTBEAT_S seconds, so a long run is not silent between evals."""
        now = time.monotonic()
        if not self.progress.disable or now - self._beat[0] < HEARTBEAT_S:
            return
        last_time, last_step = self._beat
        self._beat = (now, step)
        sps = (step - last_step) / max(now - last_time, 1e-9)
        total = self.cfg.train.env_steps
        eta = _clock((total - step) / sps) if sps > 0 else "-"
        self.progress.console.print(
            f"{self.cfg.name}: {step:,}/{total:,} env steps, {sps:,.0f} steps/s, train "
            f"{shown(self.last_return)}, eval {shown(self.last_eval)}, ETA {eta}",
            highlight=False,
        )


# The bar's fields, most important first, each with the widest text it shows. Fields that
# do not fit the terminal are left out whole (last ones first) rather than cut: a count
# cut mid-number reads ten times too small. The bar itself takes what is left (10-40).
_VALUE = 8  # a return as text.shown prints it, e.g. -1234.5


def _fields(name: str, total: int) -> list[tuple[str, int, ProgressColumn]]:
    steps = len(f"{total:,}")
    return [
        ("count", 2 * steps + 1,
         TextColumn("{task.completed:,.0f}/{task.total:,.0f}", table_column=_col(2 * steps + 1))),
        ("eval", 5 + _VALUE, TextColumn("eval {task.fields[eval]}", table_column=_col(5 + _VALUE))),
        ("name", min(len(name), 24),
         TextColumn("[bold]{task.description}", table_column=Column(max_width=24, no_wrap=True,
                                                                     overflow="ellipsis"))),
        ("train", 6 + _VALUE,
         TextColumn("train {task.fields[ret]}", table_column=_col(6 + _VALUE))),
        ("sps", 13, TextColumn("{task.fields[sps]:,.0f} steps/s", table_column=_col(13))),
        ("eta", 8, TimeRemainingColumn(table_column=_col(8))),
    ]  # fmt: skip


def _col(width: int) -> Column:
    return Column(min_width=width, no_wrap=True)


def progress_columns(width: int, name: str, total: int) -> list[ProgressColumn]:
    """The columns that fit `width` terminal columns, in display order."""
    fields = _fields(name, total)
    while fields and sum(w for _, w, _ in fields) + len(fields) - 1 > width:
        fields.pop()
    room = width - sum(w for _, w, _ in fields) - len(fields)
    kept = {key: column for key, _, column in fields}
    order = ["name", "bar", "count", "sps", "train", "eval", "eta"]
    if room >= 10:
        kept["bar"] = BarColumn(bar_width=min(room, 40))
    return [kept[key] for key in order if key in kept]


def progress_bar(console: Console, show: bool | None, name: str, total: int) -> Progress:
    """The live bar (`show` None: on a terminal only), its fields fitted to the console."""
    return Progress(
        *progress_columns(console.width, name, total),
        console=console,
        disable=not (console.is_terminal if show is None else show),
        transient=False,
    )


def _next_multiple(value: int, every: int) -> int:
    return (value // every + 1) * every


def _clock(seconds: float) -> str:
    """H:MM:SS, hours unbounded (a CPU Atari run's ETA is days)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
