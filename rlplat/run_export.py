"""A run's export: whether a finished run is exported (`export.when`), what goes beside the
graph for servers and `rlplat play`, and `rlplat export RUN` for a run's latest checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rlplat import agents, envs
from rlplat.config import ExperimentConfig


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
    from rlplat.policies import restore_run

    overrides = [f"export.model_base_path={model_base_path}"] if model_base_path else []
    run = restore_run(run_dir, overrides)
    return export_agent(run.cfg, run.agent, run.spaces, run_dir, run.state)


def export_agent(
    cfg: ExperimentConfig,
    agent: agents.Agent,
    spaces: envs.EnvSpaces,
    run_dir: Path,
    state: dict[str, Any],
) -> Path:
    """`agent`'s serving graph as the next version of model `cfg.name`."""
    from rlplat.export import export_saved_model

    return export_saved_model(
        agent.serving_module(),
        Path(cfg.export.model_base_path),
        cfg.name,
        export_metadata(cfg, spaces, run_dir, state),
    )
