"""The `rlplat` command. Thin: parse arguments, call the library, turn user errors into
one-line messages with exit code 2. TensorFlow is imported only inside commands that
need it, so `--help` and config errors answer fast.
"""

from __future__ import annotations

import contextlib
import enum
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from rlplat import _bootstrap  # noqa: F401
from rlplat.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Train reinforcement-learning policies and export them for TensorFlow Serving.",
)
err = Console(stderr=True, soft_wrap=True)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    try:
        yield
    except UserError as exc:
        for line in str(exc).splitlines():
            err.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def train(
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
            help="Ray cluster for collect.num_actors > 0: 'auto' (a `ray start --head` on "
            "this machine), HOST:PORT or ray://HOST:10001. Default: a local Ray in this "
            "command."
        ),
    ] = None,
    ray_dashboard: Annotated[
        bool, typer.Option(help="Start Ray's dashboard with the embedded Ray (off: lighter).")
    ] = False,
) -> None:
    """Train an agent from an experiment YAML.

    Writes TensorBoard events and checkpoints to the run directory, runs a final
    deterministic evaluation and exports the policy.
    """
    from rlplat import config as config_mod
    from rlplat.rundir import load_run_config, new_run_dir

    overrides = list(set_ or [])
    if seed is not None:
        overrides.append(f"seed={seed}")
    with _user_errors():
        if resume is not None:
            if run_dir is not None and run_dir != resume:
                raise UserError("--run-dir and --resume name different directories")
            cfg = load_run_config(resume, overrides)
            if config is not None:
                given = config_mod.load(config, overrides)
                if given != cfg:
                    raise UserError(
                        f"{config}: differs from {resume}/config.yaml; a resumed run keeps "
                        "its own config (change it with --set)"
                    )
            target, resuming = resume, True
        else:
            if config is None:
                raise UserError("missing CONFIG (an experiment YAML), or --resume RUN_DIR")
            cfg = config_mod.load(config, overrides)
            target, resuming = run_dir or new_run_dir(cfg), False
            if (target / "checkpoints").exists():
                raise UserError(f"{target}: already holds a run; use --resume {target}")
        err.print(f"run directory: {target}", highlight=False)
        try:
            from rlplat.train import train as run_training

            summary = run_training(
                cfg, target, resume=resuming, show_progress=progress, address=address,
                dashboard=ray_dashboard,
            )  # fmt: skip
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    final = summary.final_eval
    typer.echo(
        f"done: {summary.env_steps:,} env steps in {summary.wall_s:.0f}s; final eval "
        f"{final['return_mean']:.1f} ± {final['return_std']:.1f} ({final['episodes']} episodes)"
    )
    if summary.export_path:
        typer.echo(f"exported: {summary.export_path}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (runs/NAME/...).")],
    model_base_path: Annotated[
        Path | None, typer.Option(help="Where models/<name>/<version>/ go (default: config).")
    ] = None,
) -> None:
    """Export a run's latest checkpoint as a new SavedModel version.

    Layout: MODEL_BASE_PATH/<name>/<version>/ as TensorFlow Serving expects it.
    """
    with _user_errors():
        from rlplat.train import export_run

        path = export_run(run_dir, model_base_path)
    typer.echo(str(path))


class Render(enum.StrEnum):
    none = "none"
    video = "video"
    human = "human"


class HttpFrontEnd(enum.StrEnum):
    lean = "lean"
    uvicorn = "uvicorn"


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
        Path, typer.Argument(help="A run directory, or an exported model (models/NAME[/V]).")
    ],
    episodes: Episodes = 20,
    seed: EpisodeSeed = 0,
    render: RenderOption = Render.none,
    video_format: FormatOption = VideoFormat.mp4,
    out: Annotated[
        Path | None,
        typer.Option(help="Output directory (default: RUN_DIR/eval/TIMESTAMP)."),
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
        from rlplat.policies import load_policy

        policy = load_policy(path, stochastic=stochastic, seed=seed)
        _episodes_report(policy, episodes, seed, render, video_format, out, "eval.json",
                         {"stochastic": stochastic})  # fmt: skip


def _episodes_report(
    policy, episodes: int, seed: int, render: Render, video_format: VideoFormat,
    out: Path | None, record_name: str, extra: dict,
) -> None:  # fmt: skip
    """Run the episodes (with videos or a window if asked), print the table, write the
    record: what `eval` and `play` share, so their numbers are comparable line for line."""
    import json
    import time

    from rich.table import Table

    from rlplat import media
    from rlplat.evaluate import run_episodes

    stamp = time.strftime("%Y%m%d-%H%M%S")
    if out is None:
        if policy.run_dir is not None:
            out = policy.run_dir / record_name.removesuffix(".json") / stamp
        else:
            out = Path(record_name.removesuffix(".json")) / policy.name / stamp
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out}: cannot create ({exc.strerror or exc})") from None
    videos = None
    kwargs: dict = {}
    if render is Render.video:
        videos = media.EpisodeVideos(out / "videos", video_format.value, media.env_fps(policy.env))
        kwargs = dict(render_mode="rgb_array", on_frame=videos.frame, on_episode_end=videos.end)
    elif render is Render.human:
        kwargs = dict(render_mode="human")
    try:
        result = run_episodes(policy.act, policy.env, episodes, seed, **kwargs)
    finally:
        if videos is not None:
            videos.close()
    stats = result.to_dict()
    table = Table(title=f"{policy.name}: {episodes} episodes (seed {seed})")
    for col in ("return mean ± std", "median", "min", "max", "mean length"):
        table.add_column(col, justify="right")
    table.add_row(
        f"{stats['return_mean']:.1f} ± {stats['return_std']:.1f}",
        f"{stats['return_median']:.1f}", f"{stats['return_min']:.1f}",
        f"{stats['return_max']:.1f}", f"{stats['length_mean']:.1f}",
    )  # fmt: skip
    console = Console(soft_wrap=True)
    console.print(table)
    console.print(f"policy: {policy.source}", highlight=False)
    record = {
        "source": policy.source,
        "name": policy.name,
        "env": policy.env.model_dump(mode="json"),
        "seed": seed,
        **extra,
        **stats,
        "videos": [str(p) for p in (videos.paths if videos else [])],
    }
    (out / record_name).write_text(json.dumps(record, indent=2))
    for p in record["videos"]:
        typer.echo(p)
    typer.echo(str(out / record_name))


@app.command()
def serve(
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
    ray: Annotated[bool, typer.Option(help="REST and gRPC as a Ray Serve deployment.")] = False,
    replicas: Annotated[int, typer.Option(min=1, help="Ray Serve replicas (with --ray).")] = 2,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster to join with --ray (default: a local Ray).")
    ] = None,
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
                from rlplat.serving import ray_app

                ray_app.serve(
                    model_base_path, host, port, grpc_port or None, config, token, replicas, address
                )
            else:
                from rlplat.serving import server

                server.serve(
                    model_base_path, host, port, grpc_port or None, config, token, http.value
                )
        except KeyboardInterrupt:
            pass


@app.command()
def play(
    model: Annotated[str, typer.Option(help="Model name on the server.")],
    env: Annotated[str, typer.Option(help="Gymnasium environment id, e.g. LunarLander-v3.")],
    server: Annotated[str, typer.Option(help="Model server URL (TF Serving REST API).")] = (
        "http://127.0.0.1:8501"
    ),
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
) -> None:
    """Play episodes in a local environment, asking the model server for every action.

    Same seeds, episodes and report as `rlplat eval`, so the two can be compared directly.
    """
    with _user_errors():
        if version is not None and label is not None:
            raise UserError("--version and --label: give one of them")
        if render is Render.human:
            from rlplat import media

            media.require_display()
        import envs
        from rlplat.config import EnvConfig
        from rlplat.play import remote_policy
        from rlplat.serving.auth import read_token

        env_cfg = EnvConfig(id=env)
        envs.spaces(env_cfg)  # an unknown env id fails here, before any request
        policy = remote_policy(server, model, env_cfg, version, label, signature,
                               read_token(token_file))  # fmt: skip
        _episodes_report(policy, episodes, seed, render, video_format, out, "play.json",
                         {"server": server, "signature": signature})  # fmt: skip


@app.command()
def plot(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories to draw.")],
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("curves.png"),
    title: Annotated[str | None, typer.Option(help="Plot title.")] = None,
) -> None:
    """Learning curves: eval return mean ± std against env steps, runs overlaid."""
    with _user_errors():
        from rlplat.plot import plot_runs

        path = plot_runs(run_dirs, out, title)
    typer.echo(str(path))


def main() -> None:
    app(prog_name="rlplat")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
