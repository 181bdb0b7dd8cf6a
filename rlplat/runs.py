"""What the run directories under runs/ hold: each run's status, progress and final eval
(`rlplat runs`), the latest run of an experiment, and the lock a training process holds.

No TensorFlow here: listing runs reads only small JSON files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlplat.errors import UserError

# Held (flock) by the process training the run; the kernel drops it when that process
# ends, even by kill -9, so a held lock means "running" and nothing else does.
LOCK_FILE = "train.lock"
CKPT_PREFIX = "ckpt-"  # checkpoints/ckpt-<env steps>/, renamed into place when whole
MANIFEST = "manifest.json"


@contextlib.contextmanager
def training_lock(run_dir: Path) -> Iterator[None]:
    """Mark `run_dir` as being trained by this process for the duration of the block."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise UserError(f"{run_dir}: cannot create ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            raise UserError(f"{run_dir}: another process (pid {pid}) is training it") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def is_running(run_dir: Path) -> bool | None:
    """True if a process holds the run's lock; None if the run has no lock file (made by
    an rlplat without one: unknown)."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


@dataclass
class RunInfo:
    path: Path
    status: str  # running | finished | interrupted | failed | unknown
    env_steps: int | None
    final_eval: dict[str, Any] | None
    started: str | None


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _last_checkpoint_steps(run_dir: Path) -> int | None:
    for path in reversed(complete_checkpoints(run_dir / "checkpoints")):
        data = _json(path / "state.json")
        if data is not None and isinstance(data.get("env_steps"), int):
            return data["env_steps"]
    return None


def no_checkpoint(run_dir: Path) -> UserError:
    """What eval and export say of a run with nothing to restore."""
    return UserError(f"{run_dir}: no checkpoint found under {run_dir / 'checkpoints'}")


def complete_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints that were renamed into place (manifest, or for older rlplat state.json,
    written last), oldest first. Whether their files are intact is `damage`'s question."""
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.glob(f"{CKPT_PREFIX}*")
        if (p / MANIFEST).exists() or (p / "state.json").exists()
    )


def run_info(run_dir: Path) -> RunInfo:
    """Status from what the directory holds: `running` while a process holds its lock,
    `finished` with summary.json, `interrupted` when stopped with a checkpoint to resume
    from (Ctrl-C, SIGTERM, a kill or a crash), `failed` when stopped before its first
    checkpoint; `unknown` when it could still be running (no lock file to tell)."""
    summary = _json(run_dir / "summary.json")
    final = _json(run_dir / "eval_final.json")
    ckpt_steps = _last_checkpoint_steps(run_dir)
    running = is_running(run_dir)
    if running:
        status = "running"
    elif summary is not None:
        status = "finished"
    elif running is None:
        status = "unknown"
    else:
        status = "interrupted" if ckpt_steps is not None else "failed"
    steps = summary.get("env_steps") if summary and status != "running" else ckpt_steps
    started = (_json(run_dir / "run.json") or {}).get("started")
    return RunInfo(run_dir, status, steps, final if status == "finished" else None, started)


def find_runs(runs_dir: Path, name: str | None = None) -> list[Path]:
    """Run directories under runs_dir/NAME/, or under every experiment folder when no
    name is given."""
    folders = [runs_dir / name] if name else sorted(p for p in runs_dir.glob("*") if p.is_dir())
    return [run for folder in folders for run in experiment_runs(folder)]


def experiment_runs(folder: Path) -> list[Path]:
    """The runs (directories holding config.yaml) in an experiment folder, oldest first:
    their timestamped names sort by start time."""
    return sorted(c.parent for c in folder.glob("*/config.yaml"))
