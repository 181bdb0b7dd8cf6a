from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import rlplat  # noqa: F401  (sets TF_USE_LEGACY_KERAS before anything imports TensorFlow)

ROOT = Path(__file__).resolve().parent.parent
RLPLAT = str(Path(sys.executable).with_name("rlplat"))


def tiny_config(**sections) -> dict:
    """A CartPole DQN that trains in a couple of seconds (not to a good return)."""
    cfg = {
        "name": "tiny",
        "seed": 0,
        "env": {"id": "CartPole-v1"},
        "agent": {
            "type": "dqn",
            "network": {"hidden": [16]},
            "target_update": {"period": 20},
            "epsilon": {"decay_env_steps": 500},
            "jit_compile": False,
        },
        "replay": {"capacity": 5000},
        "train": {
            "env_steps": 1200,
            "batch_size": 16,
            "learning_starts": 200,
            "train_every": 50,
            "updates_per_train": 10,
            "log_every": 200,
        },
        "eval": {"every_env_steps": 600, "episodes": 2, "final_episodes": 20},
        "checkpoint": {"every_env_steps": 400, "keep": 5},
        "export": {"model_base_path": "models"},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value} if isinstance(value, dict) else value
    return cfg


def user_env() -> dict[str, str]:
    """The environment a user's shell has: without what `import rlplat` set in this process."""
    return {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}


def run_cli(*args: str, cwd: Path, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    env = kw.pop("env", None) or user_env()
    return subprocess.run(
        [RLPLAT, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env=env, **kw,
    )  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_of(*markers: str, environ: bool = False) -> list[int]:
    """Live processes whose command line names every marker (e.g. a Ray session or temp
    dir); with `environ`, their environment counts too (a serve replica's spec is there)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/cmdline").read_bytes()
                if environ:
                    text += Path(f"/proc/{pid}/environ").read_bytes()
                if all(m.encode() in text for m in markers):
                    found.append(int(pid))
    return found


def proc_stat(pid: int) -> list[str]:
    """/proc/PID/stat's fields after the command name: [1] the parent's pid, [16] nice."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


@pytest.fixture
def tiny_yaml(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    return path
