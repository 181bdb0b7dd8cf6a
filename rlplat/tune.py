"""`rlplat tune`: hyperparameter sweeps on Ray Tune, every trial an ordinary run directory.

runs/<name>/tune-<stamp>/ holds sweep.json (the command and options), one run directory
per trial, Ray Tune's own state (ray/: what `--resume` restores), the held-out re-runs
(heldout/, heldout-ray/), results.json (ranked trials, held-out scores) and best.yaml (the
winner as a complete experiment file). The trials themselves: rlplat/tune_trial.py; the
search space: rlplat/tune_space.py.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.table import Table

from rlplat import config as config_mod
from rlplat.config import ExperimentConfig
from rlplat.errors import UserError
from rlplat.tune_space import Space, domain, finite, load_space, param_space, size
from rlplat.tune_trial import TrialSetup, run_trial

if TYPE_CHECKING:
    from rlplat.tune_progress import SweepProgress

METRICS = {"eval_return": "max", "env_steps_to_threshold": "min", "wall_s_to_threshold": "min"}
SCHEDULERS = ("asha", "pbt", "none")


@dataclass
class SweepOptions:
    experiment: Path
    space: Path
    samples: int = 4
    scheduler: str = "asha"
    metric: str = "eval_return"
    address: str | None = None
    max_concurrent: int | None = None
    resume: bool = False
    name: str | None = None
    top_k: int = 3
    held_out_seeds: int = 3
    pbt_keys: list[str] | None = None
    root: Path = Path("runs")
    verbose: bool = False  # Ray Tune's own tables and the trials' logs too
    overrides: list[str] = field(default_factory=list)  # --set, under every trial's values


@dataclass
class Sweep:
    """A checked sweep: nothing is written until `run_sweep` starts it."""

    opts: SweepOptions
    cfg: ExperimentConfig
    space: Space
    dir: Path
    learner_gpus: int = 0  # each trial's learner, on a cluster with GPU nodes

    @property
    def mode(self) -> str:
        return METRICS[self.opts.metric]


def prepare(opts: SweepOptions) -> Sweep:
    """Validate the options, the experiment and every reachable value of the space, and
    find the sweep directory; raises UserError (one line per problem), writes nothing."""
    if opts.metric not in METRICS:
        raise UserError(f"--metric {opts.metric}: one of {', '.join(METRICS)}")
    if opts.scheduler not in SCHEDULERS:
        raise UserError(f"--scheduler {opts.scheduler}: one of {', '.join(SCHEDULERS)}")
    if opts.samples < 1 or opts.top_k < 1 or opts.held_out_seeds < 0:
        raise UserError("--samples and --top-k must be >= 1, --held-out-seeds >= 0")
    cfg = config_mod.load(opts.experiment, opts.overrides)
    config_mod.check_env(cfg)  # as `rlplat train` does (the space's env values: by trials)
    space = load_space(opts.space, opts.experiment, opts.overrides)
    swept = [k for k in (item.partition("=")[0].strip() for item in opts.overrides)
             if k in space.params]  # fmt: skip
    if swept:
        raise UserError(f"--set {swept[0]}: {opts.space} sweeps this key; set it in one place")
    if opts.metric != "eval_return" and cfg.eval.threshold is None:
        raise UserError(f"--metric {opts.metric}: {opts.experiment} sets no eval.threshold")
    pbt_keys = opts.pbt_keys if opts.pbt_keys is not None else space.pbt_keys
    bad = [k for k in pbt_keys if k not in space.params or space.params[k][0] == "grid"]
    if bad:
        raise UserError(f"--pbt-keys: {', '.join(bad)}: not a choice/range key of the space")
    if opts.scheduler == "pbt" and not pbt_keys:
        raise UserError("--scheduler pbt: name the keys to perturb (--pbt-keys or pbt: [...])")
    opts.pbt_keys = list(pbt_keys)
    return Sweep(opts, cfg, space, _sweep_dir(opts, cfg))


def _sweep_dir(opts: SweepOptions, cfg: ExperimentConfig) -> Path:
    base = (opts.root / cfg.name).resolve()
    if not opts.resume:
        path = base / (opts.name or f"tune-{time.strftime('%Y%m%d-%H%M%S')}")
        if path.exists():
            raise UserError(f"{path}: already holds a sweep; continue it with --resume")
        return path
    if opts.name:
        path = base / opts.name
    else:
        found = sorted(base.glob("tune-*/sweep.json")) if base.is_dir() else []
        path = found[-1].parent if found else base / "tune-*"
    if not (path / "sweep.json").is_file():
        raise UserError(f"--resume: no sweep to continue at {path}")
    _check_same_sweep(path, opts)
    return path


# with what a sweep.json written before a key existed held
_SAME_ON_RESUME = {"experiment": None, "space": None, "scheduler": None, "metric": None,
                   "samples": None, "pbt_keys": None, "overrides": []}  # fmt: skip


def _check_same_sweep(path: Path, opts: SweepOptions) -> None:
    """A resumed sweep keeps what its trials were started with (Ray Tune's restore would
    silently keep the old values)."""
    before = json.loads((path / "sweep.json").read_text())["options"]
    now = json.loads(json.dumps(asdict(opts), default=str))
    for key, default in _SAME_ON_RESUME.items():
        if before.get(key, default) != now[key]:
            raise UserError(
                f"--resume: {key} was {before.get(key, default)!r} in {path} (now {now[key]!r}); "
                "resume with the sweep's own command"
            )


def run_sweep(sweep: Sweep, argv: list[str], console: Console) -> dict[str, Any]:
    """Run (or continue) the sweep, re-run its top configs on held-out seeds, and write
    results.json and best.yaml; returns what results.json holds."""
    from rlplat import cluster
    from rlplat.remote_learner import cluster_gpus

    info = cluster.start(sweep.opts.address, sweep.cfg.collect.num_actors, what="a trial")
    try:
        sweep.learner_gpus = cluster_gpus(sweep.cfg, info)
        if not sweep.opts.resume:
            sweep.dir.mkdir(parents=True)
            record = {"argv": argv, "options": asdict(sweep.opts)}
            (sweep.dir / "sweep.json").write_text(json.dumps(record, indent=2, default=str))
        console.print(f"sweep directory: {sweep.dir}", highlight=False)
        console.print(f"TensorBoard (every trial): tensorboard --logdir {sweep.dir}",
                      highlight=False)  # fmt: skip
        ranked = _search(sweep, console)
        if ranked and all(r["error"] for r in ranked):
            raise UserError(
                f"every trial failed; the first: {ranked[0]['error']} (details: "
                f"{sweep.dir / 'ray' / ranked[0]['trial'] / 'error.txt'})"
            )
        console.print(ranked_table(ranked, sweep.opts.metric, "trials, ranked"))
        candidates = _distinct([r["params"] for r in ranked if r["score"] is not None])
        held = _held_out(sweep, candidates[: sweep.opts.top_k], console)
        winner = _winner(held, candidates)
        results = {"metric": sweep.opts.metric, "mode": sweep.mode, "trials": ranked,
                   "held_out": held, "best": winner}  # fmt: skip
        (sweep.dir / "results.json").write_text(json.dumps(results, indent=2))
        if winner is not None:
            write_best(sweep, winner, held[0] if held else None, argv)
            console.print(f"best: {sweep.dir / 'best.yaml'}", highlight=False)
        else:
            console.print(f"no trial scored on {sweep.opts.metric}: no best.yaml")
        return results
    finally:
        if info["local"]:
            cluster.stop()


def plan(sweep: Sweep) -> str:
    """What the sweep would run, as YAML comments (`tune --dry-run`)."""
    opts, cfg = sweep.opts, sweep.cfg
    trials = size(sweep.space, opts.samples)
    held = min(opts.top_k, trials) * opts.held_out_seeds
    keys = ", ".join(f"{k} ({kind})" for k, (kind, _) in sweep.space.params.items())
    return "\n".join([
        f"# space {opts.space}: {keys}",
        f"# trials: {trials} (--samples {opts.samples} x the grid's points), each up to "
        f"{cfg.train.env_steps:,} env steps, scheduler {opts.scheduler}, metric {opts.metric}",
        f"# held-out re-runs: up to {held} ({min(opts.top_k, trials)} configs x "
        f"{opts.held_out_seeds} seeds)",
        f"# at most {(trials + held) * cfg.train.env_steps:,} env steps in all; "
        f"sweep directory: {sweep.dir}",
    ])  # fmt: skip


def _winner(held: list[dict[str, Any]], candidates: list[dict[str, Any]]) -> dict | None:
    """The best held-out score; without held-out runs, the sweep's best trial."""
    if held:
        return held[0]["params"] if held[0]["score"] is not None else None
    return candidates[0] if candidates else None


class SweepInterrupted(KeyboardInterrupt):
    """The sweep stopped before its trials finished; `--resume` continues it."""


def _search(sweep: Sweep, console: Console) -> list[dict[str, Any]]:
    """The sweep's trials (restored with --resume), ranked by their last report."""
    from ray import tune

    setup = TrialSetup(
        str(sweep.opts.experiment.resolve()), str(sweep.dir), base=tuple(sweep.opts.overrides)
    )
    tune_config = tune.TuneConfig(
        metric=sweep.opts.metric, mode=sweep.mode, num_samples=sweep.opts.samples,
        scheduler=_scheduler(sweep), max_concurrent_trials=sweep.opts.max_concurrent,
        trial_name_creator=trial_name, trial_dirname_creator=trial_name,
    )  # fmt: skip
    from rlplat.tune_progress import SweepProgress

    progress = SweepProgress("trials", sweep.opts.metric, sweep.mode)
    grid = _fit(sweep, "ray", setup, param_space(sweep.space), tune_config, progress)
    return _ranked(grid, sweep)


def _scheduler(sweep: Sweep) -> Any:
    from ray.tune.schedulers import ASHAScheduler, PopulationBasedTraining

    every = sweep.cfg.eval.every_env_steps
    if sweep.opts.scheduler == "asha":
        return ASHAScheduler(
            time_attr="env_steps", max_t=sweep.cfg.train.env_steps, grace_period=every,
            reduction_factor=2,
        )  # fmt: skip
    if sweep.opts.scheduler == "pbt":
        mutations = {k: domain(*sweep.space.params[k]) for k in sweep.opts.pbt_keys or []}
        return PopulationBasedTraining(
            time_attr="env_steps", perturbation_interval=every,
            hyperparam_mutations=mutations, quantile_fraction=0.5, resample_probability=0.25,
        )  # fmt: skip
    return None


def trial_name(trial: Any) -> str:
    return f"trial-{trial.trial_id}"


def _fit(
    sweep: Sweep,
    name: str,
    setup: TrialSetup,
    space: dict[str, Any],
    tune_config: Any,
    progress: SweepProgress,
) -> Any:
    """Run one Tuner under the sweep directory, or continue it (--resume) where its
    finished trials stay finished; a sweep cut short raises SweepInterrupted."""
    from ray import tune

    # The trial's learner (its first bundle, where Ray Tune runs the trainable) and each
    # collector take a CPU; the learner takes its GPUs too on a cluster that has them.
    learner = {"CPU": 1, "GPU": sweep.learner_gpus} if sweep.learner_gpus else {"CPU": 1}
    trainable = tune.with_resources(
        functools.partial(run_trial, setup=setup),
        tune.PlacementGroupFactory([learner] + [{"CPU": 1}] * sweep.cfg.collect.num_actors),
    )
    # Ray Tune snapshots its state at each kept checkpoint (what a resume after a kill
    # needs) and warns that this is frequent: frequent on purpose here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # see _callbacks
    # Ray Tune's newer output prints its configuration box even at verbose=0; the older
    # one is silent there, and --verbose asks for the newer one's tables.
    os.environ["RAY_AIR_NEW_OUTPUT"] = "1" if sweep.opts.verbose else "0"
    path = sweep.dir / name
    if sweep.opts.resume and tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(
            str(path), trainable, resume_unfinished=True, resume_errored=True
        )
        # what the sweep shows is this command's choice, not the first one's
        restored = tuner._local_tuner.get_run_config()
        restored.callbacks, restored.verbose = _callbacks(progress), run_verbosity(sweep)
    else:
        # PBT may clone any trial's last-but-N checkpoint: keep them all (disk!); else a
        # trial only ever continues from its own latest.
        keep = None if sweep.opts.scheduler == "pbt" else 2
        run_config = tune.RunConfig(
            name=name, storage_path=str(sweep.dir), verbose=run_verbosity(sweep),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep),
            callbacks=_callbacks(progress),
        )  # fmt: skip
        tuner = tune.Tuner(trainable, param_space=space, tune_config=tune_config,
                           run_config=run_config)  # fmt: skip
    return _run(tuner)


def _run(tuner: Any) -> Any:
    """tuner.fit(); SweepInterrupted when Ctrl-C came. Ray Tune takes Ctrl-C itself (it
    saves its state, stops the trials and returns as if done) and then puts back the
    handler it found: finding ours back means Ctrl-C came."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _ctrl_c_seen) if main else None
    try:
        with warnings.catch_warnings():
            # ASHA takes percentiles of the rung's scores; "not reached yet" (inf) ones
            # give numpy's inf - inf warning, and compare as the worst, as meant
            warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
            grid = tuner.fit()
    finally:
        if main:
            interrupted = signal.getsignal(signal.SIGINT) is _ctrl_c_seen
            signal.signal(signal.SIGINT, previous)
    if main and interrupted:
        raise SweepInterrupted()
    return grid


def run_verbosity(sweep: Sweep) -> int:
    return 1 if sweep.opts.verbose else 0


def _callbacks(progress: SweepProgress) -> list[Any]:
    """Ray Tune's CSV and JSON logs (its result.json, what a resume and the results read)
    and rlplat's progress lines. Not Ray's TensorBoard logger: every trial's run
    directory has its own events, and Ray's logger writes the "not reached yet" (inf)
    threshold figures with a 'NaN or Inf found in input tensor' warning each time;
    TUNE_DISABLE_AUTO_CALLBACK_LOGGERS (set in _fit) keeps Ray from adding it back."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    return [CSVLoggerCallback(), JsonLoggerCallback(), progress]


def _ctrl_c_seen(signum: int, frame: Any) -> None:
    raise SweepInterrupted()  # a second Ctrl-C, after Ray Tune's


def _ranked(grid: Any, sweep: Sweep) -> list[dict[str, Any]]:
    """One row per trial, best first; errored trials last, with their error."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        score = finite(metrics.get(sweep.opts.metric))  # None: threshold never reached
        rows.append({
            "trial": Path(result.path).name,
            "params": {k: result.config[k] for k in sweep.space.params},
            "score": score,
            "env_steps": metrics.get("env_steps"),
            "eval_return": metrics.get("eval_return"),
            "finished": bool(metrics.get("final")),  # False: stopped early by the scheduler
            "error": str(result.error).splitlines()[0] if result.error else None,
        })  # fmt: skip
    sign = -1.0 if sweep.mode == "max" else 1.0
    return sorted(rows, key=lambda r: (r["score"] is None, sign * (r["score"] or 0.0)))


def _distinct(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen, out = set(), []
    for params in configs:
        key = json.dumps(params, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(params)
    return out


def held_out_seeds(n: int, used: set[int]) -> list[int]:
    """The first `n` seeds that no trial used."""
    seeds, seed = [], 0
    while len(seeds) < n:
        if seed not in used:
            seeds.append(seed)
        seed += 1
    return seeds


def _held_out(
    sweep: Sweep, candidates: list[dict[str, Any]], console: Console
) -> list[dict[str, Any]]:
    """Re-run each candidate on seeds no trial used; best mean score first."""
    from ray import tune

    if not candidates or sweep.opts.held_out_seeds == 0:
        return []
    used = sweep.space.seeds() or {sweep.cfg.seed}
    seeds = held_out_seeds(sweep.opts.held_out_seeds, used)
    setup = TrialSetup(
        str(sweep.opts.experiment.resolve()),
        str(sweep.dir / "heldout"),
        tuple(candidates),
        tuple(sweep.opts.overrides),
    )
    space = {"candidate": tune.grid_search(list(range(len(candidates)))),
             "seed": tune.grid_search(seeds)}  # fmt: skip
    tune_config = tune.TuneConfig(
        max_concurrent_trials=sweep.opts.max_concurrent,
        trial_name_creator=trial_name, trial_dirname_creator=trial_name,
    )  # fmt: skip
    from rlplat.tune_progress import SweepProgress

    progress = SweepProgress("held-out", sweep.opts.metric, sweep.mode)
    grid = _fit(sweep, "heldout-ray", setup, space, tune_config, progress)
    scores: dict[int, dict[int, float]] = {i: {} for i in range(len(candidates))}
    for result in grid:
        value = finite((result.metrics or {}).get(sweep.opts.metric))
        scores[result.config["candidate"]][result.config["seed"]] = value
    # A seed that missed the threshold (None) makes the config's held-out score None.
    rows = [_held_out_row(candidates[i], seeds, [s.get(x) for x in seeds])
            for i, s in scores.items()]  # fmt: skip
    sign = -1.0 if sweep.mode == "max" else 1.0
    rows.sort(key=lambda r: (r["score"] is None, sign * (r["score"] or 0.0)))
    console.print(ranked_table(rows, sweep.opts.metric, f"held-out seeds {seeds}"))
    return rows


def _held_out_row(params: dict, seeds: list[int], scores: list[float | None]) -> dict:
    """A candidate's held-out scores: ranked by their mean (None when a seed missed), with
    the IQM and its 95% bootstrap interval (rlplat/stats.py) beside it."""
    from rlplat import stats

    done = [v for v in scores if v is not None]
    complete = bool(scores) and len(done) == len(scores)
    return {
        "params": params, "seeds": seeds, "scores": scores,
        "score": stats.mean_interval(done)[0] if complete else None,
        "iqm": stats.estimate(done).to_dict() if complete else None,
    }  # fmt: skip


def write_best(
    sweep: Sweep, params: dict[str, Any], held: dict[str, Any] | None, argv: list[str]
) -> Path:
    """best.yaml: the experiment file as written, with the winner's values set; checked
    with the schema before it is written (atomically)."""
    from rlplat.tune_space import overrides

    data = config_mod.read_yaml_mapping(sweep.opts.experiment, "config file")
    for item in [*sweep.opts.overrides, *overrides(params)]:
        config_mod.apply_override(data, item)
    config_mod.parse(data)
    lines = [
        f"# The best configuration of a sweep of {sweep.opts.experiment} (rlplat tune).",
        f"# Sweep command: {shlex.join(argv)}",
        f"# Sweep directory: {sweep.dir}",
        f"# Changed: {', '.join(f'{k}={v!r}' for k, v in params.items())}",
    ]
    if sweep.opts.overrides:
        lines.append(f"# Set for every trial: {', '.join(sweep.opts.overrides)}")
    if held is not None:
        lines.append(
            f"# Held-out seeds {held['seeds']}: {sweep.opts.metric} {held['scores']} "
            f"(mean {held['score']:.6g})"
        )
    text = "\n".join(lines) + "\n" + yaml.safe_dump(data, sort_keys=False)
    path = sweep.dir / "best.yaml"
    tmp = path.with_name(".best.yaml.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def ranked_table(rows: list[dict[str, Any]], metric: str, title: str) -> Table:
    table = Table(title=title)
    table.add_column("#", justify="right")
    for column in ("trial", "config", metric, "env steps", "note"):
        table.add_column(column, overflow="fold")  # every value in full, even on 80 columns
    for i, row in enumerate(rows, 1):
        score = row.get("score")
        note = row.get("error") or ("" if row.get("finished", True) else "stopped early")
        if "scores" in row:
            note = f"per seed {row['scores']}"
            if row.get("iqm"):
                from rlplat.stats import Estimate

                note += f"; IQM {Estimate(**row['iqm']).text('.4g')}"
        table.add_row(
            str(i), row.get("trial", "-"),
            ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in row["params"].items()),
            "-" if score is None else f"{score:.4g}",
            str(row.get("env_steps", "-")), note,
        )  # fmt: skip
    return table
