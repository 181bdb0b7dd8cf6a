"""Checkpoints: agent variables + optimizer (tf.train.Checkpoint), replay, counters, RNGs.

Each checkpoint is a directory `ckpt-<env_steps>` written under a temporary name and
renamed into place, so a crash mid-write never leaves a checkpoint that looks complete.
Its last file, `manifest.json`, lists every other file's size and SHA-256: a checkpoint
damaged afterwards (a full disk, a copy cut short, a crash before the data reached the
disk) is recognised, named, and skipped for the newest intact one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf

from rlplat.agents import Agent
from rlplat.errors import UserError
from rlplat.experience.replay import Replay
from rlplat.runs import CKPT_PREFIX, MANIFEST, complete_checkpoints, no_checkpoint

# What reading a damaged checkpoint of an older rlplat (no manifest) raises.
_UNREADABLE = (
    OSError, EOFError, ValueError, KeyError, IndexError, AssertionError,
    zipfile.BadZipFile, tf.errors.OpError,
)  # fmt: skip


class Checkpointer:
    def __init__(self, directory: Path, agent: Agent, replay: Replay | None, keep: int):
        self.directory = directory
        self._agent = agent
        self._replay = replay
        self._keep = keep
        self._tf_ckpt = tf.train.Checkpoint(**agent.checkpoint_items())

    def save(self, state: dict[str, Any]) -> Path:
        """`state` (JSON-serialisable counters) must include `env_steps`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"{CKPT_PREFIX}{state['env_steps']:012d}"
        tmp = self.directory / f".tmp-{final.name}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        self._tf_ckpt.write(str(tmp / "agent"))
        if self._replay is not None:
            self._replay.save(tmp)
        state = {
            **state,
            "train_steps": self._agent.train_steps,
            "agent": self._agent.extra_state(),
        }
        (tmp / "state.json").write_text(json.dumps(state))
        write_manifest(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in self.all()[: -self._keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def all(self) -> list[Path]:
        return complete_checkpoints(self.directory)

    def latest(self) -> Path | None:
        found = self.all()
        return found[-1] if found else None

    def restore(self, path: Path, with_replay: bool = True) -> dict[str, Any]:
        self._tf_ckpt.read(str(path / "agent")).assert_existing_objects_matched()
        state = json.loads((path / "state.json").read_text())
        self._agent.load_extra_state(state.pop("agent", {}))
        if with_replay and self._replay is not None:
            self._replay.load(path)
        self._agent.on_restore()
        return state

    def restore_newest(
        self, warn: Callable[[str], None], with_replay: bool = True
    ) -> tuple[Path, dict[str, Any]] | None:
        """Restore the newest intact checkpoint: `(path, state)`, or None when there is none
        at all. Each damaged one newer than it is named through `warn`, one line each."""
        found = self.all()
        damaged: list[tuple[Path, str]] = []
        for path in reversed(found):
            problem = damage(path, with_replay)
            if problem is None and not (path / MANIFEST).is_file():
                try:  # written by an older rlplat: intact if it reads
                    state = self.restore(path, with_replay)
                except _UNREADABLE as exc:
                    problem = f"unreadable: {type(exc).__name__}: {_first_line(exc)}"
                else:
                    return _reported(path, state, damaged, warn)
            elif problem is None:
                return _reported(path, self.restore(path, with_replay), damaged, warn)
            damaged.append((path, problem))
        if damaged:
            for path, problem in damaged:
                warn(f"warning: checkpoint {path} is damaged ({problem})")
            raise UserError(
                f"{self.directory}: no intact checkpoint (all {len(damaged)} are damaged)"
            )
        return None


def _reported(
    path: Path, state: dict[str, Any], damaged: list[tuple[Path, str]], warn: Callable[[str], None]
) -> tuple[Path, dict[str, Any]]:
    for bad, problem in damaged:
        warn(f"warning: checkpoint {bad} is damaged ({problem}); using {path.name}")
    return path, state


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else "no message"


def write_manifest(directory: Path) -> None:
    """Size and SHA-256 of every file under `directory` (written last: its presence says
    the others were all written)."""
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST):
        rel = path.relative_to(directory).as_posix()
        files[rel] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    (directory / MANIFEST).write_text(json.dumps({"version": 1, "files": files}, indent=1))


def damage(path: Path, with_replay: bool = True) -> str | None:
    """What is wrong with checkpoint `path` by its manifest (None: intact, or no manifest).
    Without `with_replay`, only what a policy needs is checked (agent and state files)."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return None
    try:
        files = json.loads(manifest.read_text())["files"]
        entries = [(rel, int(e["size"]), str(e["sha256"])) for rel, e in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{MANIFEST} unreadable: {_first_line(exc)}"
    for rel, size, digest in entries:
        if not with_replay and not (rel.startswith("agent") or rel == "state.json"):
            continue
        file = path / rel
        if not file.is_file():
            return f"{rel} is missing"
        actual = file.stat().st_size
        if actual != size:
            return f"{rel} has {actual:,} bytes, the manifest says {size:,}"
        if _sha256(file) != digest:
            return f"{rel} does not match its SHA-256"
    return None


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def restore_latest(
    run_dir: Path, checkpointer: Checkpointer, warn: Callable[[str], None], with_replay: bool
) -> tuple[Path, dict[str, Any]]:
    """`restore_newest` for a run that must have a checkpoint (eval, export)."""
    found = checkpointer.restore_newest(warn, with_replay)
    if found is None:
        raise no_checkpoint(run_dir)
    return found
