"""A run directory is self-describing: resolved config, versions, commit, events, ckpts."""

from __future__ import annotations

import contextlib
import json
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from rlplat import config as config_mod
from rlplat import envs
from rlplat.config import ExperimentConfig
from rlplat.errors import UserError

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
_PACKAGES = (
    "rlplat", "tensorflow", "tf-keras", "tf-agents", "tensorflow-probability",
    "gymnasium", "numpy", "ray", "tensorboard", "pydantic",
)  # fmt: skip


def new_run_dir(cfg: ExperimentConfig, root: Path = Path("runs")) -> Path:
    """runs/<name>/<YYYYmmdd-HHMMSS>-s<seed>, never reusing an existing directory."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = root / cfg.name / f"{stamp}-s{cfg.seed}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def write_metadata(run_dir: Path, cfg: ExperimentConfig, argv: list[str] | None = None) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, cfg)
    info: dict[str, Any] = {
        "argv": argv if argv is not None else sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "host": platform.node(),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "env_module_dir": envs.module_dir(cfg.env.id),  # for --resume/eval from anywhere
    }
    _write_atomically(run_dir / RUN_FILE, json.dumps(info, indent=2))


def write_config(run_dir: Path, cfg: ExperimentConfig) -> None:
    """config.yaml: the config in force (a resume that changes it rewrites it)."""
    _write_atomically(run_dir / CONFIG_FILE, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ------------------------------------------------------------------------- resume rules

# What a resume may change: the budget, cadences, where things run, and the export.
# Everything else shapes the checkpoint (agent, network, replay) or the meaning of its
# counters (seed, env, train_every, ...), so changing it would not continue the same run.
RESUMABLE = (
    "train.env_steps", "train.log_every", "eval.", "checkpoint.", "export.", "learner.",
    "collect.num_actors", "collect.weight_sync_every", "collect.max_actor_failures",
)  # fmt: skip


def resumable_keys() -> str:
    """RESUMABLE as a user reads it: `eval.*` for a section."""
    return ", ".join(k + "*" if k.endswith(".") else k for k in RESUMABLE)


def resume_changes(run_dir: Path, cfg: ExperimentConfig) -> dict[str, list[Any]]:
    """The keys `cfg` changes against the run's config.yaml, as {key: [old, new]}; a key a
    resume may not change is a UserError naming it."""
    before = _flatten(load_run_config(run_dir).to_dict())
    after = _flatten(cfg.to_dict())
    changes = {
        key: [before.get(key), after.get(key)]
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    }
    for key, (old, new) in changes.items():
        if not key.startswith(RESUMABLE):
            raise UserError(
                f"{key}: cannot change on resume ({old!r} -> {new!r}: the checkpoint was made "
                f"with {old!r}); a resume may change {resumable_keys()}; start a new run "
                "instead"
            )
    return changes


def resume_command(run_dir: Path, ray_info: dict[str, Any] | None) -> str:
    """The command that continues this run: on the cluster it joined, when it joined one."""
    command = f"rlplat train --resume {run_dir}"
    if ray_info and not ray_info["local"] and ray_info["address"] != "existing":
        command += f" --address {ray_info['address']}"
    return command


def record_resume(
    run_dir: Path,
    cfg: ExperimentConfig,
    changes: dict[str, list[Any]],
    checkpoint: str | None,
    argv: list[str] | None = None,
) -> None:
    """Append this resume to run.json (command, time, checkpoint, changes) and make
    config.yaml the config now in force."""
    path = run_dir / RUN_FILE
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.setdefault("resumes", []).append(
        {
            "argv": argv if argv is not None else sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "checkpoint": checkpoint,
            "changes": changes,
            "git_commit": git_commit(),
        }
    )
    if changes:
        write_config(run_dir, cfg)
    _write_atomically(path, json.dumps(info, indent=2))
    (run_dir / SUMMARY_FILE).unlink(missing_ok=True)  # a raised budget: unfinished again


def finished(run_dir: Path, cfg: ExperimentConfig) -> int | None:
    """The env steps a finished run reached when `cfg`'s budget asks for no more (None: the
    run is unfinished, or its budget was raised)."""
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
        steps = int(summary["env_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return steps if steps >= cfg.train.env_steps else None


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
    with contextlib.suppress(OSError, ValueError, AttributeError):  # no record: cwd only:
        recorded = json.loads((run_dir / "run.json").read_text()).get("env_module_dir")
        if recorded:
            envs.add_module_dir(recorded)
    return config_mod.load(path, overrides)


def package_versions() -> dict[str, str]:
    found = {}
    for name in _PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def git_commit() -> str | None:
    """The rlplat checkout's commit (+ '-dirty' when it has local changes), if any."""
    src = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(src), "rev-parse", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")
