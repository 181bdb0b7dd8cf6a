"""The `rlplat` command. Thin: parse arguments, call the library, turn user errors into
one-line messages with exit code 2. TensorFlow is imported only inside commands that
need it, so `--help` and config errors answer fast.
"""

from __future__ import annotations

import contextlib
import enum
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from rlplat import _bootstrap  # noqa: F401
from rlplat.errors import UserError
from rlplat.text import shown

if TYPE_CHECKING:
    from rlplat.cluster import Cluster
    from rlplat.config import ExperimentConfig
    from rlplat.train import TrainSummary

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Train reinforcement-learning policies and export them for TensorFlow Serving.",
    context_settings={"help_option_names": ["-h", "--help"]},
)
err = Console(stderr=True, soft_wrap=True)


def _print_version(value: bool) -> None:
    if value:
        from rlplat import __version__

        typer.echo(f"rlplat {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    pass


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except UserError as exc:
        for line in str(exc).splitlines():
            err.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def train(  # long only in its option declarations; the body is a page of calls
    config: Annotated[
        Path | None, typer.Argument(help="Experiment YAML (optional with --resume).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config value: --set agent.learning_rate=1e-3"),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run directory (default runs/NAME/TIMESTAMP-sSEED).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run from its latest checkpoint.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Shorthand for --set seed=N.")] = None,
    progress: Annotated[
        bool | None, typer.Option(help="Live progress bar (default: on a terminal).")
    ] = None,
    address: Annotated[
        str | None,
        typer.Option(
            help="Ray cluster for collect.num_actors > 0, and for the learner when the "
            "cluster has GPU nodes (Ray places it on one; the run directory must be on "
            "shared storage): 'auto' (a `ray start --head` on this machine), HOST:PORT or "
            "ray://HOST:10001. Default: a local Ray in this command."
        ),
    ] = None,
    ray_dashboard: Annotated[
        bool, typer.Option(help="Start Ray's dashboard with the embedded Ray (off: lighter).")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="Validate (config, env, spaces vs agent), print the resolved config as YAML "
            "and stop: nothing is written."
        ),
    ] = False,
    no_export: Annotated[
        bool, typer.Option("--no-export", help="Do not export at the end (export.when=never).")
    ] = False,
) -> None:
    """Train an agent from an experiment YAML.

    Writes TensorBoard events and checkpoints to the run directory, runs a final
    deterministic evaluation and exports the policy (as export.when says). Ctrl-C and
    SIGTERM checkpoint and print the command that resumes.
    """
    import yaml

    from rlplat import config as config_mod

    overrides = list(set_ or [])
    if seed is not None:
        overrides.append(f"seed={seed}")
    if no_export:
        overrides.append("export.when=never")
    with _user_errors():
        if resume is not None:
            started = _resumed_run(resume, run_dir, config, overrides)
        else:
            started = _new_run(config, run_dir, overrides)
        if started is None:
            return
        cfg, target = started
        config_mod.check_env(cfg)  # before any directory exists or TensorFlow loads
        if dry_run:
            typer.echo(yaml.safe_dump(cfg.to_dict(), sort_keys=False), nl=False)
            return
        summary = _run_training(cfg, target, resume is not None, progress, address, ray_dashboard)
    final = summary.final_eval
    typer.echo(
        f"done: {summary.env_steps:,} env steps in {summary.wall_s:.0f}s; final eval "
        f"{shown(final['return_mean'])} ± {shown(final['return_std'])} "
        f"({final['episodes']} episodes)"
    )
    if summary.export_path:
        typer.echo(f"exported: {summary.export_path}")


def _new_run(
    config: Path | None, run_dir: Path | None, overrides: list[str]
) -> tuple[ExperimentConfig, Path]:
    from rlplat import config as config_mod
    from rlplat.rundir import new_run_dir

    if config is None:
        raise UserError("missing CONFIG (an experiment YAML), or --resume RUN_DIR")
    cfg = config_mod.load(config, overrides)
    target = run_dir or new_run_dir(cfg)
    if (target / "checkpoints").exists():
        raise UserError(f"{target}: already holds a run; use --resume {target}")
    return cfg, target


def _resumed_run(
    resume: Path, run_dir: Path | None, config: Path | None, overrides: list[str]
) -> tuple[ExperimentConfig, Path] | None:
    """The config a resume trains with, checked; None when the run is already finished."""
    from rlplat import config as config_mod
    from rlplat.rundir import finished, load_run_config, resume_changes

    if run_dir is not None and run_dir != resume:
        raise UserError("--run-dir and --resume name different directories")
    cfg = load_run_config(resume, overrides)
    if config is not None and config_mod.load(config, overrides) != cfg:
        raise UserError(
            f"{config}: differs from {resume}/config.yaml; a resumed run keeps "
            "its own config (change it with --set)"
        )
    resume_changes(resume, cfg)  # a key that cannot change fails here, before TF
    done = finished(resume, cfg)
    if done is None:
        return cfg, resume
    typer.echo(
        f"{resume}: finished at {done:,} env steps (train.env_steps "
        f"{cfg.train.env_steps:,}); nothing to do (to train longer: --set "
        "train.env_steps=N)"
    )
    return None


def _run_training(
    cfg: ExperimentConfig,
    target: Path,
    resuming: bool,
    progress: bool | None,
    address: str | None,
    dashboard: bool,
) -> TrainSummary:
    from rlplat.cluster import start_cluster
    from rlplat.learner import check_split, learner_placement
    from rlplat.remote_learner import cluster_gpus, require_learner_cpu, train_remote, wants_gpus
    from rlplat.signals import Interrupted

    try:
        # Ray before the lock makes the run directory: a cluster that cannot be joined
        # leaves none behind; so does a learner.devices error, or a batch those devices
        # cannot split (checked on this machine's devices unless Ray places the learner).
        if address is None:
            check_split(cfg, len(learner_placement(cfg.learner).devices))
        remote = address is not None and wants_gpus(cfg.learner)
        cluster = start_cluster(cfg, address, dashboard, always=remote)
        try:
            gpus = cluster_gpus(cfg, cluster.info)
            if gpus and cluster.info:  # a learner that asks Ray for GPUs trains on their node
                require_learner_cpu(cfg, cluster.info)
                check_split(cfg, gpus)
                return train_remote(cfg, target, resuming, cluster, gpus)
            if address is not None:
                check_split(cfg, len(learner_placement(cfg.learner).devices))
            return _train_here(cfg, target, resuming, progress, cluster)
        finally:
            cluster.close()
    except KeyboardInterrupt as exc:  # SIGINT: 130, SIGTERM: 143, as shells report them
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        raise typer.Exit(128 + signum) from None


def _train_here(
    cfg: ExperimentConfig, target: Path, resuming: bool, progress: bool | None, cluster: Cluster
) -> TrainSummary:
    """The learner in this process."""
    from rlplat.runs import training_lock
    from rlplat.train import train as run_training

    with training_lock(target):  # held while training: `rlplat runs` says "running"
        err.print(f"run directory: {target}", highlight=False)
        return run_training(cfg, target, resume=resuming, show_progress=progress, cluster=cluster)


class ExportFormat(enum.StrEnum):
    savedmodel = "savedmodel"
    litert = "litert"


class Quantize(enum.StrEnum):
    none = "none"
    float16 = "float16"
    dynamic = "dynamic"
    int8 = "int8"


@app.command()
def export(
    path: Annotated[
        Path,
        typer.Argument(
            help="A run directory (runs/NAME/...), or for --format litert "
            "also an exported model (models/NAME[/VERSION])."
        ),
    ],
    model_base_path: Annotated[
        Path | None, typer.Option(help="Where models/<name>/<version>/ go (default: config).")
    ] = None,
    format_: Annotated[
        ExportFormat,
        typer.Option("--format", help="litert: also a .tflite flatbuffer for small devices."),
    ] = ExportFormat.savedmodel,
    quantize: Annotated[
        Quantize,
        typer.Option(
            help="litert: float32 (none), float16 weights, dynamic-range int8 "
            "weights, or full int8 calibrated on the policy's own states."
        ),
    ] = Quantize.none,
    out: Annotated[
        Path | None,
        typer.Option(help="litert: the file (default models/NAME/litert/NAME-vV-MODE.tflite)."),
    ] = None,
    check: Annotated[
        bool, typer.Option(help="litert: play 20 seeded episodes with both and report parity.")
    ] = True,
    require_parity: Annotated[
        bool, typer.Option(help="litert: exit 1 when the return parity fails.")
    ] = False,
) -> None:
    """Export a run's latest checkpoint as a new SavedModel version (and a LiteRT file).

    Layout: MODEL_BASE_PATH/<name>/<version>/ as TensorFlow Serving expects it.
    """
    with _user_errors():
        if format_ is ExportFormat.savedmodel:
            if quantize is not Quantize.none or out is not None:
                raise UserError("--quantize and --out apply to --format litert")
            from rlplat.run_export import export_run

            typer.echo(str(export_run(path, model_base_path)))
            return
        from rlplat import litert_export

        say = lambda line: err.print(line, highlight=False, markup=False)  # noqa: E731
        tflite, report = litert_export.export_path(
            path, quantize.value, model_base_path, out, check, say
        )
    typer.echo(str(tflite))
    if require_parity and report is not None and not report.within_interval:
        line = (f"error: --require-parity: {tflite} does not keep the SavedModel's return "
                "(its report is in the .json beside it)")  # fmt: skip
        err.print(line, highlight=False, markup=False)
        raise typer.Exit(1)


class Render(enum.StrEnum):
    none = "none"
    video = "video"
    human = "human"


class HttpFrontEnd(enum.StrEnum):
    lean = "lean"
    uvicorn = "uvicorn"


class Protocol(enum.StrEnum):
    auto = "auto"
    grpc = "grpc"
    rest = "rest"


class VideoFormat(enum.StrEnum):
    mp4 = "mp4"
    gif = "gif"


# Options `eval` and `play` share (their episodes are the same code and seeds).
Episodes = Annotated[int, typer.Option(min=1, help="Episodes to run.")]
EpisodeSeed = Annotated[int, typer.Option(help="Episode i is seeded from this and i.")]
RenderOption = Annotated[Render, typer.Option(help="video: one file per episode; human: a window.")]
FormatOption = Annotated[VideoFormat, typer.Option("--format", help="Video file format.")]


@app.command("eval")
def eval_(
    path: Annotated[
        Path,
        typer.Argument(
            help="A run directory, an experiment folder (runs/NAME: its latest run), an "
            "exported model (models/NAME[/V]), or a LiteRT file (X.tflite: its parity with "
            "the SavedModel it came from)."
        ),
    ],
    episodes: Episodes = 20,
    seed: EpisodeSeed = 0,
    render: RenderOption = Render.none,
    video_format: FormatOption = VideoFormat.mp4,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Output directory (default: RUN_DIR/eval/TIMESTAMP, or "
            "MODELS/NAME/eval/vVERSION/TIMESTAMP for a model)."
        ),
    ] = None,
    stochastic: Annotated[
        bool, typer.Option(help="Sample actions instead of the deterministic policy.")
    ] = False,
) -> None:
    """Evaluate a policy: N full episodes, mean ± std, eval.json, optional videos.

    A run directory is evaluated from its latest checkpoint; a model directory from its
    latest (or the given) SavedModel version.
    """
    with _user_errors():
        if render is Render.human:
            from rlplat import media

            media.require_display()
        if path.suffix == ".tflite":
            from rlplat import litert_export

            say = lambda line: err.print(line, highlight=False, markup=False)  # noqa: E731
            litert_export.evaluate(path, episodes, seed, say)
            return
        from rlplat.policies import load_policy
        from rlplat.runs import experiment_runs

        if not (path / "config.yaml").is_file() and (runs := experiment_runs(path)):
            path = runs[-1]  # an experiment folder: its latest run
            err.print(f"evaluating the latest of {len(runs)} run(s): {path}", highlight=False)
        policy = load_policy(path, stochastic=stochastic, seed=seed)
        _episodes_report(policy, episodes, seed, render, video_format, out, "eval.json",
                         {"stochastic": stochastic})  # fmt: skip


def _episodes_report(
    policy, episodes: int, seed: int, render: Render, video_format: VideoFormat,
    out: Path | None, record_name: str, extra: dict, answers=None,
) -> None:  # fmt: skip
    """`eval` and `play`'s episodes and record (rlplat.episodes_report); the paths written."""
    from rlplat.episodes_report import episodes_report

    report = episodes_report(
        policy, episodes, seed, render.value, video_format.value, out, record_name, extra,
        answers, say=lambda line: err.print(line, highlight=False),
    )  # fmt: skip
    for p in report.videos:
        typer.echo(str(p))
    typer.echo(str(report.record))


@app.command()
def serve(  # long only in its option declarations
    model_base_path: Annotated[
        Path, typer.Option(help="Serves every models/<name>/<version>/ under it.")
    ] = Path("models"),
    port: Annotated[int, typer.Option(help="REST port (TF Serving's --rest_api_port).")] = 8501,
    grpc_port: Annotated[
        int, typer.Option(help="gRPC port (TF Serving's --port); 0 turns gRPC off.")
    ] = 8500,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 0.0.0.0 exposes it (set a token).")
    ] = "127.0.0.1",
    config: Annotated[
        Path | None,
        typer.Option(
            help="serving.yaml: models, versions, labels (re-read when edited), batching, limits."
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="Require `Authorization: Bearer <token>` (else $RLPLAT_SERVE_TOKEN)."),
    ] = None,
    http: Annotated[
        HttpFrontEnd, typer.Option(help="REST front end: lean (fastest here) or uvicorn.")
    ] = HttpFrontEnd.lean,
    ray: Annotated[
        bool,
        typer.Option(help="Run --replicas servers on Ray (placed, checked, restarted by Ray)."),
    ] = False,
    replicas: Annotated[
        int, typer.Option(min=1, help="With --ray: servers sharing the ports, 1 CPU each.")
    ] = 2,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster to join with --ray (default: a local Ray).")
    ] = None,
    metrics_port: Annotated[
        int, typer.Option(help="With --ray: every replica's metrics, labelled by replica.")
    ] = 8502,
) -> None:
    """Serve exported policies with the TensorFlow Serving REST and gRPC APIs.

    New versions under the base path are loaded and take traffic once warmed up; a version
    that fails to load is reported in the status endpoint and the previous one keeps serving.
    """
    import logging

    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("rlplat.serve").setLevel(logging.INFO)
    with _user_errors():
        from rlplat.serving.auth import read_token

        token = read_token(token_file)
        if host not in ("127.0.0.1", "localhost", "::1") and token is None:
            err.print(f"warning: serving on {host} without a token: anyone who can reach it "
                      "can call it (--token-file)", markup=False, highlight=False)  # fmt: skip
        try:
            if ray:
                from rlplat.serving import replicas as fleet

                fleet.serve(
                    model_base_path, host, port, grpc_port or None, config, token, replicas,
                    address, metrics_port, http.value,
                )  # fmt: skip
            else:
                _serve_here(model_base_path, host, port, grpc_port or None, config, token, http)
        except KeyboardInterrupt:
            pass


def _serve_here(
    model_base_path: Path, host: str, port: int, grpc_port: int | None, config: Path | None,
    token: str | None, http: HttpFrontEnd,
) -> None:  # fmt: skip
    """`rlplat serve` in this process: its inputs and ports checked before TensorFlow loads."""
    from rlplat.serving.config import check_inputs
    from rlplat.serving.ports import check_free

    check_inputs(model_base_path, config)
    check_free(host, {"REST": port, "gRPC": grpc_port})
    from rlplat.serving import server

    server.serve(model_base_path, host, port, grpc_port, config, token, http.value)


@app.command()
def play(  # long only in its option declarations
    model: Annotated[str | None, typer.Option(help="Model name on the server.")] = None,
    litert: Annotated[
        Path | None,
        typer.Option(
            help="Act with this .tflite file locally instead of a server (only the "
            "LiteRT interpreter and numpy: no TensorFlow)."
        ),
    ] = None,
    env: Annotated[
        str | None,
        typer.Option(
            help="Gymnasium id or module:Class (default: the env recorded in the exported "
            "model under --model-base-path, also used when its id is this one)."
        ),
    ] = None,
    model_base_path: Annotated[
        Path, typer.Option(help="Where to read the model's recorded env when --env is not given.")
    ] = Path("models"),
    server: Annotated[str, typer.Option(help="Model server URL (TF Serving REST API).")] = (
        "http://127.0.0.1:8501"
    ),
    protocol: Annotated[
        Protocol,
        typer.Option(help="auto: gRPC for image observations (uint8 HxWxC), else REST JSON."),
    ] = Protocol.auto,
    grpc: Annotated[
        str | None,
        typer.Option(
            "--grpc",
            metavar="HOST:PORT",
            help="Model server gRPC address (default: --server's host, port 8500).",
        ),
    ] = None,
    version: Annotated[int | None, typer.Option(help="Model version (default: latest).")] = None,
    label: Annotated[str | None, typer.Option(help="Version label, e.g. stable.")] = None,
    signature: Annotated[str, typer.Option(help="Signature to call.")] = "serving_default",
    episodes: Episodes = 20,
    seed: EpisodeSeed = 0,
    render: RenderOption = Render.none,
    video_format: FormatOption = VideoFormat.mp4,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: play/NAME/TIMESTAMP).")
    ] = None,
    token_file: Annotated[
        Path | None, typer.Option(help="Bearer token file (else $RLPLAT_SERVE_TOKEN).")
    ] = None,
    compare_arms: Annotated[
        bool,
        typer.Option(help="A/B split model: one routing key per episode, a table per version."),
    ] = False,
) -> None:
    """Play episodes in a local environment, asking the model server for every action.

    Same seeds, episodes and report as `rlplat eval`, so the two can be compared directly.
    Image observations (Atari's preprocessed uint8 stack) go over gRPC as raw tensor bytes.
    """
    with _user_errors():
        if version is not None and label is not None:
            raise UserError("--version and --label: give one of them")
        if (model is None) == (litert is None):
            raise UserError("give --model (a model server's) or --litert (a local .tflite file)")
        if render is Render.human:
            from rlplat import media

            media.require_display()
        if litert is not None:
            _play_litert(litert, env, episodes, seed, render, video_format, out)
            return
        from rlplat import play as client
        from rlplat.serving.auth import read_token

        env_cfg, recorded = client.play_env(env, model_base_path, model, version)
        if recorded:
            err.print(f"env: {env_cfg.id} (recorded in the model)", highlight=False)
        policy, record, arms = client.connect(
            server, grpc, protocol.value, model, env_cfg, version, label, signature,
            read_token(token_file), arms_seed=seed if compare_arms else None,
        )  # fmt: skip
        _episodes_report(policy, episodes, seed, render, video_format, out, "play.json",
                         record, arms)  # fmt: skip


def _play_litert(
    path: Path, env: str | None, episodes: int, seed: int, render: Render,
    video_format: VideoFormat, out: Path | None,
) -> None:  # fmt: skip
    """`play --litert`: the episodes with the flatbuffer, on the interpreter alone."""
    from rlplat import litert

    policy, recorded = litert.play_policy(path, env)
    if recorded:
        err.print(f"env: {policy.env.id} (recorded beside the file)", highlight=False)
    _episodes_report(policy, episodes, seed, render, video_format, out, "play.json",
                     {"litert": str(path)})  # fmt: skip


@app.command()
def tune(  # long only in its option declarations
    config: Annotated[Path, typer.Argument(help="Experiment YAML.")],
    space: Annotated[
        Path, typer.Option(help="Search space YAML: dotted keys -> choice/uniform/... .")
    ],
    samples: Annotated[int, typer.Option(help="Trials to sample (x each grid point).")] = 4,
    scheduler: Annotated[str, typer.Option(help="asha, pbt or none.")] = "asha",
    metric: Annotated[
        str,
        typer.Option(help="eval_return, env_steps_to_threshold or wall_s_to_threshold."),
    ] = "eval_return",
    address: Annotated[
        str | None, typer.Option(help="Ray cluster to run the trials on (as train's).")
    ] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(help="Trials at once (default: as CPUs allow).")
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue the newest (or --name) sweep of this experiment.")
    ] = False,
    name: Annotated[
        str | None, typer.Option(help="Sweep directory name (default tune-TIMESTAMP).")
    ] = None,
    top_k: Annotated[int, typer.Option(help="Configs re-run on held-out seeds.")] = 3,
    held_out_seeds: Annotated[int, typer.Option(help="Held-out seeds per config.")] = 3,
    pbt_keys: Annotated[
        str | None, typer.Option(help="Comma-separated keys PBT perturbs (else the space's pbt:).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config value for every trial (as train's)."),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(help="Check everything, print the resolved config and the sweep's size."),
    ] = False,
    verbose: Annotated[
        bool, typer.Option(help="Also show Ray Tune's own status tables and trial logs.")
    ] = False,
) -> None:
    """Sweep hyperparameters on Ray Tune; every trial is a run directory under
    runs/NAME/tune-TIMESTAMP/. Writes results.json and best.yaml (the winner on held-out
    seeds). Ctrl-C stops; the same command with --resume continues."""
    import yaml

    from rlplat import tune as tune_mod

    opts = tune_mod.SweepOptions(
        config, space, samples, scheduler, metric, address, max_concurrent, resume, name,
        top_k, held_out_seeds, pbt_keys.split(",") if pbt_keys else None,
        verbose=verbose, overrides=list(set_ or []),
    )  # fmt: skip
    with _user_errors():
        sweep = tune_mod.prepare(opts)
        if dry_run:
            typer.echo(yaml.safe_dump(sweep.cfg.to_dict(), sort_keys=False), nl=False)
            typer.echo(tune_mod.plan(sweep))
            return
        try:
            tune_mod.run_sweep(sweep, ["rlplat", *sys.argv[1:]], err)
        except tune_mod.SweepInterrupted:
            again = " ".join([*sys.argv[1:], *([] if resume else ["--resume"])])
            err.print(f"interrupted; continue with: rlplat {again}",
                      highlight=False)  # fmt: skip
            raise typer.Exit(130) from None


@app.command()
def plot(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to draw.")],
    out: Annotated[
        Path | None,
        typer.Option(
            help="PNG to write (default: curves.png in the run directory, or in "
            "the runs' common parent)."
        ),
    ] = None,
    title: Annotated[str | None, typer.Option(help="Plot title.")] = None,
) -> None:
    """Learning curves: eval return mean ± std against env steps, runs overlaid."""
    with _user_errors():
        from rlplat.plot import plot_runs

        path = plot_runs(run_dirs, out, title)
    typer.echo(str(path.resolve()))


@app.command()
def runs(
    name: Annotated[str | None, typer.Argument(help="Only this experiment's runs.")] = None,
    runs_dir: Annotated[Path, typer.Option(help="Where the runs are.")] = Path("runs"),
) -> None:
    """List runs: status, env steps, final eval and start time, then the run directory.

    Status: running (a process holds the run's train.lock), finished (summary.json),
    interrupted (stopped with a checkpoint: resume it), failed (stopped before its first
    checkpoint), unknown (no lock file: made by an older rlplat).
    """
    from rlplat.runs import find_runs, run_info

    with _user_errors():
        if name is not None and not (runs_dir / name).is_dir():
            raise UserError(f"{runs_dir / name}: no such experiment folder")
        found = [run_info(p) for p in find_runs(runs_dir, name)]
    out = Console(soft_wrap=True, highlight=False)
    out.print(f"{len(found)} run(s) in {runs_dir / (name or '')}", markup=False)
    # Two lines a run: its figures, then its path alone and whole (never wrapped or cut
    # by a table at 80 columns), so that it can be copied into `--resume` or `eval`.
    for info in found:
        final = info.final_eval
        steps = f"{info.env_steps:,}" if info.env_steps is not None else "-"
        result = f"{shown(final['return_mean'])} ± {shown(final['return_std'])}" if final else "-"
        out.print(
            f"{info.status:<11} {steps:>11} env steps  final eval {result:<14} "
            f"started {_short_time(info.started)}",
            markup=False,
        )
        out.print(f"  {info.path}", markup=False)


def _short_time(stamp: str | None) -> str:
    """run.json's `2026-11-30T02:52:21+0000` as `2026-11-30 02:52` (as written if not)."""
    import datetime

    try:
        return datetime.datetime.strptime(stamp or "", "%Y-%m-%dT%H:%M:%S%z").strftime(
            "%Y-%m-%d %H:%M"
        )
    except ValueError:
        return stamp or "-"


@app.command()
def compare(  # long only in its option declarations
    experiments: Annotated[
        list[str] | None,
        typer.Argument(
            help="Experiment files, FILE or LABEL=FILE[,FILE...] (one file per "
            "task); with --runs, finished run directories."
        ),  # fmt: skip
    ] = None,
    seeds: Annotated[int, typer.Option(help="Seeds per experiment (the same for each).")] = 5,
    first_seed: Annotated[int, typer.Option(help="The first seed; the others follow it.")] = 1000,
    allow_tuned_seeds: Annotated[
        bool,
        typer.Option(
            "--allow-tuned-seeds",
            help="Allow a file's own seed among them (it may be tuned on it).",
        ),
    ] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config value in every run.")
    ] = None,
    jobs: Annotated[
        int | None, typer.Option(help="Runs at once (default: as many as the CPUs hold).")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster every run joins, as in `rlplat train`.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Comparison directory (default runs/compare/TIMESTAMP).")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this comparison: finished runs stay.")
    ] = None,
    runs: Annotated[
        bool, typer.Option("--runs", help="Compare finished runs (the arguments) instead.")
    ] = False,
) -> None:
    """Is B better than A? Train each experiment on the same fresh seeds, in parallel.

    Prints per experiment the IQM, median and mean of the final deterministic eval with
    95% stratified bootstrap intervals, the time to the threshold, the probability that
    each improves on the first, and a verdict in words; writes compare.json, curves.png,
    profile.png and TensorBoard scalars. Ctrl-C stops the runs at a checkpoint.
    """
    from rlplat.compare import CompareOptions
    from rlplat.compare import compare as run_compare

    opts = CompareOptions(list(experiments or []), seeds, first_seed, allow_tuned_seeds,
                          list(set_ or []), jobs, address, out, resume, runs)  # fmt: skip
    with _user_errors():
        code = run_compare(opts, Console(soft_wrap=True, highlight=False))
    if code:
        raise typer.Exit(code)


def main() -> None:
    app(prog_name="rlplat")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
