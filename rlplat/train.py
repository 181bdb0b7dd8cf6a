"""The training loops. Off-policy now: collect → replay → learn, with evals, checkpoints,
TensorBoard and export. The collector is a `LocalCollector` call; Ray actors take its
place without the loop changing (DESIGN.md).
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

import agents
import envs
from rlplat import replay as replay_mod
from rlplat.checkpoint import Checkpointer
from rlplat.collect import LocalCollector
from rlplat.config import ExperimentConfig
from rlplat.data import Transitions
from rlplat.evaluate import EvalResult, run_episodes
from rlplat.replay import NStepAssembler
from rlplat.rundir import write_metadata


@dataclass
class TrainSummary:
    run_dir: str
    env_steps: int
    train_steps: int
    wall_s: float
    env_steps_per_s: float
    updates_per_s: float
    first_threshold: dict[str, float] | None
    final_eval: dict[str, Any]
    export_path: str | None
    evals: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Owns one run: its agent, replay, collector, logger and checkpoints."""

    def __init__(self, cfg: ExperimentConfig, run_dir: Path, console: Console | None = None):
        import tensorflow as tf

        from rlplat.logging import TensorBoardLogger

        self.cfg = cfg
        self.run_dir = run_dir
        self.console = console or Console(stderr=True, soft_wrap=True)
        tf.random.set_seed(cfg.seed)
        self.spaces = envs.spaces(cfg.env)
        self.agent = agents.build(cfg.agent, self.spaces, seed=cfg.seed)
        self.replay = replay_mod.build(cfg.replay, self.spaces, cfg.seed) if cfg.replay else None
        self.collector = LocalCollector(cfg.env, cfg.collect.envs_per_actor, cfg.seed, self.agent)
        self.on_policy = self.agent.on_policy
        self.nstep = (
            None
            if self.on_policy
            else NStepAssembler(self.agent.n_step, self.agent.gamma, self.collector.num_envs)
        )
        self.checkpointer = Checkpointer(
            run_dir / "checkpoints", self.agent, self.replay, cfg.checkpoint.keep
        )
        self.tb_dir = run_dir / "tb"
        self._tb_factory = lambda: TensorBoardLogger(self.tb_dir)
        self.state: dict[str, Any] = {
            "env_steps": 0,
            "episodes": 0,
            "wall_s": 0.0,
            "evals": [],
            "first_threshold": None,
        }

    # ---------------------------------------------------------------- resume
    def resume(self) -> Path | None:
        """Continue from the latest checkpoint; events after it are dropped, not repeated."""
        from rlplat.logging import truncate_events

        path = self.checkpointer.latest()
        if path is None:
            truncate_events(self.tb_dir, -1)
            (self.run_dir / "evals.jsonl").unlink(missing_ok=True)
            return None
        self.state.update(self.checkpointer.restore(path))
        truncate_events(self.tb_dir, self.state["env_steps"])
        with (self.run_dir / "evals.jsonl").open("w") as f:  # evals after it are redone
            f.writelines(json.dumps(record) + "\n" for record in self.state["evals"])
        # Env state is not checkpointed: start new episodes on fresh, step-dependent seeds.
        self.collector.reset(self.cfg.seed + 7919 * self.state["env_steps"])
        if self.nstep is not None:
            self.nstep.reset()
        return path

    # ------------------------------------------------------------------ loop
    def run(self, show_progress: bool | None = None) -> TrainSummary:
        cfg, agent, state = self.cfg, self.agent, self.state
        tb = self._tb_factory()
        total = cfg.train.env_steps
        n_envs = self.collector.num_envs
        # Off-policy: a training phase every `train_every` env steps (rounded up to whole
        # vector steps) of exactly `updates_per_train` gradient steps: a fixed replay ratio.
        # On-policy: a phase per rollout of `collect.rollout_length` steps per env.
        if self.on_policy:
            vector_steps = cfg.collect.rollout_length
        else:
            vector_steps = math.ceil(cfg.train.train_every / n_envs)
        wall0, t0 = state["wall_s"], time.perf_counter()
        session_steps0, train_steps0 = state["env_steps"], agent.train_steps
        window = _Window(state["env_steps"], agent.train_steps)
        next_log = _next_multiple(state["env_steps"], cfg.train.log_every)
        next_eval = _next_multiple(state["env_steps"], cfg.eval.every_env_steps)
        next_ckpt = _next_multiple(state["env_steps"], cfg.checkpoint.every_env_steps)
        last_train_return = float("nan")
        sample = result = None
        last_eval = state["evals"][-1]["return_mean"] if state["evals"] else float("nan")

        def wall() -> float:
            return wall0 + time.perf_counter() - t0

        progress = _progress(self.console, show_progress)
        task = progress.add_task(
            cfg.name, total=total, completed=state["env_steps"], sps=0.0,
            ret=last_train_return, eval=last_eval,
        )  # fmt: skip
        with progress, _StopOnSigint() as stop:
            while state["env_steps"] < total and not stop.requested:
                progress_frac = state["env_steps"] / total
                schedules = agent.update_schedules(state["env_steps"], progress_frac)
                if self.replay is not None:
                    schedules.update(self.replay.anneal(progress_frac))
                steps = vector_steps  # on-policy: whole rollouts (GAE wants fixed lengths)
                if not self.on_policy:  # off-policy: stop exactly at the budget
                    steps = min(steps, math.ceil((total - state["env_steps"]) / n_envs))
                batch, episodes = self.collector.collect(steps, explore=True)
                if not self.on_policy:
                    assembled = self.nstep.add(batch)
                    if assembled is not None:
                        self.replay.add(assembled)
                for ep in episodes:  # each at the env step where it ended
                    state["episodes"] += 1
                    last_train_return = ep.ret
                    tb.scalars(
                        {"charts/episodic_return": ep.ret, "charts/episodic_length": ep.length},
                        state["env_steps"] + ep.index + 1,
                    )
                state["env_steps"] += len(batch)
                step = state["env_steps"]
                if self.on_policy:
                    result = agent.train(_time_major(batch, n_envs))
                    window.add(result.metrics)
                elif step >= cfg.train.learning_starts and len(self.replay):
                    sample = self.replay.sample(cfg.train.batch_size, cfg.train.updates_per_train)
                    result = agent.train(sample.batch, sample.weights)
                    if result.td_errors is not None:
                        self.replay.update_priorities(sample.indices, result.td_errors)
                    window.add(result.metrics)
                    if sample.weights is not None:
                        window.add_is_weights(sample.weights)
                if step >= next_log:
                    next_log = _next_multiple(step, cfg.train.log_every)
                    scalars = window.flush(step, agent.train_steps)
                    scalars.update(schedules)
                    if self.replay is not None:
                        scalars["charts/replay_size"] = len(self.replay)
                    tb.scalars(scalars, step)
                    if sample is not None and result is not None:
                        hists = {"replay/td_errors": result.td_errors}
                        if sample.priorities is not None:
                            hists["replay/sampled_priorities"] = sample.priorities
                        tb.histograms(hists, step)
                    progress.update(task, sps=scalars["charts/SPS"])
                if step >= next_eval and step < total:
                    next_eval = _next_multiple(step, cfg.eval.every_env_steps)
                    last_eval = self._evaluate(cfg.eval.episodes, step, wall(), tb).mean
                if step >= next_ckpt and step < total:
                    next_ckpt = _next_multiple(step, cfg.checkpoint.every_env_steps)
                    tb.flush()
                    self._checkpoint(wall())
                progress.update(task, completed=step, ret=last_train_return, eval=last_eval)
        if stop.requested:  # Ctrl-C: finish the iteration, checkpoint, then stop
            tb.close()
            path = self._checkpoint(wall())
            self.console.print(
                f"interrupted at {state['env_steps']:,} env steps; saved {path}\n"
                f"resume with: rlplat train --resume {self.run_dir}",
                highlight=False,
            )
            raise KeyboardInterrupt

        final = self._evaluate(cfg.eval.final_episodes, state["env_steps"], wall(), tb, final=True)
        tb.close()
        self._checkpoint(wall())
        export_path = self.export() if cfg.export.enabled else None
        elapsed = max(time.perf_counter() - t0, 1e-9)
        summary = TrainSummary(
            run_dir=str(self.run_dir),
            env_steps=state["env_steps"],
            train_steps=agent.train_steps,
            wall_s=wall(),
            env_steps_per_s=(state["env_steps"] - session_steps0) / elapsed,
            updates_per_s=(agent.train_steps - train_steps0) / elapsed,
            first_threshold=state["first_threshold"],
            final_eval=final.to_dict(),
            export_path=str(export_path) if export_path else None,
            evals=state["evals"],
        )
        (self.run_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
        return summary

    # --------------------------------------------------------------- helpers
    def _evaluate(
        self, episodes: int, step: int, wall_s: float, tb: Any, final: bool = False
    ) -> EvalResult:
        result = run_episodes(
            lambda obs: self.agent.act(obs, explore=False), self.cfg.env, episodes, self.cfg.seed
        )
        record = {
            "env_steps": step,
            "wall_s": round(wall_s, 3),
            "episodes": episodes,
            "return_mean": result.mean,
            "return_std": result.std,
            "final": final,
        }
        self.state["evals"].append(record)
        with (self.run_dir / "evals.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        tb.scalars(
            {
                "eval/return_mean": result.mean,
                "eval/return_std": result.std,
                "eval/length_mean": float(np.mean(result.lengths)),
            },
            step,
        )
        threshold = self.cfg.eval.threshold
        if (
            threshold is not None
            and self.state["first_threshold"] is None
            and result.mean >= threshold
        ):
            self.state["first_threshold"] = {"env_steps": step, "wall_s": round(wall_s, 3)}
        label = "final eval" if final else "eval"
        self.console.print(
            f"{label} @ {step:,} env steps ({wall_s:.0f}s): return {result.mean:.1f} "
            f"± {result.std:.1f} over {episodes} episodes"
        )
        if final:
            (self.run_dir / "eval_final.json").write_text(
                json.dumps({"env_steps": step, **result.to_dict()}, indent=2)
            )
        return result

    def _checkpoint(self, wall_s: float) -> Path:
        self.state["wall_s"] = wall_s
        return self.checkpointer.save(self.state)

    def export(self) -> Path:
        path = _export(self.cfg, self.agent, self.spaces, self.run_dir, self.state)
        self.console.print(f"exported {path}")
        return path


def export_metadata(
    cfg: ExperimentConfig, spaces: envs.EnvSpaces, run_dir: Path, state: dict[str, Any]
) -> dict[str, Any]:
    """What a server or `rlplat play` needs to know beside the graph (assets.extra)."""
    return {
        "name": cfg.name,
        "env": cfg.env.model_dump(mode="json"),
        "observation_shape": list(spaces.observation.shape),
        "action_space": repr(spaces.action),
        "agent_type": cfg.agent.type,
        "run_dir": str(run_dir),
        "env_steps": state.get("env_steps"),
        "config": cfg.to_dict(),
    }


def export_run(run_dir: Path, model_base_path: Path | None = None) -> Path:
    """Export the latest checkpoint of `run_dir` as the next version of its model."""
    from rlplat.checkpoint import latest_checkpoint
    from rlplat.rundir import load_run_config

    overrides = [f"export.model_base_path={model_base_path}"] if model_base_path else []
    cfg = load_run_config(run_dir, overrides)
    ckpt = latest_checkpoint(run_dir)
    spaces = envs.spaces(cfg.env)
    agent = agents.build(cfg.agent, spaces, seed=cfg.seed)
    checkpointer = Checkpointer(run_dir / "checkpoints", agent, None, cfg.checkpoint.keep)
    state = checkpointer.restore(ckpt, with_replay=False)
    return _export(cfg, agent, spaces, run_dir, state)


def _export(
    cfg: ExperimentConfig,
    agent: agents.Agent,
    spaces: envs.EnvSpaces,
    run_dir: Path,
    state: dict[str, Any],
) -> Path:
    from rlplat.export import export_saved_model

    return export_saved_model(
        agent.serving_module(),
        Path(cfg.export.model_base_path),
        cfg.name,
        export_metadata(cfg, spaces, run_dir, state),
    )


def train(
    cfg: ExperimentConfig,
    run_dir: Path,
    resume: bool = False,
    show_progress: bool | None = None,
    console: Console | None = None,
) -> TrainSummary:
    """Train `cfg` in `run_dir` (continuing its latest checkpoint when `resume`)."""
    if not resume:
        write_metadata(run_dir, cfg)
    trainer = Trainer(cfg, run_dir, console)
    if resume:
        path = trainer.resume()
        where = f"{path.name} ({trainer.state['env_steps']:,} env steps)" if path else "scratch"
        trainer.console.print(f"resuming {run_dir} from {where}")
    return trainer.run(show_progress)


class _Window:
    """Averages train metrics and measures rates between two log points."""

    def __init__(self, env_steps: int, train_steps: int):
        self._sums: dict[str, float] = defaultdict(float)
        self._count = 0
        self._min: float | None = None
        self._t, self._env, self._train = time.perf_counter(), env_steps, train_steps

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self._sums[k] += v
        self._count += 1

    def add_is_weights(self, weights: np.ndarray) -> None:
        """Prioritized replay's importance weights: mean (summed like metrics) and min."""
        self._sums["replay/is_weight_mean"] += float(weights.mean())
        low = float(weights.min())
        self._min = low if self._min is None else min(self._min, low)

    def flush(self, env_steps: int, train_steps: int) -> dict[str, float]:
        now = time.perf_counter()
        dt = max(now - self._t, 1e-9)
        out = {k: v / self._count for k, v in self._sums.items()} if self._count else {}
        if self._min is not None:
            out["replay/is_weight_min"] = self._min
            self._min = None
        out["charts/SPS"] = (env_steps - self._env) / dt
        out["charts/updates_per_s"] = (train_steps - self._train) / dt
        out["charts/train_steps"] = float(train_steps)
        self._sums.clear()
        self._count = 0
        self._t, self._env, self._train = now, env_steps, train_steps
        return out


def _time_major(batch: Transitions, num_envs: int) -> Transitions:
    """Collector rows are ordered (step, env): view them as [T, N, ...] for on-policy."""

    def shape(a: np.ndarray) -> np.ndarray:
        return a.reshape(-1, num_envs, *a.shape[1:])

    return Transitions(
        shape(batch.obs), shape(batch.action), shape(batch.reward), shape(batch.next_obs),
        shape(batch.discount), shape(batch.last),
    )  # fmt: skip


class _StopOnSigint:
    """First Ctrl-C asks the loop to stop at the end of its iteration (so the checkpoint
    is consistent); a second one interrupts at once."""

    requested = False

    def __enter__(self) -> _StopOnSigint:
        self._old = None
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _next_multiple(value: int, every: int) -> int:
    return (value // every + 1) * every


def _progress(console: Console, show: bool | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("env steps  {task.fields[sps]:,.0f}/s"),
        TextColumn("train {task.fields[ret]:.1f}"),
        TextColumn("eval {task.fields[eval]:.1f}"),
        TimeRemainingColumn(),
        console=console,
        disable=not (console.is_terminal if show is None else show),
        transient=False,
    )


__all__ = ["Trainer", "TrainSummary", "train"]
