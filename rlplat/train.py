"""The training loop: collect → (replay →) learn, with evals, checkpoints, TensorBoard and
export, for off-policy and on-policy agents alike. Collection is a `_Source`: one collector
in this process (`collect.num_actors: 0`) or Ray collector actors running concurrently
with the learner; the loop is the same for both (DESIGN.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
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
from agents.actors import ActorPolicy
from rlplat import replay as replay_mod
from rlplat.checkpoint import Checkpointer
from rlplat.collect import Collector, Fragment, RolloutGather, ray_collectors
from rlplat.config import ExperimentConfig
from rlplat.data import Transitions
from rlplat.evaluate import EvalResult, run_episodes
from rlplat.rundir import record_resume, resume_changes, write_metadata
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
    """Owns one run: its agent, replay, collectors, logger and checkpoints."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        console: Console | None = None,
        address: str | None = None,
        dashboard: bool = False,
    ):
        import tensorflow as tf

        from rlplat.learner import configure_tensorflow
        from rlplat.logging import TensorBoardLogger

        self.cfg = cfg
        self.run_dir = run_dir
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.placement = configure_tensorflow(cfg.learner)
        tf.random.set_seed(cfg.seed)
        self.spaces = envs.spaces(cfg.env)
        with tf.device(self.placement.device):
            self.agent = agents.build(cfg.agent, self.spaces, seed=cfg.seed)
        # Ray, when collectors or replay shards need it: for the Trainer's whole life
        # (a resume restores sharded replay before the loop starts).
        shards = cfg.replay.shards if cfg.replay else 0
        self.ray_info: dict[str, Any] | None = None
        if cfg.collect.num_actors > 0 or shards > 0:
            from rlplat import cluster

            self.ray_info = cluster.start(address, cfg.collect.num_actors, dashboard)
            if self.ray_info.get("dashboard"):
                self.console.print(f"Ray dashboard: {self.ray_info['dashboard']}")
        self.replay: Any = None
        try:
            if shards:
                self.replay = replay_mod.ShardedReplay(cfg.replay, self.spaces, cfg.seed)
                self.console.print(f"replay: {shards} Ray shards", highlight=False)
            elif cfg.replay:
                self.replay = replay_mod.build(cfg.replay, self.spaces, cfg.seed)
        except BaseException:
            self.close()
            raise
        self.on_policy = self.agent.on_policy
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
            "train_phases": 0,
            "actor_restarts": 0,
            "stale_fragments": 0,
        }

    def close(self) -> None:
        """Release replay shards and the embedded Ray (if this run started one)."""
        from rlplat import cluster

        if self.replay is not None and hasattr(self.replay, "close"):
            self.replay.close()
        if self.ray_info is not None and self.ray_info["local"]:
            cluster.stop()

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
        self.state.update(state)
        self.state.setdefault(
            "train_phases", self.state["train_steps"] // self.cfg.train.updates_per_train
        )
        truncate_events(self.tb_dir, self.state["env_steps"])
        with (self.run_dir / "evals.jsonl").open("w") as f:  # evals after it are redone
            f.writelines(json.dumps(record) + "\n" for record in self.state["evals"])
        return path

    # ------------------------------------------------------------------ loop
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
                return self._run(source, show_progress, t0, signals)
            finally:
                source.close()
        finally:
            if own:
                signals.restore()

    def _open_source(self) -> _Source:
        # Env state is not checkpointed: a resumed run starts new episodes on fresh,
        # step-dependent seeds.
        steps = self.state["env_steps"]
        seed = self.cfg.seed + 7919 * steps if steps else self.cfg.seed
        if self.cfg.collect.num_actors == 0:
            return _LocalSource(self.cfg, self.agent, seed)
        return _RaySource(
            self.cfg, self.agent, seed, self.ray_info, self.console, self._write_ray_json
        )

    def _write_ray_json(
        self, collectors: dict[int, int], restarts: int, nodes: dict[int, dict] | None = None
    ) -> None:
        """ray.json: the Ray session, collector and replay shard pids, and the node (id, IP)
        each collector runs on (for operators, and for the fault-injection tests)."""
        shards = self.replay.pids() if hasattr(self.replay, "pids") else []
        record = {
            "ray": self.ray_info,
            "collectors": {str(k): v for k, v in sorted(collectors.items())},
            "collector_nodes": {str(k): v for k, v in sorted((nodes or {}).items())},
            "collector_restarts": restarts,
            "replay_shards": shards,
        }
        tmp = self.run_dir / ".ray.json.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(self.run_dir / "ray.json")

    def _run(
        self, source: _Source, show_progress: bool | None, t0: float, stop: StopOnSignals
    ) -> TrainSummary:
        import tensorflow as tf

        cfg, agent, state = self.cfg, self.agent, self.state
        tb = self._tb_factory()
        total = cfg.train.env_steps
        distributed = cfg.collect.num_actors > 0
        n_envs = source.num_envs  # envs per fragment
        # Off-policy: the replay ratio is held by the budget of training phases: one phase
        # of `updates_per_train` gradient steps per `train_every` env steps after
        # `learning_starts` (locally, a chunk of `train_every` steps then its phase).
        # Distributed, collectors run ahead at most one fragment each (a learner that falls
        # behind stops relaunching them); a learner ahead of the data waits for it.
        # On-policy: one phase per rollout of `collect.rollout_length` steps per env, from
        # every collector, all with the same weights.
        if self.on_policy or distributed:
            vector_steps = cfg.collect.rollout_length
        else:
            vector_steps = math.ceil(cfg.train.train_every / n_envs)
        upt = cfg.train.updates_per_train
        backlog_phases = math.ceil(
            source.num_fragments * vector_steps * n_envs / cfg.train.train_every
        )
        gather = RolloutGather(source.num_fragments)
        version_steps = {0: agent.train_steps}  # weight version -> learner step it was taken
        synced_at = agent.train_steps
        source.broadcast(agent.get_weights(), gather.version)
        wall0 = state["wall_s"]
        session_steps0, train_steps0 = state["env_steps"], agent.train_steps
        window = _Window(state["env_steps"], agent.train_steps)
        next_log = _next_multiple(state["env_steps"], cfg.train.log_every)
        next_eval = _next_multiple(state["env_steps"], cfg.eval.every_env_steps)
        next_ckpt = _next_multiple(state["env_steps"], cfg.checkpoint.every_env_steps)
        last_train_return = float("nan")
        sample = result = None
        last_eval = state["evals"][-1]["return_mean"] if state["evals"] else float("nan")
        owed = 0
        restarts0 = state["actor_restarts"]

        def wall() -> float:
            return wall0 + time.perf_counter() - t0

        def phases_due(env_steps: int) -> int:
            te, start = cfg.train.train_every, cfg.train.learning_starts
            if env_steps < start or self.replay is None or not len(self.replay):
                return 0
            return max(0, env_steps // te - math.ceil(start / te) + 1)

        progress = _progress(self.console, show_progress)
        task = progress.add_task(
            cfg.name, total=total, completed=state["env_steps"], sps=0.0,
            ret=shown(last_train_return), eval=shown(last_eval),
        )  # fmt: skip
        with progress, stop.armed():
            while not stop.requested:
                step = state["env_steps"]
                if step >= total and source.pending == 0 and owed == 0:
                    break
                progress_frac = min(1.0, step / total)
                schedules = agent.update_schedules(step, progress_frac)
                if self.replay is not None:
                    schedules.update(self.replay.anneal(progress_frac))
                # ---- collect
                if self.on_policy:
                    launch = gather.missing() if step < total else []
                    block = True
                else:
                    room = step + source.inflight_env_steps < total
                    launch = source.idle() if room and owed <= backlog_phases else []
                    block = owed == 0
                    if not distributed:
                        vector_steps = min(vector_steps, math.ceil((total - step) / n_envs))
                fragments = source.gather(launch, vector_steps, step, gather.version, block)
                for f in fragments:
                    for ep in f.episodes:  # each at the env step where it ended
                        state["episodes"] += 1
                        last_train_return = ep.ret
                        tb.scalars(
                            {"charts/episodic_return": ep.ret,
                             "charts/episodic_length": ep.length},
                            state["env_steps"] + ep.index + 1,
                        )  # fmt: skip
                    state["env_steps"] += f.env_steps
                    if distributed:
                        lag = agent.train_steps - version_steps.get(f.version, synced_at)
                        window.add({"collect/weight_lag_updates": float(lag)})
                    if self.on_policy:
                        if not gather.add(f):
                            state["stale_fragments"] += 1
                    elif f.transitions is not None:
                        self.replay.add(f.transitions, f.priorities)
                state["actor_restarts"] = restarts0 + source.restarts
                step = state["env_steps"]
                # ---- learn
                if self.on_policy and gather.ready():
                    with tf.device(self.placement.device):
                        result = agent.train(gather.pop())
                    window.add(result.metrics)
                    state["train_phases"] += 1
                    version_steps = {gather.version: agent.train_steps}
                    source.broadcast(agent.get_weights(), gather.version)
                elif not self.on_policy:
                    owed = phases_due(step) - state["train_phases"]
                    for _ in range(owed if not distributed else min(owed, 1)):
                        sample = self.replay.sample(cfg.train.batch_size, upt)
                        with tf.device(self.placement.device):
                            result = agent.train(sample.batch, sample.weights)
                        if result.td_errors is not None:
                            self.replay.update_priorities(sample.indices, result.td_errors)
                        window.add(result.metrics)
                        if sample.weights is not None:
                            window.add_is_weights(sample.weights)
                        state["train_phases"] += 1
                    owed = phases_due(step) - state["train_phases"]
                    sync_due = agent.train_steps - synced_at >= cfg.collect.weight_sync_every
                    if distributed and sync_due:
                        synced_at = agent.train_steps
                        version = max(version_steps) + 1
                        version_steps[version] = synced_at
                        version_steps.pop(version - 100, None)  # lag beyond that: synced_at
                        source.broadcast(agent.get_weights(), version)
                # ---- log, evaluate, checkpoint
                if step >= next_log:
                    next_log = _next_multiple(step, cfg.train.log_every)
                    scalars = window.flush(step, agent.train_steps)
                    scalars.update(schedules)
                    if self.replay is not None:
                        scalars["charts/replay_size"] = len(self.replay)
                        scalars["charts/replay_ratio"] = (
                            agent.train_steps * cfg.train.batch_size / max(step, 1)
                        )
                    if distributed:
                        scalars["collect/actor_restarts"] = float(state["actor_restarts"])
                        scalars["collect/weight_version"] = float(max(version_steps))
                        if self.on_policy:
                            scalars["collect/stale_fragments"] = float(state["stale_fragments"])
                    tb.scalars(scalars, step)
                    if sample is not None:  # off-policy: the last phase's sample
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
                progress.update(
                    task, completed=step, ret=shown(last_train_return), eval=shown(last_eval)
                )
        if stop.requested:  # Ctrl-C or SIGTERM: finish the iteration, checkpoint, then stop
            tb.close()
            path = self._checkpoint(wall())
            name = signal.Signals(stop.requested).name
            self.console.print(
                f"interrupted ({name}) at {state['env_steps']:,} env steps; saved {path}\n"
                f"resume with: rlplat train --resume {self.run_dir}",
                highlight=False,
            )
            raise Interrupted(stop.requested, reported=True)

        final = self._evaluate(cfg.eval.final_episodes, state["env_steps"], wall(), tb, final=True)
        tb.close()
        self._checkpoint(wall())
        export_path = self._export_if_due(final.mean)
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
            actor_restarts=state["actor_restarts"],
            stale_fragments=state["stale_fragments"],
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
        if self.cfg.eval.video and not final:
            self._log_episode_animation(tb, step)
        threshold = self.cfg.eval.threshold
        if (
            threshold is not None
            and self.state["first_threshold"] is None
            and result.mean >= threshold
        ):
            self.state["first_threshold"] = {"env_steps": step, "wall_s": round(wall_s, 3)}
        label = "final eval" if final else "eval"
        self.console.print(
            f"{label} @ {step:,} env steps ({wall_s:.0f}s): return {shown(result.mean)} "
            f"± {shown(result.std)} over {episodes} episodes"
        )
        if final:
            (self.run_dir / "eval_final.json").write_text(
                json.dumps({"env_steps": step, **result.to_dict()}, indent=2)
            )
        return result

    def _log_episode_animation(self, tb: Any, step: int) -> None:
        """Episode 0 of this eval (same seed), rendered, as an animated GIF in TensorBoard."""
        from rlplat.media import env_fps, gif_bytes

        frames: list[np.ndarray] = []
        run_episodes(
            lambda obs: self.agent.act(obs, explore=False), self.cfg.env, 1, self.cfg.seed,
            render_mode="rgb_array", on_frame=lambda _, frame: frames.append(frame),
        )  # fmt: skip
        if not frames or frames[0] is None:
            return
        gif, height, width = gif_bytes(frames, env_fps(self.cfg.env))
        tb.animation("eval/episode", gif, height, width, step)

    def _checkpoint(self, wall_s: float) -> Path:
        self.state["wall_s"] = wall_s
        return self.checkpointer.save(self.state)

    def export(self) -> Path:
        return _export(self.cfg, self.agent, self.spaces, self.run_dir, self.state)

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


def export_skip_reason(cfg: ExperimentConfig, final_mean: float) -> str | None:
    """Why a finished run is not exported (None: it is), by `export.when`."""
    when, threshold = cfg.export.when, cfg.eval.threshold
    if when == "never":
        return "export.when is never (or --no-export)"
    if when == "if_threshold" and threshold is not None and not final_mean >= threshold:
        return f"final eval {final_mean:.1f} < eval.threshold {threshold:g} (export.when)"
    return None


def export_metadata(
    cfg: ExperimentConfig, spaces: envs.EnvSpaces, run_dir: Path, state: dict[str, Any]
) -> dict[str, Any]:
    """What a server or `rlplat play` needs to know beside the graph (assets.extra)."""
    return {
        "name": cfg.name,
        "env": cfg.env.model_dump(mode="json"),
        "env_module_dir": envs.module_dir(cfg.env.id),
        "observation_shape": list(spaces.observation.shape),
        "action_space": repr(spaces.action),
        "agent_type": cfg.agent.type,
        "run_dir": str(run_dir),
        "env_steps": state.get("env_steps"),
        "config": cfg.to_dict(),
    }


def export_run(run_dir: Path, model_base_path: Path | None = None) -> Path:
    """Export the latest checkpoint of `run_dir` as the next version of its model."""
    from rlplat.checkpoint import restore_latest
    from rlplat.rundir import load_run_config

    overrides = [f"export.model_base_path={model_base_path}"] if model_base_path else []
    cfg = load_run_config(run_dir, overrides)
    spaces = envs.spaces(cfg.env)
    agent = agents.build(cfg.agent, spaces, seed=cfg.seed)
    checkpointer = Checkpointer(run_dir / "checkpoints", agent, None, cfg.checkpoint.keep)
    _, state = restore_latest(run_dir, checkpointer, _stderr_line, with_replay=False)
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
    address: str | None = None,
    dashboard: bool = False,
) -> TrainSummary:
    """Train `cfg` in `run_dir` (continuing its latest checkpoint when `resume`).

    `address`: join this Ray cluster for `collect.num_actors > 0` (default: a local Ray).
    """
    from rlplat.errors import UserError

    changes = resume_changes(run_dir, cfg) if resume else {}
    if not resume:
        write_metadata(run_dir, cfg)
    # SIGTERM (timeout, systemd, Slurm, Kubernetes) is Ctrl-C: from here on, and again once
    # Ray is up (ray.init puts its own SIGTERM handlers in place, which exit at once).
    signals = StopOnSignals()
    signals.install()
    trainer = None
    try:
        trainer = Trainer(cfg, run_dir, console, address, dashboard)
        signals.install()
        if resume:
            path = trainer.resume()
            where = f"{path.name} ({trainer.state['env_steps']:,} env steps)" if path else "scratch"
            trainer.console.print(f"resuming {run_dir} from {where}", highlight=False)
            record_resume(run_dir, cfg, changes, path.name if path else None)
        return trainer.run(show_progress, signals)
    except replay_mod.ReplayShardError as err:
        raise UserError(f"{err}; resume with: rlplat train --resume {run_dir}") from None
    except Interrupted as exc:
        if not exc.reported:  # outside the loop (start-up, final eval): the last checkpoint
            _stderr_line(
                f"interrupted ({signal.Signals(exc.signum).name}); resume with: "
                f"rlplat train --resume {run_dir}"
            )
        raise
    finally:
        try:
            if trainer is not None:
                trainer.close()
        finally:
            signals.restore()


class _AgentPolicy(ActorPolicy):
    """The learner's own acting policy, always current (`num_actors: 0`)."""

    def __init__(self, agent: agents.Agent):
        self._agent = agent

    def act(self, observations: np.ndarray, explore: bool) -> np.ndarray:
        return self._agent.policy.act(observations, explore)

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self._agent.set_weights(weights)

    def update(self, env_steps: int) -> None:
        self._agent.policy.update(env_steps)

    def priorities(self, t: Transitions) -> np.ndarray | None:
        return self._agent.policy.priorities(t)


class _Source:
    """Where fragments come from: the training loop's only view of collection."""

    num_envs: int  # envs behind one fragment
    num_fragments: int  # fragments per on-policy rollout (one per collector)
    restarts = 0
    pending = 0
    inflight_env_steps = 0

    def idle(self) -> list[int]:
        return [0]

    def gather(
        self, launch: list[int], steps: int, env_steps: int, version: int, block: bool
    ) -> list[Fragment]:
        """Start `steps`-step fragments on the collectors in `launch`; return those done."""
        raise NotImplementedError

    def broadcast(self, weights: list[np.ndarray], version: int) -> None:
        """New learner weights for the collectors (tagged `version`)."""

    def close(self) -> None: ...


class _LocalSource(_Source):
    """`num_actors: 0`: one collector in this process, on the agent's own policy."""

    def __init__(self, cfg: ExperimentConfig, agent: agents.Agent, seed: int):
        self.num_envs, self.num_fragments = cfg.collect.envs_per_actor, 1
        self._collector = Collector(
            cfg.env, self.num_envs, seed, _AgentPolicy(agent),
            n_step=None if agent.on_policy else agent.n_step, gamma=agent.gamma,
            priorities=cfg.actor_priorities,
        )  # fmt: skip

    def gather(
        self, launch: list[int], steps: int, env_steps: int, version: int, block: bool
    ) -> list[Fragment]:
        if not launch:
            return []
        fragment = self._collector.collect(steps, env_steps)
        fragment.version = version
        return [fragment]

    def close(self) -> None:
        self._collector.close()


class _RaySource(_Source):
    """`num_actors: N`: Ray collector actors (rlplat.collect.RayCollectors)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        agent: agents.Agent,
        seed: int,
        ray_info: dict[str, Any],
        console: Console,
        report: Callable[[dict[int, int], int, dict[int, dict]], None],
    ):
        c = cfg.collect
        self.num_envs, self.num_fragments = c.envs_per_actor, c.num_actors
        self._report = report
        self._pids: dict[int, int] = {}
        self._nodes: dict[int, dict] = {}
        self._info = ray_info
        self._actors = ray_collectors(cfg, agent, seed)
        console.print(
            f"collectors: {c.num_actors} Ray actors x {c.envs_per_actor} envs "
            f"(Ray: {self._info['address']})",
            highlight=False,
        )

    @property
    def restarts(self) -> int:  # type: ignore[override]
        return self._actors.restarts

    @property
    def pending(self) -> int:  # type: ignore[override]
        return self._actors.pending

    @property
    def inflight_env_steps(self) -> int:  # type: ignore[override]
        return self._actors.inflight_env_steps

    def idle(self) -> list[int]:
        return self._actors.idle()

    def gather(
        self, launch: list[int], steps: int, env_steps: int, version: int, block: bool
    ) -> list[Fragment]:
        idle = set(self._actors.idle())  # on-policy asks for missing ones, maybe still busy
        for index in launch:
            if index in idle:
                self._actors.launch(index, steps, env_steps, self.num_envs)
        fragments = self._actors.wait(timeout=1.0 if block else 0.0)
        self._note_pids(fragments)
        return fragments

    def broadcast(self, weights: list[np.ndarray], version: int) -> None:
        self._actors.broadcast(weights, version)

    def _note_pids(self, fragments: list[Fragment]) -> None:
        """Report each collector's pid when it changes (a replaced collector)."""
        changed = False
        for f in fragments:
            pid = f.info.get("pid")
            if pid is not None and self._pids.get(f.actor) != pid:
                self._pids[f.actor] = pid
                self._nodes[f.actor] = f.info.get("node")
                changed = True
        if changed:
            self._report(self._pids, self._actors.restarts, self._nodes)

    def close(self) -> None:
        self._actors.close()


class _Window:
    """Averages train metrics and measures rates between two log points."""

    def __init__(self, env_steps: int, train_steps: int):
        # Each key is averaged over its own count: train metrics arrive once per phase,
        # collector metrics (weight lag) once per fragment.
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)
        self._min: float | None = None
        self._t, self._env, self._train = time.perf_counter(), env_steps, train_steps

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self._sums[k] += v
            self._counts[k] += 1

    def add_is_weights(self, weights: np.ndarray) -> None:
        """Prioritized replay's importance weights: mean (averaged like metrics) and min."""
        self.add({"replay/is_weight_mean": float(weights.mean())})
        low = float(weights.min())
        self._min = low if self._min is None else min(self._min, low)

    def flush(self, env_steps: int, train_steps: int) -> dict[str, float]:
        now = time.perf_counter()
        dt = max(now - self._t, 1e-9)
        out = {k: v / self._counts[k] for k, v in self._sums.items()}
        if self._min is not None:
            out["replay/is_weight_min"] = self._min
            self._min = None
        out["charts/SPS"] = (env_steps - self._env) / dt
        out["charts/updates_per_s"] = (train_steps - self._train) / dt
        out["charts/train_steps"] = float(train_steps)
        self._sums.clear()
        self._counts.clear()
        self._t, self._env, self._train = now, env_steps, train_steps
        return out


class Interrupted(KeyboardInterrupt):
    """Training stopped by SIGINT or SIGTERM; `rlplat` exits with 128 + the signal number.
    `reported`: the loop checkpointed and printed the resume command."""

    def __init__(self, signum: int, reported: bool = False):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.reported = signum, reported


class StopOnSignals:
    """SIGINT (Ctrl-C) and SIGTERM alike. While the loop is `armed`, the first one asks it
    to stop at the end of its iteration (so the checkpoint is consistent) and a second one
    interrupts at once; outside the loop (start-up, final eval) one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None
        self._armed = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        """Take (or take back) both signals; only the main thread may."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.SIGNALS:
            old = signal.signal(signum, self._handle)
            self._old.setdefault(signum, old)

    def restore(self) -> None:
        for signum, old in self._old.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
        self._old.clear()

    @contextlib.contextmanager
    def armed(self) -> Iterator[StopOnSignals]:
        self._armed = True
        try:
            yield self
        finally:
            self._armed = False

    def _handle(self, signum: int, frame: Any) -> None:
        if self._armed and self.requested is None:
            self.requested = signum
            return
        raise Interrupted(signum)


def _stderr_line(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _next_multiple(value: int, every: int) -> int:
    return (value // every + 1) * every


def _progress(console: Console, show: bool | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("env steps  {task.fields[sps]:,.0f}/s"),
        TextColumn("train {task.fields[ret]}"),
        TextColumn("eval {task.fields[eval]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not (console.is_terminal if show is None else show),
        transient=False,
    )


__all__ = ["Interrupted", "StopOnSignals", "Trainer", "TrainSummary", "train"]
