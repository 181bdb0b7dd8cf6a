"""A training run's life: Ray (when collectors or replay shards need it), set-up, resume,
the loop, the final eval, checkpoints, export and shutdown.

The loop itself is one of two, chosen once from `agent.on_policy` (rlplat/loops/):
on-policy or off-policy, each fed by a collection `Source` (rlplat/experience/sources.py), local or
Ray collectors alike.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from rlplat import agents, envs
from rlplat.checkpoint import Checkpointer
from rlplat.cluster import Cluster, start_cluster
from rlplat.config import ExperimentConfig
from rlplat.evaluate import EvalHeartbeat, EvalResult, EvalStopped, run_episodes
from rlplat.experience import factory as replay_factory
from rlplat.experience.collect import CollectorDiedError
from rlplat.experience.replay import Replay
from rlplat.experience.sharded import ReplayShardError
from rlplat.experience.sources import Source, open_source
from rlplat.logging import TensorBoardLogger
from rlplat.loops.counters import RunCounters
from rlplat.loops.off_policy import train_off_policy
from rlplat.loops.on_policy import train_on_policy
from rlplat.loops.session import Session, progress_bar
from rlplat.run_export import export_agent, export_skip_reason
from rlplat.rundir import record_resume, resume_changes, resume_command, write_metadata
from rlplat.signals import Interrupted, StopOnSignals
from rlplat.text import shown


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
    actor_restarts: int = 0
    stale_fragments: int = 0
    evals: list[dict[str, Any]] = field(default_factory=list)


class Trainer:
    """Owns one run: its agent, replay, collection source, logs, checkpoints and export."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        console: Console | None = None,
        cluster: Cluster | None = None,
    ):
        import tensorflow as tf

        from rlplat.learner import configure_tensorflow, learner_scope

        self.cfg = cfg
        self.run_dir = run_dir
        self.console = console or _stderr_console()
        self.placement = configure_tensorflow(cfg.learner)
        tf.random.set_seed(cfg.seed)
        self.spaces = envs.spaces(cfg.env)
        with learner_scope(self.placement), _python_random_seeded(cfg.seed):
            self.agent = agents.build(
                cfg.agent, self.spaces, cfg.seed, self.placement.mixed_precision
            )
        # Ray for the Trainer's whole life (a resume restores sharded replay before the loop).
        self._own_cluster = cluster is None
        self.cluster = cluster if cluster is not None else start_cluster(cfg, console=console)
        self.ray_info = self.cluster.info
        self.replay: Replay | None = None
        try:
            if cfg.replay:
                self.replay = replay_factory.make(
                    cfg.replay, self.spaces, cfg.seed, n_step=self.agent.n_step,
                    gamma=self.agent.gamma,
                    num_streams=max(1, cfg.collect.num_actors) * cfg.collect.envs_per_actor,
                )  # fmt: skip
            if cfg.replay and cfg.replay.shards:
                self.console.print(f"replay: {cfg.replay.shards} Ray shards", highlight=False)
        except BaseException:
            self.close()
            raise
        self.checkpointer = Checkpointer(
            run_dir / "checkpoints", self.agent, self.replay, cfg.checkpoint.keep
        )
        self.tb_dir = run_dir / "tb"
        self.counters = RunCounters()  # checkpointed, and restored by `resume`
        # Called after each periodic eval with its record and a checkpoint of that point
        # (a sweep's trial reports both to Ray Tune: rlplat/tune.py).
        self.on_eval: Callable[[dict[str, Any], Path], None] | None = None

    def close(self) -> None:
        """Release replay shards, and Ray if this Trainer started it."""
        if self.replay is not None:
            self.replay.close()
        if self._own_cluster:
            self.cluster.close()

    # ---------------------------------------------------------------- resume
    def resume(self) -> Path | None:
        """Continue from the latest checkpoint; events after it are dropped, not repeated."""
        from rlplat.logging import truncate_events

        found = self.checkpointer.restore_newest(self._warn)
        if found is None:
            truncate_events(self.tb_dir, -1)
            (self.run_dir / "evals.jsonl").unlink(missing_ok=True)
            return None
        path, state = found
        self.counters = RunCounters.from_checkpoint(state, self.cfg.train.updates_per_train)
        # The checkpoint restored the optimizer's own learning rate; this run's config (a
        # changed one: a PBT mutation) is in force at once, also when no update follows
        # (a checkpoint at the budget: the run only evaluates).
        steps = self.counters.env_steps
        self.agent.update_schedules(steps, min(1.0, steps / self.cfg.train.env_steps))
        truncate_events(self.tb_dir, steps)
        with (self.run_dir / "evals.jsonl").open("w") as f:  # evals after it are redone
            f.writelines(json.dumps(record) + "\n" for record in self.counters.evals)
        return path

    # ------------------------------------------------------------------- run
    def run(
        self, show_progress: bool | None = None, signals: StopOnSignals | None = None
    ) -> TrainSummary:
        """Train to the budget. `signals`: the caller's handlers (else installed here for
        the run), so that SIGINT and SIGTERM end the loop with a checkpoint."""
        t0 = time.perf_counter()  # wall time includes starting Ray and the collectors
        if self.ray_info is not None:
            self._write_ray_json({}, 0)
        own = signals is None
        signals = signals or StopOnSignals()
        if own:
            signals.install()
        try:
            source = self._open_source()
            try:
                return self._train(source, show_progress, t0, signals)
            finally:
                source.close()
        finally:
            if own:
                signals.restore()

    def _open_source(self) -> Source:
        # Env state is not checkpointed: a resumed run starts new episodes on fresh,
        # step-dependent seeds.
        steps = self.counters.env_steps
        seed = self.cfg.seed + 7919 * steps if steps else self.cfg.seed
        return open_source(
            self.cfg, self.agent, seed, self.ray_info, self.console, self._write_ray_json
        )

    def _write_ray_json(
        self, collectors: dict[int, int], restarts: int, nodes: dict[int, dict] | None = None
    ) -> None:
        """ray.json: the Ray session, collector and replay shard pids, and the node (id, IP)
        each collector runs on (for operators, and for the fault-injection tests)."""
        record = {
            "ray": self.ray_info,
            "collectors": {str(k): v for k, v in sorted(collectors.items())},
            "collector_nodes": {str(k): v for k, v in sorted((nodes or {}).items())},
            "collector_restarts": restarts,
            "replay_shards": self.replay.pids() if self.replay is not None else [],
        }
        tmp = self.run_dir / ".ray.json.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(self.run_dir / "ray.json")

    def _train(
        self, source: Source, show_progress: bool | None, t0: float, stop: StopOnSignals
    ) -> TrainSummary:
        """The loop for the agent's regime, then the end of the run (or of this session)."""
        wall0, steps0 = self.counters.wall_s, self.counters.env_steps
        updates0 = self.agent.train_steps

        def wall() -> float:
            return wall0 + time.perf_counter() - t0

        tb = TensorBoardLogger(self.tb_dir)
        episodes = self.cfg.eval.episodes
        run = Session(
            self.cfg, self.agent, self.counters, self.replay, tb,
            progress_bar(self.console, show_progress, self.cfg.name, self.cfg.train.env_steps),
            self.placement.device,
            distributed=self.cfg.collect.num_actors > 0,
            evaluate=lambda step: self._periodic_eval(episodes, step, wall(), tb, stop),
            checkpoint=lambda: self._checkpoint(wall()),
        )  # fmt: skip
        try:
            with run.progress, stop.armed():
                if self.agent.on_policy:
                    train_on_policy(run, source, stop)
                else:
                    assert self.replay is not None, "off-policy agents need a replay: section"
                    train_off_policy(run, source, self.replay, stop)
        except CollectorDiedError:  # the error says how to resume (rlplat.train.train)
            tb.close()
            path = self._checkpoint(wall())
            self.console.print(
                f"saved {path} ({self.counters.env_steps:,} env steps)", highlight=False
            )
            raise
        if stop.requested:  # Ctrl-C or SIGTERM: finish the iteration, checkpoint, then stop
            tb.close()
            path = self._checkpoint(wall())
            self.console.print(
                f"interrupted ({signal.Signals(stop.requested).name}) at "
                f"{self.counters.env_steps:,} env steps; saved {path}\n"
                f"resume with: {resume_command(self.run_dir, self.ray_info)}",
                highlight=False,
            )
            raise Interrupted(stop.requested, reported=True)
        return self._finish(tb, wall, t0, steps0, updates0)

    def _finish(
        self, tb: TensorBoardLogger, wall: Callable[[], float], t0: float, steps0: int,
        updates0: int,
    ) -> TrainSummary:  # fmt: skip
        """Final eval, checkpoint, export (as `export.when` says) and summary.json."""
        counters = self.counters
        final = self._evaluate(self.cfg.eval.final_episodes, counters.env_steps, wall(), tb, True)
        tb.close()
        self._checkpoint(wall())
        export_path = self._export_if_due(final.mean)
        elapsed = max(time.perf_counter() - t0, 1e-9)
        summary = TrainSummary(
            run_dir=str(self.run_dir),
            env_steps=counters.env_steps,
            train_steps=self.agent.train_steps,
            wall_s=wall(),
            env_steps_per_s=(counters.env_steps - steps0) / elapsed,
            updates_per_s=(self.agent.train_steps - updates0) / elapsed,
            first_threshold=counters.first_threshold,
            final_eval=final.to_dict(),
            export_path=str(export_path) if export_path else None,
            actor_restarts=counters.actor_restarts,
            stale_fragments=counters.stale_fragments,
            evals=counters.evals,
        )
        (self.run_dir / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
        return summary

    # ------------------------------------------------------- evals, checkpoints
    def _evaluate(
        self, episodes: int, step: int, wall_s: float, tb: TensorBoardLogger, final: bool = False,
        stop: Callable[[], bool] | None = None,
    ) -> EvalResult:  # fmt: skip
        label = f"{'final eval' if final else 'eval'} @ {step:,} env steps"
        result = run_episodes(
            lambda obs: self.agent.act(obs, explore=False), self.cfg.env, episodes,
            self.cfg.seed, stop=stop, on_progress=EvalHeartbeat(self._warn, label, episodes),
        )  # fmt: skip
        record = {"env_steps": step, "wall_s": round(wall_s, 3), "episodes": episodes,
                  "return_mean": result.mean, "return_std": result.std, "final": final}  # fmt: skip
        self.counters.evals.append(record)
        with (self.run_dir / "evals.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        tb.scalars({"eval/return_mean": result.mean, "eval/return_std": result.std,
                    "eval/length_mean": float(np.mean(result.lengths))}, step)  # fmt: skip
        if self.cfg.eval.video and not final:
            self._log_episode_animation(tb, step)
        threshold = self.cfg.eval.threshold
        reached = threshold is not None and result.mean >= threshold
        if reached and self.counters.first_threshold is None:
            self.counters.first_threshold = {"env_steps": step, "wall_s": round(wall_s, 3)}
        self._report_eval(result, step, wall_s, episodes, final)
        return result

    def _periodic_eval(
        self, episodes: int, step: int, wall_s: float, tb: TensorBoardLogger, stop: StopOnSignals
    ) -> float | None:
        """The eval's mean; None when Ctrl-C or SIGTERM came during it: it stops at once
        (the run then checkpoints) and a resumed run evaluates first (Session)."""
        try:
            mean = self._evaluate(
                episodes, step, wall_s, tb, stop=lambda: stop.requested is not None
            ).mean
        except EvalStopped:
            return None
        if self.on_eval is not None:
            tb.flush()
            self.on_eval(self.counters.evals[-1], self._checkpoint(wall_s))
        return mean

    def _report_eval(
        self, result: EvalResult, step: int, wall_s: float, episodes: int, final: bool
    ) -> None:
        label = "final eval" if final else "eval"
        self.console.print(
            f"{label} @ {step:,} env steps ({wall_s:.0f}s): return {shown(result.mean)} "
            f"± {shown(result.std)} over {episodes} episodes"
        )
        if final:
            (self.run_dir / "eval_final.json").write_text(
                json.dumps({"env_steps": step, **result.to_dict()}, indent=2)
            )

    def _log_episode_animation(self, tb: TensorBoardLogger, step: int) -> None:
        """Episode 0 of this eval (same seed), rendered, as an animated GIF in TensorBoard."""
        from rlplat.media import env_fps, gif_bytes

        frames: list[np.ndarray] = []
        run_episodes(
            lambda obs: self.agent.act(obs, explore=False), self.cfg.env, 1, self.cfg.seed,
            render_mode="rgb_array", on_frame=lambda _, frame, *__: frames.append(frame),
        )  # fmt: skip
        if not frames or frames[0] is None:
            return
        gif, height, width = gif_bytes(frames, env_fps(self.cfg.env))
        tb.animation("eval/episode", gif, height, width, step)

    def _checkpoint(self, wall_s: float) -> Path:
        self.counters.wall_s = wall_s
        return self.checkpointer.save(self.counters.to_checkpoint())

    # ---------------------------------------------------------------- export
    def export(self) -> Path:
        state = self.counters.to_checkpoint()
        return export_agent(self.cfg, self.agent, self.spaces, self.run_dir, state)

    def _export_if_due(self, final_mean: float) -> Path | None:
        """Export unless `export.when` says not to; a skipped export is said in one line."""
        why = export_skip_reason(self.cfg, final_mean)
        if why is None:
            return self.export()
        self.console.print(
            f"export skipped: {why}; export it anyway with: rlplat export {self.run_dir}",
            highlight=False,
        )
        return None

    def _warn(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)


def train(
    cfg: ExperimentConfig,
    run_dir: Path,
    resume: bool = False,
    show_progress: bool | None = None,
    console: Console | None = None,
    address: str | None = None,
    dashboard: bool = False,
    cluster: Cluster | None = None,
    argv: list[str] | None = None,
) -> TrainSummary:
    """Train `cfg` in `run_dir` (continuing its latest checkpoint when `resume`).

    `cluster`: the Ray the caller started (`start_cluster`) and will close; else one is
    started here, joining `address` if given, for `collect.num_actors` or replay shards.
    `argv`: the command run.json records (default: this process's).
    """
    from rlplat.errors import UserError

    changes = resume_changes(run_dir, cfg) if resume else {}
    # SIGTERM (timeout, systemd, Slurm, Kubernetes) is Ctrl-C: from here on, and again once
    # Ray is up (ray.init puts its own SIGTERM handlers in place, which exit at once).
    signals = StopOnSignals()
    signals.install()
    own_cluster, trainer = cluster is None, None
    try:
        if cluster is None:
            cluster = start_cluster(cfg, address, dashboard, console)
            signals.install()
        if not resume:  # after Ray: a cluster that cannot be joined leaves no run behind
            write_metadata(run_dir, cfg, argv)
        trainer = Trainer(cfg, run_dir, console, cluster)
        if resume:
            _resume(trainer, changes, argv)
        return trainer.run(show_progress, signals)
    except (ReplayShardError, CollectorDiedError) as err:
        hint = resume_command(run_dir, cluster.info if cluster else None)
        raise UserError(f"{err}; resume with: {hint}") from None
    except Interrupted as exc:
        if not exc.reported:  # outside the loop (start-up, final eval): the last checkpoint
            _stderr_line(
                f"interrupted ({signal.Signals(exc.signum).name}); resume with: "
                f"{resume_command(run_dir, cluster.info if cluster else None)}"
            )
        raise
    finally:
        try:
            if trainer is not None:
                trainer.close()
            if own_cluster and cluster is not None:
                cluster.close()
        finally:
            signals.restore()


def _resume(trainer: Trainer, changes: dict[str, Any], argv: list[str] | None = None) -> None:
    path = trainer.resume()
    where = f"{path.name} ({trainer.counters.env_steps:,} env steps)" if path else "scratch"
    trainer.console.print(f"resuming {trainer.run_dir} from {where}", highlight=False)
    record_resume(trainer.run_dir, trainer.cfg, changes, path.name if path else None, argv)


def _stderr_console() -> Console:
    return Console(stderr=True, soft_wrap=True)


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


__all__ = ["Cluster", "Interrupted", "StopOnSignals", "Trainer", "TrainSummary", "start_cluster"]
__all__ += ["train"]


@contextlib.contextmanager
def _python_random_seeded(seed: int) -> Iterator[None]:
    """Python's `random` seeded while an agent is built: tf-keras draws the seed of every
    unseeded initializer from it, so tf.random.set_seed alone left a DQN's initial weights
    (and so its whole run) different every time. The process's own sequence is put back
    afterwards, so nothing else (Ray's choices, two runs in one process) shares the run's."""
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)
