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

import envs
from rlplat import config as config_mod
from rlplat.config import ExperimentConfig
from rlplat.errors import UserError

CONFIG_FILE = "config.yaml"
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
    (run_dir / CONFIG_FILE).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    info: dict[str, Any] = {
        "argv": argv if argv is not None else sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "host": platform.node(),
        "git_commit": git_commit(),
        "packages": package_versions(),
        "env_module_dir": envs.module_dir(cfg.env.id),  # for --resume/eval from anywhere
    }
    (run_dir / "run.json").write_text(json.dumps(info, indent=2))


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
