"""The `rlplat` command's user experience: failed starts write nothing (and load no
TensorFlow), --dry-run, -h/--version, --set coercion and null, switching algorithms,
`rlplat runs`, where eval writes, play's default env, plot labels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from conftest import run_cli, tiny_config, user_env
from typer.testing import CliRunner

from rlplat import config
from rlplat.cli import app
from rlplat.errors import ConfigError

runner = CliRunner()

# Runs the CLI in a fresh interpreter and reports whether TensorFlow was ever imported.
_PROBE = """
import json, sys
from typer.testing import CliRunner
from rlplat.cli import app
r = CliRunner().invoke(app, sys.argv[1:])
print(json.dumps({"code": r.exit_code, "stderr": r.stderr, "stdout": r.stdout,
                  "tensorflow": "tensorflow" in sys.modules}))
"""


def probe(*args: str, cwd: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, *args], cwd=cwd, env=user_env(),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("env_id", ["NoSuchEnv", "no_such_module:Env", "Pendulum-v1"])
def test_a_failed_start_writes_nothing_and_loads_no_tensorflow(tmp_path: Path, env_id: str):
    path = write_yaml(tmp_path / "c.yaml", tiny_config(env={"id": env_id}))
    before = sorted(tmp_path.rglob("*"))
    for extra in ([], ["--run-dir", "somewhere"], ["--dry-run"]):
        got = probe("train", str(path), *extra, cwd=tmp_path)
        assert got["code"] == 2
        assert len(got["stderr"].strip().splitlines()) == 1
        assert got["stderr"].startswith("error: env.id: ") and env_id.split(":")[0] in got["stderr"]
        assert "run directory" not in got["stderr"]
        assert not got["tensorflow"]
        assert sorted(tmp_path.rglob("*")) == before  # no runs/, no run dir
    if env_id == "Pendulum-v1":
        assert "agent.type 'dqn' acts in Discrete action spaces" in got["stderr"]


def test_commands_that_read_files_or_refuse_input_load_no_tensorflow(tmp_path: Path):
    """What a user waits for: these answer in well under a second (benchmarks/startup.py)
    because none of them loads TensorFlow (3 s of a 2-core machine's start-up)."""
    exp = write_yaml(tmp_path / "c.yaml", tiny_config())
    (tmp_path / "space.yaml").write_text("agent.learning_rate: {choice: [0.001, 0.002]}\n")
    bare = tmp_path / "runs" / "tiny" / "bare"  # a run with a config and no checkpoint
    bare.mkdir(parents=True)
    (bare / "config.yaml").write_text(exp.read_text())
    (bare / "evals.jsonl").write_text('{"env_steps": 400, "return_mean": 1, "return_std": 0}\n')
    cases = [
        (["export", "nowhere"], 2, "nowhere: not a run directory"),
        (["export", str(bare)], 2, "no checkpoint found"),
        (["eval", str(bare)], 2, "no checkpoint found"),
        (["serve", "--model-base-path", "nowhere"], 2, "--model-base-path nowhere: not a"),
        (["serve", "--model-base-path", ".", "--config", "nosuch.yaml"], 2, "nosuch.yaml"),
        (["play", "--model", "x", "--env", "CartPole-v1", "--server", "http://127.0.0.1:9"],
         2, "cannot connect"),
        (["tune", str(exp), "--space", "space.yaml", "--dry-run"], 0, ""),
        (["runs", "--runs-dir", "runs"], 0, ""),
        (["plot", str(bare), "--out", "c.png"], 0, ""),
    ]  # fmt: skip
    for args, code, says in cases:
        got = probe(*args, cwd=tmp_path)
        assert (got["code"], got["tensorflow"]) == (code, False), (args, got["stderr"])
        assert says in got["stderr"], (args, got["stderr"])


def test_dry_run_prints_the_resolved_config_and_writes_nothing(tmp_path: Path):
    path = write_yaml(tmp_path / "c.yaml", tiny_config())
    got = probe("train", str(path), "--dry-run", "--set", "train.env_steps=3e3",
                "--set", "agent.epsilon=null", "--seed", "4", cwd=tmp_path)  # fmt: skip
    assert got["code"] == 0, got["stderr"]
    assert not got["tensorflow"]
    resolved = yaml.safe_load(got["stdout"])
    assert resolved["train"]["env_steps"] == 3000 and resolved["seed"] == 4
    assert resolved["agent"]["epsilon"]["decay_env_steps"] == 10_000  # the default again
    assert resolved == config.parse(resolved).to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]


def test_help_and_version_options():
    assert runner.invoke(app, ["-h"]).exit_code == 0
    short = runner.invoke(app, ["train", "-h"])
    assert short.exit_code == 0 and short.stdout == runner.invoke(app, ["train", "--help"]).stdout
    version = runner.invoke(app, ["--version"])
    from rlplat import __version__

    assert version.exit_code == 0 and version.stdout.strip() == f"rlplat {__version__}"


def test_whole_numbers_in_float_notation_are_ints_fractions_are_errors():
    data = tiny_config()
    config.apply_override(data, "train.env_steps=3e3")
    config.apply_override(data, "replay.capacity=1.5E4")
    cfg = config.parse(data)
    assert cfg.train.env_steps == 3000 and isinstance(cfg.train.env_steps, int)
    assert cfg.replay.capacity == 15_000
    config.apply_override(data, "agent.learning_rate=1e-3")
    assert config.parse(data).agent.learning_rate == 1e-3
    config.apply_override(data, "train.env_steps=1.0005e3")
    with pytest.raises(ConfigError, match=r"^train.env_steps: .*fractional part, got 1000.5$"):
        config.parse(data)


def test_set_null_removes_a_key_unless_null_is_its_own_value():
    data = tiny_config()
    config.apply_override(data, "agent.target_update=null")  # not nullable: back to default
    config.apply_override(data, "agent.gradient_clipping=null")  # nullable: off
    config.apply_override(data, "agent.no_such_key=null")  # removing a key that isn't there
    cfg = config.parse(data)
    assert cfg.agent.target_update.period == 500 and cfg.agent.gradient_clipping is None
    ppo = tiny_config(agent=None, replay=None)
    config.apply_override(ppo, "agent.type=ppo")
    config.apply_override(ppo, "agent.minibatch_size=null")  # None = the whole rollout
    assert config.parse(ppo).agent.minibatch_size is None


def test_switching_algorithms_is_one_line_saying_how(tmp_path: Path):
    path = write_yaml(tmp_path / "c.yaml", tiny_config())
    out = runner.invoke(app, ["train", str(path), "--set", "agent.type=ppo", "--dry-run"])
    assert out.exit_code == 2
    assert out.stderr.strip() == (
        "error: agent.type: 'ppo' does not take epsilon, jit_compile, target_update; to switch "
        "algorithms start the agent section afresh (--set agent=null --set agent.type=ppo "
        "--set replay=null) or use a new file"
    )
    out = runner.invoke(app, ["train", str(path), "--set", "agent=null", "--set", "agent.type=ppo",
                              "--set", "replay=null", "--dry-run"])  # fmt: skip
    assert out.exit_code == 0, out.stderr
    assert yaml.safe_load(out.stdout)["agent"]["type"] == "ppo"
    # A typo is still a typo, not a switch.
    out = runner.invoke(app, ["train", str(path), "--set", "agent.epsilom=0.1", "--dry-run"])
    assert out.stderr.strip() == "error: agent.epsilom: unknown key; did you mean 'epsilon'?"


class Negligible(gym.Env):
    """One step, reward -0.01: a mean return that prints as -0.0 when rounded naively."""

    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), -0.01, True, False, {}


def test_returns_never_print_as_minus_zero(tmp_path: Path, capsys):
    from rlplat.cli import Render, VideoFormat, _episodes_report
    from rlplat.config import EnvConfig
    from rlplat.policies import LoadedPolicy

    policy = LoadedPolicy(act=lambda obs: np.zeros(len(obs), np.int64),
                          env=EnvConfig(id="test_cli:Negligible"), name="n", source="test",
                          out_dir=tmp_path)  # fmt: skip
    _episodes_report(policy, 3, 0, Render.none, VideoFormat.mp4, None, "eval.json", {})
    printed = capsys.readouterr().out
    assert "0.0 ± 0.0" in printed and "-0.0" not in printed
    assert json.loads(next(tmp_path.glob("*/eval.json")).read_text())["return_mean"] < 0


# ------------------------------------------------------------------------ rlplat runs


def fake_run(
    root: Path, name: str, files: dict[str, object], lock: bool = True, experiment: str = "tiny"
) -> Path:
    run = root / experiment / name
    run.mkdir(parents=True)
    write_yaml(run / "config.yaml", tiny_config())
    (run / "run.json").write_text(json.dumps({"started": f"start-{name}"}))
    if lock:
        (run / "train.lock").write_text("1\n")
    for rel, content in files.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(json.dumps(content))
    return run


def test_runs_lists_status_steps_and_final_eval(tmp_path: Path):
    from rlplat.runs import run_info, training_lock

    runs = tmp_path / "runs"
    ckpt = {"checkpoints/ckpt-000000000400/state.json": {"env_steps": 400}}
    final = {"return_mean": -0.01, "return_std": 0.0, "episodes": 20}
    done = fake_run(runs, "a-finished", {**ckpt, "summary.json": {"env_steps": 1200},
                                        "eval_final.json": final})  # fmt: skip
    stopped = fake_run(runs, "b-interrupted", ckpt)
    failed = fake_run(runs, "c-failed", {})
    running = fake_run(runs, "d-running", ckpt)
    old = fake_run(runs, "e-old", {}, lock=False)
    fake_run(runs, "x", {}, experiment="other")
    with training_lock(running):
        statuses = {p.name: run_info(p).status for p in (done, stopped, failed, running, old)}
        out = runner.invoke(app, ["runs", "tiny", "--runs-dir", str(runs)], env={"COLUMNS": "300"})
    assert statuses == {
        "a-finished": "finished", "b-interrupted": "interrupted", "c-failed": "failed",
        "d-running": "running", "e-old": "unknown",
    }  # fmt: skip
    assert run_info(running).status == "interrupted"  # the lock went with its holder
    assert out.exit_code == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"5 run(s) in {runs / 'tiny'}"
    # each run: a line of figures, then its path alone on the next line, whole
    rows = {lines[i + 1].strip(): lines[i].split() for i in range(1, len(lines), 2)}
    assert set(rows) == {str(p) for p in (done, stopped, failed, running, old)}
    assert rows[str(done)] == ["finished", "1,200", "env", "steps", "final", "eval", "0.0", "±",
                               "0.0", "started", "start-a-finished"]  # fmt: skip
    assert rows[str(stopped)][:2] == ["interrupted", "400"] and rows[str(stopped)][6] == "-"
    assert rows[str(failed)][:2] == ["failed", "-"]
    every = runner.invoke(app, ["runs", "--runs-dir", str(runs)], env={"COLUMNS": "80"})
    assert f"  {done}" in every.stdout.splitlines()  # whole at 80 columns too
    assert "runs/other/x" in every.stdout and "runs/tiny/a-finished" in every.stdout
    assert "runs/other/x" not in out.stdout
    missing = runner.invoke(app, ["runs", "nope", "--runs-dir", str(runs)])
    assert missing.exit_code == 2 and missing.stderr.strip() == (
        f"error: {runs / 'nope'}: no such experiment folder"
    )


def test_a_run_being_trained_cannot_be_trained_twice(tmp_path: Path):
    from rlplat.runs import training_lock

    run = fake_run(tmp_path / "runs", "r", {})
    with training_lock(run):
        out = runner.invoke(app, ["train", "--resume", str(run)])
    assert out.exit_code == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: {run}: another process (pid {__import__('os').getpid()}) is training it"
    )


# ------------------------------------------------------------------------ eval, play


def test_eval_of_an_experiment_folder_uses_its_latest_run(tmp_path: Path):
    fake_run(tmp_path / "runs", "20260101-000000-s0", {})
    fake_run(tmp_path / "runs", "20260102-000000-s0", {})
    out = run_cli("eval", "runs/tiny", cwd=tmp_path, timeout=120)
    latest = Path("runs/tiny/20260102-000000-s0")
    assert f"evaluating the latest of 2 run(s): {latest}" in out.stderr
    assert str(latest) in out.stderr.strip().splitlines()[-1]
    assert out.returncode == 2


@pytest.mark.slow
def test_a_models_eval_lands_in_the_same_place_from_any_directory(tmp_path: Path):
    import tensorflow as tf

    from rlplat.export import export_saved_model

    class Left(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def serving_default(self, observations):
            return {"actions": tf.zeros([tf.shape(observations)[0]], tf.int64)}

    # An export with a relative run_dir, as exports made before this rule recorded it.
    (tmp_path / "run").mkdir()
    meta = {"name": "tiny", "env": {"id": "CartPole-v1"}, "run_dir": "run"}
    version = export_saved_model(Left(), tmp_path / "models", "tiny", meta)
    (tmp_path / "elsewhere").mkdir()
    written = []
    for cwd, arg in ((tmp_path, "models/tiny/1"), (tmp_path / "elsewhere", "../models/tiny")):
        out = run_cli("eval", arg, "--episodes", "2", cwd=cwd, timeout=300)
        assert out.returncode == 0, out.stderr
        written.append((cwd / out.stdout.strip().splitlines()[-1]).resolve())
    for path in written:
        assert path.parent.parent == (version.parent / "eval" / "v1").resolve()
    assert not (tmp_path / "run" / "eval").exists() and not (tmp_path / "elsewhere/eval").exists()


def test_play_defaults_env_to_the_one_recorded_in_the_model(tmp_path: Path):
    meta = tmp_path / "models" / "tiny" / "2" / "assets.extra" / "rlplat.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"env": {"id": "Acrobot-v1", "max_episode_steps": 50}}))
    args = ["play", "--model", "tiny", "--server", "http://127.0.0.1:9", "--episodes", "1"]
    out = runner.invoke(app, [*args, "--model-base-path", str(tmp_path / "models")])
    assert "env: Acrobot-v1 (recorded in the model)" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: http://127.0.0.1:9/")
    out = runner.invoke(app, [*args, "--model-base-path", str(tmp_path / "none")])
    assert out.exit_code == 2 and out.stderr.strip() == (
        f"error: --model: no exported model 'tiny': {tmp_path / 'none'} is not a directory "
        "(give --model-base-path, or --env ID to play a model only the server has)"
    )


# ------------------------------------------------------------------------ plot


def plot_run(root: Path, name: str, **sections) -> Path:
    run = root / name
    run.mkdir(parents=True)
    write_yaml(run / "config.yaml", config.parse(tiny_config(**sections)).to_dict())
    evals = [{"env_steps": s, "return_mean": 10.0, "return_std": 1.0} for s in (600, 1200)]
    (run / "evals.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    return run


def test_plot_labels_use_dotted_names_and_are_unique(tmp_path: Path):
    from rlplat.plot import curve_labels, plot_runs

    a = plot_run(tmp_path / "x", "a", train={"batch_size": 16})
    b = plot_run(tmp_path / "x", "b", train={"batch_size": 32})
    labels, _ = curve_labels([a, b])  # one name (the title's): the seed and what differs
    assert labels == ["s0, train.batch_size=16", "s0, train.batch_size=32"]
    # cadences of checkpoints, logs and evals change no curve: not in the legend
    cadence = plot_run(tmp_path / "z", "a", checkpoint={"every_env_steps": 800},
                       train={"batch_size": 16, "log_every": 400})  # fmt: skip
    labels, _ = curve_labels([a, cadence])
    assert labels == [f"s0 ({a})", f"s0 ({cadence})"]
    other = plot_run(tmp_path / "x", "o")
    renamed = {**yaml.safe_load((other / "config.yaml").read_text()), "name": "other"}
    write_yaml(other / "config.yaml", renamed)
    assert curve_labels([a, other])[0] == ["tiny s0", "other s0"]
    same = plot_run(tmp_path / "y", "a")  # same config and dir name as a, another folder
    c = plot_run(tmp_path / "x", "c")
    labels, _ = curve_labels([a, c, same])  # identical configs
    assert labels == [f"s0 ({a})", "s0 (c)", f"s0 ({same})"]
    # beside what it draws: one run's directory, or the runs' common parent
    assert plot_runs([a, b, c]) == tmp_path / "x" / "curves.png"
    assert plot_runs([a]) == a / "curves.png" and (a / "curves.png").stat().st_size > 0
