"""Checkpoints: agent variables + optimizer (tf.train.Checkpoint), replay, counters, RNGs.

Each checkpoint is a directory `ckpt-<env_steps>` written under a temporary name and
renamed into place, so a crash mid-write never leaves a checkpoint that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import tensorflow as tf

from agents import Agent
from rlplat.errors import UserError
from rlplat.replay import UniformReplay

_PREFIX = "ckpt-"


class Checkpointer:
    def __init__(self, directory: Path, agent: Agent, replay: UniformReplay | None, keep: int):
        self.directory = directory
        self._agent = agent
        self._replay = replay
        self._keep = keep
        self._tf_ckpt = tf.train.Checkpoint(**agent.checkpoint_items())

    def save(self, state: dict[str, Any]) -> Path:
        """`state` (JSON-serialisable counters) must include `env_steps`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"{_PREFIX}{state['env_steps']:012d}"
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


def complete_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints whose state.json was written (the last file of each), oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f"{_PREFIX}*") if (p / "state.json").exists())


def latest_checkpoint(run_dir: Path) -> Path:
    ckpts = complete_checkpoints(run_dir / "checkpoints")
    if not ckpts:
        raise UserError(f"{run_dir}: no checkpoint found under {run_dir / 'checkpoints'}")
    return ckpts[-1]
