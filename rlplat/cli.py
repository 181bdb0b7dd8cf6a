"""The `rlplat` command. Thin: parse arguments, call the library, turn user errors into
one-line messages with exit code 2. TensorFlow is imported only inside commands that
need it, so `--help` and config errors answer fast.
"""

from __future__ import annotations

import contextlib
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


def main() -> None:
    app(prog_name="rlplat")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
