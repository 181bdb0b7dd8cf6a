"""`rlplat tune`: sweeps on Ray Tune, every trial a run directory (rlplat/tune.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import RLPLAT, processes_of, run_cli, tiny_config, user_env

from rlplat.tune import held_out_seeds


def _experiment(tmp_path: Path, **sections) -> Path:
    # threshold 0: every eval reaches it, so the sweep's space can make a trial never reach
    # it (eval.threshold: 1e6) and be the worst one for sure, whatever it learns.
    cfg = tiny_config(eval={"every_env_steps": 400, "threshold": 0}, **sections)
    cfg["agent"]["lr_schedule"] = "constant"
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _space(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def _sweep_dir(tmp_path: Path) -> Path:
    (found,) = (tmp_path / "runs" / "tiny").glob("tune-*")
    return found


def _results(sweep: Path, tuner: str = "ray") -> dict[str, list[dict]]:
    """Every report of every trial, from Ray Tune's result.json files."""
    out = {}
    for path in (sweep / tuner).glob("trial-*/result.json"):
        out[path.parent.name] = [json.loads(line) for line in path.read_text().splitlines()]
    return out


def _sweep_env() -> dict[str, str]:
    """A user's environment, with the sweep's Ray workers (its trials) at the test's own
    priority: Ray adds 15 to their niceness (RAY_worker_niceness), so beside nice-0 work on
    a busy 2-core CI machine they starve and a sweep of seconds runs past its timeout."""
    return {**user_env(), "RAY_worker_niceness": "0"}


def test_held_out_seeds_skip_used_ones():
    assert held_out_seeds(3, {0, 2}) == [1, 3, 4]


def test_bad_space_is_refused_before_anything_runs(tmp_path):
    exp = _experiment(tmp_path)
    space = _space(
        tmp_path,
        "agent.learning_rate: {loguniform: [-1.0e-4, 1.0e-2]}\n"
        "agent.bogus: {choice: [1, 2]}\n"
        "train.batch_size: {choice: [32, -4]}\n"
        "eval.episodes: {randint: [0, 5]}\n"
        "agent.gamma: {uniform: [0.9, 0.99]}\n",
    )
    out = run_cli("tune", str(exp), "--space", str(space), cwd=tmp_path, timeout=60)
    assert out.returncode == 2, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 4, out.stderr  # one per bad key; agent.gamma is fine
    for key in ("agent.learning_rate", "agent.bogus", "train.batch_size", "eval.episodes"):
        assert sum(key in line for line in errors) == 1, (key, errors)
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_other_settings_and_missing_sweeps(tmp_path):
    exp = _experiment(tmp_path)
    space = _space(tmp_path, "agent.learning_rate: {choice: [1.0e-3, 2.0e-3]}\n")
    args = ["tune", str(exp), "--space", str(space), "--resume"]
    out = run_cli(*args, cwd=tmp_path, timeout=60)
    assert out.returncode == 2 and "--resume: no sweep to continue" in out.stderr, out.stderr
    sweep = tmp_path / "runs" / "tiny" / "tune-1"
    sweep.mkdir(parents=True)
    options = {"experiment": str(exp), "space": str(space), "scheduler": "asha",
               "metric": "eval_return", "samples": 4, "pbt_keys": []}  # fmt: skip
    (sweep / "sweep.json").write_text(json.dumps({"argv": [], "options": options}))
    out = run_cli(*args, "--metric", "wall_s_to_threshold", cwd=tmp_path, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "--resume: metric was 'eval_return'" in out.stderr
    assert sorted(p.name for p in sweep.iterdir()) == ["sweep.json"]  # nothing written


@pytest.mark.slow
def test_a_sweep_whose_every_trial_fails_says_why(tmp_path):
    exp = _experiment(tmp_path)
    # the schema takes any id; the trial's environment then cannot be made
    space = _space(tmp_path, "env.id: {choice: [NoSuchEnv-v0]}\n")
    out = run_cli(
        "tune", str(exp), "--space", str(space), "--samples", "1", cwd=tmp_path, env=_sweep_env()
    )
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    (line,) = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert "every trial failed" in line and "error.txt" in line
    assert not (_sweep_dir(tmp_path) / "best.yaml").exists()


@pytest.fixture(scope="module")
def asha_sweep(tmp_path_factory):
    """Two trials under ASHA, one after the other (ASHA is asynchronous: the first trial at
    a rung has nothing to be compared with); the second never reaches the threshold. The
    winner is re-run on one held-out seed."""
    tmp = tmp_path_factory.mktemp("asha")
    exp = _experiment(tmp)
    space = _space(
        tmp,
        "agent.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"
        "eval.threshold: {grid: [0, 1000000]}\n",
    )
    out = run_cli(
        "tune", str(exp), "--space", str(space), "--samples", "1", "--max-concurrent", "1",
        "--metric", "env_steps_to_threshold", "--top-k", "1", "--held-out-seeds", "1",
        "--set", "eval.episodes=3", cwd=tmp, timeout=600, env=_sweep_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return tmp, _sweep_dir(tmp), out


@pytest.mark.slow
def test_sweep_runs_every_trial_as_a_run_dir(asha_sweep):
    _, sweep, _ = asha_sweep
    results = json.loads((sweep / "results.json").read_text())
    assert len(results["trials"]) == 2
    for row in results["trials"]:
        run_dir = sweep / row["trial"]
        assert (run_dir / "config.yaml").is_file() and (run_dir / "tb").is_dir()
        assert (run_dir / "evals.jsonl").is_file()
    best = results["trials"][0]
    assert best["params"]["eval.threshold"] == 0 and best["score"] == 400
    assert (sweep / best["trial"] / "summary.json").is_file()
    # the held-out re-run: a seed no trial used, in its own run directory
    (held,) = results["held_out"]
    assert held["seeds"] == [1] and held["params"] == best["params"]
    assert held["iqm"]["value"] == held["score"]  # rlplat/stats.py's IQM beside the mean
    (rerun,) = (sweep / "heldout").glob("trial-*")
    assert yaml.safe_load((rerun / "config.yaml").read_text())["seed"] == 1


@pytest.mark.slow
def test_sweep_shows_its_own_progress_and_applies_set(asha_sweep):
    _, sweep, out = asha_sweep
    text = out.stdout + out.stderr
    # rlplat's lines: each report and each trial's end, then the ranked tables
    assert f"tensorboard --logdir {sweep}" in text
    trials = [ln for ln in out.stderr.splitlines() if ln.startswith("[trials] trial-")]
    assert any("stopped early by the scheduler" in ln for ln in trials), trials
    assert sum("finished at 1,200 env steps" in ln for ln in trials) == 1, trials
    assert any(ln.startswith("[held-out] trial-") for ln in out.stderr.splitlines())
    # not Ray Tune's tables, its checkpoint log lines, nor the "not reached yet" (inf)
    # threshold figures turned into NaN warnings by a TensorBoard logger
    for noise in ("Trial status", "Checkpoint successfully created", "NaN or Inf",
                  "driver_artifacts", "RuntimeWarning"):  # fmt: skip
        assert noise not in text, noise
    # --set reaches every trial, the held-out re-runs and best.yaml
    for config in [*sweep.glob("trial-*/config.yaml"), *sweep.glob("heldout/*/config.yaml")]:
        assert yaml.safe_load(config.read_text())["eval"]["episodes"] == 3, config
    assert yaml.safe_load((sweep / "best.yaml").read_text())["eval"]["episodes"] == 3


def test_dry_run_shows_the_resolved_config_and_the_sweeps_size(tmp_path):
    exp = _experiment(tmp_path)
    space = _space(
        tmp_path,
        "agent.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"
        "agent.gamma: {grid: [0.9, 0.95, 0.99]}\n",
    )
    args = ["tune", str(exp), "--space", str(space), "--samples", "2", "--top-k", "2"]
    out = run_cli(*args, "--set", "train.env_steps=800", "--dry-run", cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["train"]["env_steps"] == 800  # YAML, comments after
    assert "# trials: 6 (--samples 2 x the grid's points), each up to 800 env steps" in out.stdout
    assert "# held-out re-runs: up to 6 (2 configs x 3 seeds)" in out.stdout
    assert not (tmp_path / "runs").exists()
    # a key both set and swept, or unknown, is refused before anything runs
    for item, says in (("agent.gamma=0.9", "--set agent.gamma: "), ("agent.bogus=1", "bogus")):
        out = run_cli(*args, "--set", item, cwd=tmp_path, timeout=60)
        assert out.returncode == 2 and says in out.stderr, out.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_asha_stops_the_bad_trial_with_a_clean_run_dir(asha_sweep):
    _, sweep, _ = asha_sweep
    results = json.loads((sweep / "results.json").read_text())
    (bad,) = [r for r in results["trials"] if r["params"]["eval.threshold"] == 1000000]
    assert not bad["finished"] and bad["env_steps"] < 1200
    run_dir = sweep / bad["trial"]
    assert not (run_dir / "summary.json").exists()
    # its last reported point is a complete checkpoint (written under a temporary name and
    # renamed), with nothing half-written beside it
    checkpoints = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert checkpoints and all(name.startswith("ckpt-") for name in checkpoints)
    assert f"ckpt-{bad['env_steps']:012d}" in checkpoints


@pytest.mark.slow
def test_best_yaml_trains_unchanged(asha_sweep):
    tmp, sweep, _ = asha_sweep
    text = (sweep / "best.yaml").read_text()
    assert "# Sweep command: rlplat tune" in text and "--metric env_steps_to_threshold" in text
    best = json.loads((sweep / "results.json").read_text())["best"]
    cfg = yaml.safe_load(text)
    assert cfg["agent"]["learning_rate"] == best["agent.learning_rate"]
    assert cfg["eval"]["threshold"] == 0
    out = run_cli("train", str(sweep / "best.yaml"), "--run-dir", "best", cwd=tmp)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((tmp / "best" / "summary.json").read_text())["env_steps"] == 1200


@pytest.mark.slow
def test_pbt_mutation_is_used_after_restore(tmp_path):
    """The worse trial takes the better one's checkpoint with a perturbed learning rate;
    the optimizer's learning rate at every later report is that perturbed value (not the
    one restored from the checkpoint). Both trials run at once for 10 evals: PBT exploits
    when the worse trial reports after the better one has reported in the upper half."""
    exp = _experiment(tmp_path, train={"env_steps": 4000})
    space = _space(
        tmp_path,
        "agent.learning_rate: {loguniform: [1.0e-4, 1.0e-2]}\n"
        "eval.threshold: {grid: [0, 1000000]}\n"
        "pbt: [agent.learning_rate]\n",
    )
    out = run_cli(
        "tune", str(exp), "--space", str(space), "--samples", "1", "--scheduler", "pbt",
        "--metric", "env_steps_to_threshold", "--held-out-seeds", "0", cwd=tmp_path,
        timeout=600, env=_sweep_env(),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    sweep = _sweep_dir(tmp_path)
    restored = []
    for trial, reports in _results(sweep).items():
        for report in reports:
            lr = report["config"]["agent.learning_rate"]
            assert report["learning_rate"] == pytest.approx(lr, rel=1e-5), (trial, report)
        run = json.loads((sweep / trial / "run.json").read_text())
        for resume in run.get("resumes", []):
            if "agent.learning_rate" in resume["changes"]:
                restored.append((trial, resume["changes"]["agent.learning_rate"]))
    assert restored, "PBT never exploited: no trial restored with a perturbed learning rate"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill -9"])
def test_resume_after_ctrl_c_or_a_kill_skips_finished_trials(tmp_path, signum):
    exp = _experiment(tmp_path)
    # one at a time: a short trial that finishes, then a long one that is interrupted
    space = _space(tmp_path, "train.env_steps: {grid: [1200, 10000]}\n")
    args = ["tune", str(exp), "--space", str(space), "--samples", "1", "--scheduler", "none",
            "--max-concurrent", "1", "--held-out-seeds", "0"]  # fmt: skip
    proc = subprocess.Popen(
        [RLPLAT, *args], cwd=tmp_path, env=_sweep_env(), text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        # A kill gives Ray Tune no chance to save the sweep's state: it is saved as the
        # sweep goes, so a kill waits for a few more of the long trial's reports.
        reports = 2 if signum == signal.SIGINT else 4
        while time.monotonic() < deadline and not _long_trial_checkpointed(tmp_path, reports):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(1)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    if signum == signal.SIGINT:
        assert proc.returncode == 130, err[-3000:]
        assert "--resume" in err
    else:  # the sweep's own Ray dies with it
        assert proc.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 60
        while processes_of(f"_{proc.pid}/") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not processes_of(f"_{proc.pid}/")
    sweep = _sweep_dir(tmp_path)
    (short,) = [p for p in sweep.glob("trial-*") if (p / "summary.json").is_file()]
    finished_at = (short / "summary.json").stat().st_mtime_ns
    out = run_cli(*args, "--resume", cwd=tmp_path, env=_sweep_env())
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (short / "summary.json").stat().st_mtime_ns == finished_at  # not rerun
    assert "resumes" not in json.loads((short / "run.json").read_text())
    results = json.loads((sweep / "results.json").read_text())
    assert [r["finished"] for r in results["trials"]] == [True, True]
    (long,) = [sweep / r["trial"] for r in results["trials"] if r["env_steps"] == 10000]
    assert json.loads((long / "run.json").read_text())["resumes"]  # continued, not restarted


def _long_trial_checkpointed(tmp_path: Path, n: int = 2) -> bool:
    """The long trial has reported at least n - 1 checkpoints to Ray Tune: its n-th rlplat
    checkpoint exists, so the report that followed the one before is done (a busy machine
    can leave a file written but not yet reported)."""
    for config in (tmp_path / "runs").glob("tiny/tune-*/trial-*/config.yaml"):
        if yaml.safe_load(config.read_text())["train"]["env_steps"] == 10000:
            return len(list((config.parent / "checkpoints").glob("ckpt-*"))) >= n
    return False
