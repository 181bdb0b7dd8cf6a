"""`rlplat compare`: the plan (experiments, seeds), the report from run directories (the
statistics, the words, compare.json, pictures, TensorBoard) and, end to end, runs in
parallel that a Ctrl-C stops and `--resume` finishes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import RLPLAT, tiny_config, user_env

from rlplat import compare as cmp
from rlplat.compare_report import read_run, summarise
from rlplat.errors import UserError


def _file(tmp_path: Path, name: str, **sections) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tiny_config(name=name, **sections)))
    return path


def test_the_plan_checks_its_experiments_and_seeds(tmp_path):
    a, b = _file(tmp_path, "a"), _file(tmp_path, "b")
    arms = cmp.parse_arms([str(a), f"slow={b}"], [])
    assert [x.label for x in arms] == ["a", "slow"]
    with pytest.raises(UserError, match="no such experiment file"):
        cmp.parse_arms([str(a), str(tmp_path / "nope.yaml")], [])
    with pytest.raises(UserError, match="share a label"):
        cmp.parse_arms([str(a), f"a={b}"], [])
    other = _file(tmp_path, "m", env={"id": "MountainCar-v0"})
    with pytest.raises(UserError, match="different tasks"):
        cmp.parse_arms([str(a), str(other)], [])
    with pytest.raises(UserError, match="at least two"):
        cmp.parse_arms([str(a)], [])
    assert cmp.choose_seeds(3, 1000, arms, False) == [1000, 1001, 1002]
    with pytest.raises(UserError, match="own seed"):  # tiny_config's seed is 0
        cmp.choose_seeds(2, 0, arms, False)
    assert cmp.choose_seeds(2, 0, arms, True) == [0, 1]


def test_a_plan_is_saved_and_loaded(tmp_path):
    plan = cmp.Plan(tmp_path, [cmp.Arm("a", ("/x/a.yaml",))], [1000, 1001], ["seed=3"], None)
    plan.save()
    assert cmp.Plan.load(tmp_path) == plan
    (tmp_path / cmp.PLAN_FILE).write_text("{not json")
    with pytest.raises(UserError, match="not a comparison plan"):
        cmp.Plan.load(tmp_path)
    with pytest.raises(UserError, match="no comparison to resume"):
        cmp.Plan.load(tmp_path / "elsewhere")


def _fake_run(root: Path, arm: str, env: str, seed: int, final: float, reached: int | None):
    """A finished run directory as `rlplat train` leaves it (the files compare reads)."""
    run = root / arm / env.replace("/", "-") / f"s{seed}"
    run.mkdir(parents=True)
    cfg = {"name": arm, "seed": seed, "env": {"id": env}, "eval": {"threshold": 100.0}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    first = {"env_steps": reached, "wall_s": reached / 100} if reached else None
    summary = {"env_steps": 1000, "wall_s": 10.0, "first_threshold": first,
               "final_eval": {"return_mean": final}}  # fmt: skip
    (run / "summary.json").write_text(json.dumps(summary))
    evals = [{"env_steps": s, "return_mean": final * s / 1000} for s in (500, 1000)]
    (run / "evals.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    return run


def test_the_report_says_which_is_better_and_writes_every_number(tmp_path):
    runs = [_fake_run(tmp_path / "r", "a", "CartPole-v1", s, f, None)
            for s, f in zip(range(5), (20, 30, 25, 35, 28), strict=True)]  # fmt: skip
    runs += [_fake_run(tmp_path / "r", "b", "CartPole-v1", s, f, 600)
             for s, f in zip(range(5), (150, 160, 140, 170, 155), strict=True)]  # fmt: skip
    from rich.console import Console

    from rlplat.compare_report import report

    console = Console(record=True, width=100)
    summary = report([read_run(r) for r in runs], ["a", "b"], tmp_path / "out", console)
    text = console.export_text()
    assert "b scores higher: P(b > a) = 1.00" in text
    saved = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert saved["per_experiment"]["b"]["iqm"]["value"] == pytest.approx(155.0)
    assert saved["per_experiment"]["a"]["to_threshold"]["reached"] == 0  # counted, not dropped
    assert saved["per_experiment"]["a"]["to_threshold"]["env_steps_iqm"]["value"] == 1000
    assert saved["per_experiment"]["b"]["to_threshold"]["env_steps_iqm"]["value"] == 600
    assert saved["curves"]["CartPole-v1"]["b"][-1][:2] == [1000, 155.0]
    assert summary["verdict"] == saved["verdict"]
    for name in ("curves.png", "profile.png"):
        assert (tmp_path / "out" / name).stat().st_size > 1000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((tmp_path / "out" / "tb" / "b").iterdir()).parent))
    events.Reload()
    iqm = events.Scalars("compare/CartPole-v1/return_iqm")
    assert [(e.step, e.value) for e in iqm] == [(500, 77.5), (1000, 155.0)]


def test_no_difference_is_said_in_plain_words_with_the_seeds_it_would_take():
    from rlplat.compare_report import RunResult

    def run(arm: str, seed: int, final: float) -> RunResult:
        return RunResult(arm, "CartPole-v1", seed, "", final, None, None, None, 1, 1.0, [])

    finals = {"a": (100, 120, 90, 110, 105), "b": (104, 118, 97, 115, 100)}
    results = [run(arm, s, f) for arm, xs in finals.items() for s, f in enumerate(xs)]
    [line] = summarise(results, ["a", "b"])["verdict"]
    assert line.startswith("no evidence of a difference between b and a at 5 seeds")
    assert "seeds each would likely tell them apart" in line


def test_several_atari_games_are_human_normalised_and_others_refused(tmp_path):
    from rlplat.compare_report import RunResult

    def run(arm: str, task: str, seed: int, final: float) -> RunResult:
        return RunResult(arm, task, seed, "", final, None, None, None, 1, 1.0, [])

    games = {"ALE/Breakout-v5": (1.7, 30.5), "ALE/Pong-v5": (-20.7, 14.6)}
    results = [run(arm, g, s, lo + (hi - lo) * (0.5 if arm == "a" else 1.0))
               for arm in "ab" for g, (lo, hi) in games.items() for s in range(3)]  # fmt: skip
    summary = summarise(results, ["a", "b"])
    assert summary["score"] == "human-normalised final eval"
    assert summary["per_experiment"]["a"]["iqm"]["value"] == pytest.approx(0.5)
    assert summary["per_experiment"]["b"]["iqm"]["value"] == pytest.approx(1.0)
    mixed = [run(a, t, 0, 1.0) for a in "ab" for t in ("ALE/Pong-v5", "CartPole-v1")]
    with pytest.raises(UserError, match="CartPole-v1 cannot be put on one scale"):
        summarise(mixed, ["a", "b"])


def _lines_until(proc: subprocess.Popen, text: str, timeout: float = 300) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    raise AssertionError(f"no {text!r} in:\n{''.join(lines)}")


@pytest.mark.slow
def test_runs_go_in_parallel_a_ctrl_c_stops_them_and_resume_finishes(tmp_path):
    sections = {"train": {"env_steps": 3000}, "checkpoint": {"every_env_steps": 400}}
    a, b = _file(tmp_path, "a", **sections), _file(tmp_path, "b", **sections)
    out = tmp_path / "cmp"
    cmd = [RLPLAT, "compare", str(a), str(b), "--seeds", "2", "--jobs", "2", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=user_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        lines = _lines_until(proc, "[1/4]")  # one run finished, the next ones under way
        assert sum("start" in line for line in lines) >= 2  # two at once
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, "".join(lines) + rest
    assert f"continue with: rlplat compare --resume {out}" in rest
    finished = [p for p in out.glob("runs/*/*/s*") if (p / "summary.json").exists()]
    stamps = {p: os.stat(p / "summary.json").st_mtime_ns for p in finished}
    assert 1 <= len(finished) < 4
    done = subprocess.run([RLPLAT, "compare", "--resume", str(out)], cwd=tmp_path,
                          env=user_env(), capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"4 runs ({len(finished)} done)" in done.stdout
    assert "P(> a)" in done.stdout and (out / "compare.json").is_file()
    assert all(os.stat(p / "summary.json").st_mtime_ns == t for p, t in stamps.items())
    assert len(json.loads((out / "compare.json").read_text())["runs"]) == 4
    assert np.isfinite(json.loads((out / "compare.json").read_text())["per_experiment"]["b"]
                       ["iqm"]["value"])  # fmt: skip
