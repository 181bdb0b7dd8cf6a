"""One trial of a sweep, inside Ray Tune's worker: an ordinary rlplat run in its own run
directory, reporting each periodic eval (with a checkpoint of that point) to Ray Tune.

A trial joins the sweep's Ray (rlplat.cluster.start sees it initialised) and never starts
another. Restored from a Ray Tune checkpoint (a resumed sweep, or PBT's exploit of another
trial), it copies the rlplat checkpoint into its run directory and continues from it with
the trial's own, possibly perturbed, config."""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from rlplat import config as config_mod
from rlplat.loops.counters import RunCounters
from rlplat.rundir import CONFIG_FILE, record_resume, write_metadata
from rlplat.tune_space import overrides

NOT_REACHED = float("inf")  # time or steps to a threshold the trial has not reached (yet)
TRIAL_OVERRIDES = ["export.when=never"]  # a trial's policy is judged, not served


@dataclass(frozen=True)
class TrialSetup:
    """What every trial of one Tuner needs (absolute paths: Ray Tune may change the
    worker's directory). `candidates`: the held-out re-runs' configs, picked by the trial
    config's `candidate` index, with its `seed`."""

    experiment: str
    root: str  # run directories go under it, one per trial
    candidates: tuple[dict[str, Any], ...] | None = None
    base: tuple[str, ...] = ()  # `tune --set`: under the trial's own values

    def params(self, config: dict[str, Any]) -> dict[str, Any]:
        if self.candidates is None:
            return dict(config)
        return {**self.candidates[config["candidate"]], "seed": config["seed"]}


def run_trial(config: dict[str, Any], setup: TrialSetup) -> None:
    """Ray Tune's trainable: train, reporting every periodic eval and the final one."""
    from ray import tune

    from rlplat.cluster import start_cluster
    from rlplat.remote_learner import learner_record
    from rlplat.train import Trainer

    # Ray Train logs "Checkpoint successfully created at ..." (INFO) at every report
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    params = setup.params(config)
    sets = [*setup.base, *overrides(params)]
    cfg = config_mod.load(setup.experiment, sets + TRIAL_OVERRIDES)
    run_dir = Path(setup.root) / tune.get_context().get_trial_name()
    restored = _prepare_run_dir(run_dir, cfg, sets, tune.get_checkpoint())
    cluster = start_cluster(cfg, always=True)  # the sweep's Ray
    cluster.info = learner_record(cluster.info)  # ray.json: the trial's node and GPUs
    with (run_dir / "train.log").open("a") as log:
        trainer = Trainer(cfg, run_dir, Console(file=log, soft_wrap=True), cluster)
        try:
            if restored:
                trainer.resume()

            def report(record: dict[str, Any], path: Path) -> None:
                metrics = trial_metrics(record, trainer.counters, trainer.agent)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(str(path)))

            trainer.on_eval = report
            trainer.run(show_progress=False)
            latest = trainer.checkpointer.latest()
            assert latest is not None, "a finished run has a checkpoint"
            report(trainer.counters.evals[-1], latest)
        finally:
            trainer.close()
            cluster.close()


def _prepare_run_dir(
    run_dir: Path, cfg: config_mod.ExperimentConfig, sets: list[str], checkpoint: Any
) -> bool:
    """Set the run directory up; True when the trial continues from `checkpoint`."""
    argv = ["rlplat", "tune", "(trial)", *sets]
    if checkpoint is None:  # a new trial, or one restarted before its first report
        shutil.rmtree(run_dir, ignore_errors=True)
        write_metadata(run_dir, cfg, argv)
        return False
    name = _restore_into(run_dir / "checkpoints", checkpoint)
    if not (run_dir / CONFIG_FILE).is_file():
        write_metadata(run_dir, cfg, argv)
    before = config_mod.load(run_dir / CONFIG_FILE).to_dict()
    record_resume(run_dir, cfg, _changes(before, cfg.to_dict()), name, argv)
    return True


def _restore_into(directory: Path, checkpoint: Any) -> str:
    """Make Ray Tune's checkpoint (a copy of an rlplat checkpoint, perhaps another
    trial's) this run's only checkpoint; returns its name."""
    with checkpoint.as_directory() as src:
        steps = json.loads((Path(src) / "state.json").read_text())["env_steps"]
        name = f"ckpt-{steps:012d}"
        tmp = directory.parent / f".tmp-restore-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.replace(tmp, directory / name)
    return name


def _changes(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> dict:
    """{dotted key: [old, new]} for the values that differ."""
    out: dict[str, list[Any]] = {}
    for key in before.keys() | after.keys():
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            out.update(_changes(old, new, f"{prefix}{key}."))
        elif old != new:
            out[f"{prefix}{key}"] = [old, new]
    return out


def trial_metrics(record: dict[str, Any], counters: RunCounters, agent: Any) -> dict[str, Any]:
    """What a trial reports at an eval: its return, where it is, the time and steps to the
    threshold (NOT_REACHED until then) and the learning rate its optimizer really uses."""
    first = counters.first_threshold
    metrics = {
        "eval_return": float(record["return_mean"]),
        "env_steps": int(record["env_steps"]),
        "wall_s": float(record["wall_s"]),
        "final": bool(record["final"]),
        "env_steps_to_threshold": float(first["env_steps"]) if first else NOT_REACHED,
        "wall_s_to_threshold": float(first["wall_s"]) if first else NOT_REACHED,
    }
    optimizer = agent.checkpoint_items().get("optimizer")
    if optimizer is not None:
        metrics["learning_rate"] = float(np.asarray(optimizer.learning_rate))
    return metrics
