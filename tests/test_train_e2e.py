"""End-to-end through the `rlplat` command: train, TensorBoard, checkpoints, export, resume."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import pytest
import yaml
from conftest import RLPLAT, run_cli, tiny_config, user_env
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader


def tb_steps(tb_dir: Path) -> dict[str, list[int]]:
    """tag -> steps, over all event files of a run."""
    steps: dict[str, list[int]] = defaultdict(list)
    for path in sorted(tb_dir.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                steps[value.tag].append(event.step)
    return steps


def test_help_lists_commands_and_each_command_has_help(tmp_path: Path):
    out = run_cli("--help", cwd=tmp_path, timeout=60)
    assert out.returncode == 0
    for command in ("train", "export"):
        assert command in out.stdout
        sub = run_cli(command, "--help", cwd=tmp_path, timeout=60)
        assert sub.returncode == 0 and "Usage: rlplat " + command in sub.stdout


@pytest.mark.slow
def test_train_writes_run_dir_tensorboard_checkpoints_and_export(tmp_path: Path, tiny_yaml):
    run_dir = tmp_path / "run"
    out = run_cli("train", str(tiny_yaml), "--run-dir", str(run_dir), "--seed", "3",
                  cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "done: 1,200 env steps" in out.stdout
    assert "exported: models/tiny/1" in out.stdout
    # The run directory describes itself.
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["seed"] == 3 and cfg["agent"]["network"]["hidden"] == [16]
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["packages"]["tensorflow"] == "2.21.0" and "git_commit" in meta
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 1200
    assert summary["final_eval"]["episodes"] == 20
    # Phases at 200, 250, ..., 1200 env steps, 10 updates each.
    assert summary["train_steps"] == 21 * 10
    assert (run_dir / "eval_final.json").is_file()
    ckpts = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert ckpts == ["ckpt-000000000400", "ckpt-000000000800", "ckpt-000000001200"]
    # TensorBoard: every promised curve, against env steps.
    steps = tb_steps(run_dir / "tb")
    for tag in (
        "charts/episodic_return", "charts/episodic_length", "eval/return_mean",
        "eval/return_std", "losses/td_loss", "losses/q_values", "charts/epsilon",
        "charts/SPS", "charts/updates_per_s",
    ):  # fmt: skip
        assert steps[tag], f"missing TensorBoard tag {tag}"
    assert steps["eval/return_mean"] == [600, 1200]
    assert (tmp_path / "models" / "tiny" / "1" / "saved_model.pb").is_file()
    # `rlplat export` adds the next version from the latest checkpoint.
    out = run_cli("export", str(run_dir), "--model-base-path", str(tmp_path / "m2"),
                  cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("m2/tiny/1")
    # A run directory is never silently reused.
    out = run_cli("train", str(tiny_yaml), "--run-dir", str(run_dir), cwd=tmp_path)
    assert out.returncode == 2 and "already holds a run; use --resume" in out.stderr


def start_training_until(tmp_path: Path, env_steps: int, pattern: str):
    """Start `rlplat train` in the background; return once a checkpoint matches `pattern`."""
    config_path = tmp_path / "c.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(train={"env_steps": env_steps})))
    run_dir = tmp_path / "run"
    env = user_env()
    proc = subprocess.Popen(
        [RLPLAT, "train", str(config_path), "--run-dir", str(run_dir)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 240
    while not list((run_dir / "checkpoints").glob(f"{pattern}/state.json")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"no checkpoint {pattern} in time"
        time.sleep(0.02)
    return proc, run_dir


@pytest.mark.slow
def test_resume_after_sigkill_continues_counters_exactly(tmp_path: Path):
    proc, run_dir = start_training_until(tmp_path, 4000, "ckpt-000000002000")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (run_dir / "summary.json").exists()

    out = run_cli("train", "--resume", str(run_dir), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resuming" in out.stderr and "env steps" in out.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 4000
    # Phases at 200, 250, ..., 4000 (77 of them) × 10 updates, none repeated or lost.
    assert summary["train_steps"] == 77 * 10
    steps = tb_steps(run_dir / "tb")
    for tag, values in steps.items():
        assert len(values) == len(set(values)), f"{tag} logged twice at some step"
    assert steps["eval/return_mean"] == [600, 1200, 1800, 2400, 3000, 3600, 4000]
    evals = [json.loads(line) for line in (run_dir / "evals.jsonl").read_text().splitlines()]
    assert [e["env_steps"] for e in summary["evals"]] == steps["eval/return_mean"]
    assert evals == summary["evals"]


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_resume_finishes(tmp_path: Path):
    proc, run_dir = start_training_until(tmp_path, 3000, "ckpt-*")
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-3000:]
    assert f"resume with: rlplat train --resume {run_dir}" in stderr
    assert "Traceback" not in stderr
    state = json.loads(sorted((run_dir / "checkpoints").glob("ckpt-*/state.json"))[-1].read_text())
    assert 400 <= state["env_steps"] < 3000
    out = run_cli("train", "--resume", str(run_dir), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] == 3000
    assert summary["train_steps"] == 57 * 10  # phases at 200, 250, ..., 3000


def test_prioritized_nstep_run_checkpoints_and_resumes_its_replay(tmp_path: Path):
    import numpy as np

    from rlplat import config
    from rlplat.train import Trainer

    cfg = config.parse(
        tiny_config(
            agent={"double": True, "dueling": True, "n_step": 3},
            replay={"type": "prioritized", "capacity": 5000},
            train={"env_steps": 800},
            export={"enabled": False},
        )
    )
    first = Trainer(cfg, tmp_path / "run")
    summary = first.run(show_progress=False)
    assert summary.env_steps == 800 and summary.train_steps == 13 * 10
    prios = first.replay.sampler.priorities(np.arange(len(first.replay)))
    assert len(prios) > 700 and prios.std() > 0  # TD errors became priorities
    tags = tb_steps(tmp_path / "run" / "tb")
    for tag in ("replay/beta", "replay/is_weight_mean", "replay/is_weight_min",
                "replay/td_errors", "replay/sampled_priorities", "charts/replay_size"):  # fmt: skip
        assert tags[tag], tag
    second = Trainer(cfg, tmp_path / "run")
    second.resume()
    np.testing.assert_array_equal(second.replay.sampler.priorities(np.arange(len(prios))), prios)
    assert second.replay.sampler.is_weights.beta == first.replay.sampler.is_weights.beta
    assert second.agent.train_steps == first.agent.train_steps
