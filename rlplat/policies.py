"""Policy sources for evaluation and playing: an exported SavedModel, a run's latest
checkpoint, or (with rlplat.serving) a model server. Each is a callable from a batch of
observations to a batch of actions, with the env it was trained on, so `rlplat eval` and
`rlplat play` run the same episode code whatever acts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rlplat.config import EnvConfig, ExperimentConfig
from rlplat.errors import UserError

if TYPE_CHECKING:
    from rlplat.agents import Agent
    from rlplat.envs import EnvSpaces


@dataclass
class LoadedPolicy:
    act: Callable[[np.ndarray], np.ndarray]
    env: EnvConfig
    name: str
    source: str  # what was loaded, in words (for tables and eval.json)
    # Default output folder (each eval makes a timestamped folder in it), placed beside the
    # source, never by the current directory: RUN_DIR/eval, or MODEL_DIR/eval/vVERSION.
    # None (a server's policy): the caller's own default.
    out_dir: Path | None


def load_policy(path: Path, stochastic: bool = False, seed: int = 0) -> LoadedPolicy:
    """A run directory (its latest checkpoint) or an exported model (`models/NAME`, whose
    latest version is used, or `models/NAME/VERSION`)."""
    path = Path(path)
    if (path / "config.yaml").is_file():
        return _from_checkpoint(path, stochastic, seed)
    found = version_dir(path)
    if found is not None:
        return _from_saved_model(found, stochastic)
    raise UserError(
        f"{path}: neither a run directory (config.yaml) nor an exported model "
        "(models/NAME or models/NAME/VERSION with saved_model.pb)"
    )


def version_dir(path: Path) -> Path | None:
    """`path` if it is a SavedModel version, else its newest numbered version, else None."""
    if (path / "saved_model.pb").is_file():
        return path
    if path.is_dir():
        numbered = sorted(
            (int(p.name), p)
            for p in path.iterdir()
            if p.name.isdigit() and (p / "saved_model.pb").is_file()
        )
        if numbered:
            return numbered[-1][1]
    return None


def _from_saved_model(version_dir: Path, stochastic: bool) -> LoadedPolicy:
    import tensorflow as tf

    from rlplat import envs

    meta_path = version_dir / "assets.extra" / "rlplat.json"
    if not meta_path.is_file():
        raise UserError(
            f"{version_dir}: no assets.extra/rlplat.json, so the environment it acts in is "
            "unknown (export it with rlplat export)"
        )
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    if meta.get("env_module_dir"):  # a `module:Class` env, found from any cwd
        envs.add_module_dir(meta["env_module_dir"])
    model = tf.saved_model.load(str(version_dir))
    name = "sample" if stochastic else "serving_default"
    if name not in model.signatures:
        raise UserError(
            f"--stochastic: {version_dir} has no `sample` signature (its policy is "
            "deterministic, e.g. DQN's greedy one)"
        )
    signature = model.signatures[name]
    # float32, or uint8 for a pixel network (agents.networks.NatureTorso)
    dtype = signature.structured_input_signature[1]["observations"].dtype.as_numpy_dtype

    def act(observations: np.ndarray) -> np.ndarray:
        out = signature(observations=tf.constant(np.asarray(observations).astype(dtype)))
        return out["actions"].numpy()

    return LoadedPolicy(
        act=act,
        env=EnvConfig(**meta["env"]),
        name=meta.get("name", version_dir.parent.name),
        source=f"SavedModel {version_dir} ({name})",
        out_dir=version_dir.parent / "eval" / f"v{version_dir.name}",
    )


@dataclass
class RestoredRun:
    """A run's agent with its newest intact checkpoint restored (no replay)."""

    cfg: ExperimentConfig
    spaces: EnvSpaces
    agent: Agent
    checkpoint: Path
    state: dict[str, Any]


def restore_run(
    run_dir: Path, overrides: list[str] | None = None, seed: int | None = None
) -> RestoredRun:
    """`run_dir`'s config (with `overrides`) and agent (built with `seed`, default the run's),
    restored from its newest intact checkpoint; a damaged newer one is named on stderr."""
    from rlplat.rundir import load_run_config
    from rlplat.runs import complete_checkpoints, no_checkpoint

    cfg = load_run_config(run_dir, overrides or [])
    if not complete_checkpoints(run_dir / "checkpoints"):  # said before TensorFlow loads
        raise no_checkpoint(run_dir)
    from rlplat import agents, envs
    from rlplat.checkpoint import Checkpointer, restore_latest

    spaces = envs.spaces(cfg.env)
    agent = agents.build(cfg.agent, spaces, seed=cfg.seed if seed is None else seed)
    checkpointer = Checkpointer(run_dir / "checkpoints", agent, None, cfg.checkpoint.keep)
    path, state = restore_latest(run_dir, checkpointer, _warn, with_replay=False)
    return RestoredRun(cfg, spaces, agent, path, state)


def _from_checkpoint(run_dir: Path, stochastic: bool, seed: int) -> LoadedPolicy:
    run = restore_run(run_dir, seed=seed)
    policy = run.agent.actor_policy(0, 1, seed)
    policy.set_weights(run.agent.get_weights())
    # Exploration at the end of training (e.g. DQN's final epsilon) when sampling.
    policy.update(run.cfg.train.env_steps)
    return LoadedPolicy(
        act=lambda obs: policy.act(obs, explore=stochastic),
        env=run.cfg.env,
        name=run.cfg.name,
        source=f"checkpoint {run.checkpoint}",
        out_dir=run_dir / "eval",
    )


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
