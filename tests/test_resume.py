"""A run's life: damaged checkpoints, signals, resuming finished or extended runs, export
policy, and what the progress bar and TensorBoard show."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import RLPLAT, run_cli, tiny_config, user_env

from rlplat import config, rundir
from rlplat.train import train

NEWEST, OLDER = "ckpt-000000001200", "ckpt-000000000800"


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A tiny finished run with checkpoints at 400, 800 and 1200 env steps."""
    run_dir = tmp_path_factory.mktemp("base") / "run"
    train(config.parse(tiny_config(export={"enabled": False})), run_dir, show_progress=False)
    return run_dir


def damaged_copy(finished_run: Path, tmp_path: Path, file: str, manifest: bool) -> Path:
    """The finished run with `file` of its newest checkpoint cut to half its size;
    without `manifest`, as an earlier rlplat wrote it (no manifest.json)."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    if not manifest:
        for path in run_dir.glob("checkpoints/*/manifest.json"):
            path.unlink()
    path = run_dir / "checkpoints" / NEWEST / file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return run_dir


# ----------------------------------------------------------------- damaged checkpoints
@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "earlier-rlplat"])
@pytest.mark.parametrize(
    "file", ["agent.data-00000-of-00001", "agent.index", "state.json", "replay.npz"]
)
def test_a_damaged_checkpoint_is_named_and_the_newest_intact_one_is_used(
    finished_run: Path, tmp_path: Path, capsys, file: str, manifest: bool
):
    from rlplat.policies import load_policy
    from rlplat.train import Trainer

    run_dir = damaged_copy(finished_run, tmp_path, file, manifest)
    capsys.readouterr()
    trainer = Trainer(rundir.load_run_config(run_dir), run_dir)
    assert trainer.resume().name == OLDER
    assert trainer.counters.env_steps == 800 and trainer.agent.train_steps == 13 * 10
    assert len(trainer.replay) == 800
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"warning: checkpoint {run_dir / 'checkpoints' / NEWEST}")
    assert "damaged" in lines[0] and lines[0].endswith(f"using {OLDER}")
    # A policy needs the agent's files only: a damaged replay does not stop eval using it.
    policy = load_policy(run_dir)
    wanted = NEWEST if file == "replay.npz" else OLDER
    assert policy.source == f"checkpoint {run_dir / 'checkpoints' / wanted}"
    err = capsys.readouterr().err
    assert ("damaged" in err) == (file != "replay.npz")


def test_manifest_lists_every_file_with_its_size_and_digest(finished_run: Path):
    from rlplat.checkpoint import damage

    ckpt = finished_run / "checkpoints" / NEWEST
    files = json.loads((ckpt / "manifest.json").read_text())["files"]
    on_disk = {p.name for p in ckpt.iterdir()} - {"manifest.json"}
    assert set(files) == on_disk and files["state.json"]["size"] > 0
    assert damage(ckpt) is None


def test_a_flipped_byte_of_the_same_size_is_found(finished_run: Path, tmp_path: Path):
    from rlplat.checkpoint import damage

    ckpt = tmp_path / NEWEST
    shutil.copytree(finished_run / "checkpoints" / NEWEST, ckpt)
    data = bytearray((ckpt / "replay.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (ckpt / "replay.npz").write_bytes(bytes(data))
    assert damage(ckpt) == "replay.npz does not match its SHA-256"
    assert damage(ckpt, with_replay=False) is None


def test_no_intact_checkpoint_is_one_line_and_exit_2(finished_run: Path, tmp_path: Path):
    run_dir = damaged_copy(finished_run, tmp_path, "state.json", manifest=True)
    for ckpt in (run_dir / "checkpoints").iterdir():
        (ckpt / "agent.index").write_bytes(b"")
    for args in (["eval", str(run_dir), "--episodes", "1"],
                 ["train", "--resume", str(run_dir), "--set", "train.env_steps=1600"]):  # fmt: skip
        out = run_cli(*args, cwd=tmp_path, timeout=300)
        assert out.returncode == 2, out.stderr[-3000:]
        assert "Traceback" not in out.stderr
        last = out.stderr.strip().splitlines()[-1]
        assert last == f"error: {run_dir / 'checkpoints'}: no intact checkpoint (all 3 are damaged)"
        assert out.stderr.count("warning: checkpoint") == 3


# ------------------------------------------------------------------------------ signals
def start_training(tmp_path: Path, **sections) -> tuple[subprocess.Popen, Path]:
    """`rlplat train` in the background, returned once it wrote its first checkpoint."""
    path = write_yaml(tmp_path / "c.yaml", tiny_config(**sections))
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [RLPLAT, "train", str(path), "--run-dir", str(run_dir)],
        cwd=tmp_path, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while not list((run_dir / "checkpoints").glob("ckpt-*/state.json")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    return proc, run_dir


def assert_sigterm_checkpoints(proc: subprocess.Popen, run_dir: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Traceback" not in stderr and "PC: @" not in stderr, stderr[-3000:]
    assert f"resume with: rlplat train --resume {run_dir}" in stderr
    found = re.search(r"interrupted \(SIGTERM\) at ([\d,]+) env steps; saved (\S+)", stderr)
    assert found, stderr[-3000:]
    state = json.loads((Path(found[2]) / "state.json").read_text())
    assert state["env_steps"] == int(found[1].replace(",", ""))
    assert not (run_dir / "summary.json").exists()
    return stderr


def test_sigterm_checkpoints_and_prints_the_resume_command(tmp_path: Path):
    proc, run_dir = start_training(
        tmp_path, train={"env_steps": 200_000}, checkpoint={"every_env_steps": 200}
    )
    assert_sigterm_checkpoints(proc, run_dir)


@pytest.mark.slow
def test_sigterm_with_ray_collectors_checkpoints_and_stops_ray(tmp_path: Path):
    from test_distributed import ray_processes

    proc, run_dir = start_training(
        tmp_path,
        collect={"num_actors": 1, "envs_per_actor": 2, "rollout_length": 16},
        train={"env_steps": 200_000},
        checkpoint={"every_env_steps": 200},
    )
    session = json.loads((run_dir / "ray.json").read_text())["ray"]["session_dir"]
    assert_sigterm_checkpoints(proc, run_dir)
    deadline = time.monotonic() + 30
    while ray_processes(session) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray_processes(session) == []


def test_stop_on_signals_turns_sigterm_into_a_stop_request():
    from rlplat.train import Interrupted, StopOnSignals

    before = signal.getsignal(signal.SIGTERM)
    signals = StopOnSignals()
    signals.install()
    try:
        with signals.armed():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # the handler runs between bytecodes of this thread
            assert signals.requested == signal.SIGTERM
        with pytest.raises(Interrupted) as caught:  # outside the loop: at once
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        assert caught.value.signum == signal.SIGTERM
    finally:
        signals.restore()
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_during_a_periodic_eval_stops_it_and_the_resume_evaluates_first(
    tmp_path: Path,
):
    """Ctrl-C during an eval: the eval stops between two steps (not after its episodes),
    the run checkpoints, nothing of the eval is recorded, and the resumed run runs that
    eval first."""
    from rlplat.train import Interrupted, StopOnSignals, Trainer

    data = tiny_config(
        train={"env_steps": 1200}, eval={"every_env_steps": 400, "episodes": 50},
        checkpoint={"every_env_steps": 1000}, export={"enabled": False},
    )  # fmt: skip
    cfg, run_dir = config.parse(data), tmp_path / "run"
    rundir.write_metadata(run_dir, cfg, ["rlplat", "train"])
    trainer = Trainer(cfg, run_dir)
    signals, act, eval_steps = StopOnSignals(), trainer.agent.act, []

    def act_then_ctrl_c(obs, explore):
        if not explore:  # the first eval's first step: as if Ctrl-C came now
            eval_steps.append(len(obs))
            signals.requested = signal.SIGINT
        return act(obs, explore=explore)

    trainer.agent.act = act_then_ctrl_c
    with pytest.raises(Interrupted) as caught:
        trainer.run(show_progress=False, signals=signals)
    trainer.close()
    assert caught.value.reported and len(eval_steps) == 1  # one step of 50 episodes
    assert not (run_dir / "evals.jsonl").exists()
    (saved,) = (run_dir / "checkpoints").glob("ckpt-*")
    steps = json.loads((saved / "state.json").read_text())["env_steps"]
    assert 400 <= steps < 800

    resumed = Trainer(rundir.load_run_config(run_dir), run_dir)
    resumed.resume()
    resumed.run(show_progress=False)
    resumed.close()
    evals = [json.loads(line) for line in (run_dir / "evals.jsonl").read_text().splitlines()]
    assert [e["final"] for e in evals] == [False, False, True]
    assert steps <= evals[0]["env_steps"] < steps + 100  # at once, not at 800
    assert evals[1]["env_steps"] >= 800


# ------------------------------------------------------------------------- resume rules
def test_resume_says_finished_extends_records_and_refuses_what_cannot_change(tmp_path: Path):
    cfg = tiny_config(
        train={"env_steps": 400}, eval={"every_env_steps": 200},
        checkpoint={"every_env_steps": 200},
    )  # fmt: skip
    path, run_dir = write_yaml(tmp_path / "c.yaml", cfg), tmp_path / "run"
    out = run_cli("train", str(path), "--run-dir", str(run_dir), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("exported") == 1 and "exported" not in out.stderr
    summary = (run_dir / "summary.json").read_text()
    evals = (run_dir / "evals.jsonl").read_text()

    # A finished run: one line, exit 0, nothing redone or exported again.
    out = run_cli("train", "--resume", str(run_dir), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == (
        f"{run_dir}: finished at 400 env steps (train.env_steps 400); nothing to do "
        "(to train longer: --set train.env_steps=N)"
    )
    assert (run_dir / "summary.json").read_text() == summary
    assert (run_dir / "evals.jsonl").read_text() == evals
    assert sorted(p.name for p in (tmp_path / "models" / "tiny").iterdir()) == ["1"]

    # A raised budget continues, and the run's record follows it.
    out = run_cli("train", "--resume", str(run_dir), "--set", "train.env_steps=600",
                  "--no-export", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "done: 600 env steps" in out.stdout
    assert "export skipped: export.when is never" in out.stderr
    assert sorted(p.name for p in (tmp_path / "models" / "tiny").iterdir()) == ["1"]
    in_force = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert in_force["train"]["env_steps"] == 600 and in_force["export"]["when"] == "never"
    resumes = json.loads((run_dir / "run.json").read_text())["resumes"]
    assert len(resumes) == 1 and "--resume" in resumes[0]["argv"]
    assert resumes[0]["checkpoint"] == "ckpt-000000000400"
    assert resumes[0]["changes"] == {
        "export.when": ["if_threshold", "never"], "train.env_steps": [400, 600],
    }  # fmt: skip
    assert json.loads((run_dir / "summary.json").read_text())["env_steps"] == 600

    # What shapes the checkpoint cannot change: one line naming the key.
    out = run_cli("train", "--resume", str(run_dir), "--set", "agent.network.hidden=[32]",
                  "--set", "train.env_steps=800", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip().startswith("error: agent.network.hidden: cannot change on resume")
    assert len(out.stderr.strip().splitlines()) == 1
    assert yaml.safe_load((run_dir / "config.yaml").read_text()) == in_force
    from rlplat.rundir import resumable_keys

    assert f"a resume may change {resumable_keys()};" in out.stderr
    assert "collect.weight_sync_every" in resumable_keys()


def test_the_docs_list_what_a_resume_may_change_as_the_code_does():
    from rlplat.rundir import RESUMABLE

    readme = (Path(__file__).resolve().parents[1] / "docs" / "how-to" / "resume.md").read_text()
    bullet = readme.split("**What a resume may change:**", 1)[1].split("Anything else", 1)[0]
    listed = [k.strip(" `.\n") for k in bullet.replace("\n", " ").split(",")]
    assert listed == [k + "*" if k.endswith(".") else k for k in RESUMABLE]


def test_resume_changes_allows_budget_and_cadence_only(tmp_path: Path):
    from rlplat.errors import UserError

    base = tiny_config()
    rundir.write_metadata(tmp_path, config.parse(base), argv=["rlplat"])
    changed = tiny_config(train={"env_steps": 9000}, checkpoint={"every_env_steps": 300})
    assert rundir.resume_changes(tmp_path, config.parse(changed)) == {
        "checkpoint.every_env_steps": [400, 300], "train.env_steps": [1200, 9000],
    }  # fmt: skip
    for section, key in (("train", "train_every"), ("replay", "capacity"), ("seed", None)):
        data = tiny_config(**({section: {key: 77}} if key else {section: 77}))
        with pytest.raises(UserError, match=rf"^{section}{'.' + key if key else ''}: cannot"):
            rundir.resume_changes(tmp_path, config.parse(data))


# ------------------------------------------------------------------------ export policy
@pytest.mark.parametrize(
    ("when", "threshold", "exported"),
    [("if_threshold", 1000.0, False), ("if_threshold", 0.0, True), ("always", 1000.0, True),
     ("never", None, False), ("if_threshold", None, True)],
)  # fmt: skip
def test_export_when(tmp_path: Path, capsys, when: str, threshold, exported: bool):
    data = tiny_config(
        train={"env_steps": 200}, eval={"threshold": threshold},
        export={"model_base_path": str(tmp_path / "models"), "when": when},
    )  # fmt: skip
    summary = train(config.parse(data), tmp_path / "run", show_progress=False)
    assert (summary.export_path is not None) == exported
    assert (tmp_path / "models" / "tiny" / "1").is_dir() == exported
    skipped = [ln for ln in capsys.readouterr().err.splitlines() if "export skipped" in ln]
    assert len(skipped) == (0 if exported else 1)
    if skipped and threshold:
        assert "< eval.threshold 1000" in skipped[0]


def test_export_enabled_false_of_earlier_configs_means_never():
    cfg = config.parse(tiny_config(export={"enabled": False}))
    assert cfg.export.when == "never" and "enabled" not in cfg.to_dict()["export"]
    assert config.parse(tiny_config(export={"enabled": True})).export.when == "if_threshold"


# ---------------------------------------------------------------- what the user sees
def test_progress_bar_shows_a_dash_not_nan_before_the_first_eval(tmp_path: Path):
    from rich.console import Console

    from rlplat.train import Trainer

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=200)
    data = tiny_config(train={"env_steps": 200}, export={"enabled": False})
    Trainer(config.parse(data), tmp_path / "run", console=console).run(show_progress=True)
    text = buf.getvalue()
    assert "eval —" in text and "nan" not in text


@pytest.mark.parametrize(("env", "continuous"), [("CartPole-v1", False),
                                                 ("LunarLander-v3", True)])  # fmt: skip
def test_policy_std_is_logged_for_continuous_actions_only(env: str, continuous: bool):
    from rlplat import agents, envs
    from rlplat.experience.collect import Collector, time_major

    data = tiny_config(env={"id": env, "kwargs": {"continuous": True} if continuous else {}})
    data["agent"] = {"type": "ppo", "network": {"hidden": [8]}, "epochs": 1,
                     "minibatch_size": 16}  # fmt: skip
    data["replay"] = None
    cfg = config.parse(data)
    agent = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    batch = time_major(Collector(cfg.env, 2, 0, agent.policy).collect(16))
    metrics = agent.train(batch).metrics
    assert ("charts/policy_std" in metrics) == continuous
    assert all(np.isfinite(v) for v in metrics.values())
