"""The training loops' parts: the replay-ratio budget, weight versions, and a run whose
collectors die."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import tiny_config

from rlplat.loops.replay_ratio import ReplayRatio
from rlplat.loops.session import WeightVersions


def test_replay_ratio_owes_one_phase_per_train_every_after_learning_starts():
    ratio = ReplayRatio(train_every=50, learning_starts=200, backlog_phases=2)
    assert ratio.due(199, replay_size=199) == 0  # before learning_starts
    assert ratio.due(200, replay_size=0) == 0  # nothing to sample yet
    assert ratio.due(200, replay_size=200) == 1
    assert ratio.due(249, replay_size=249) == 1
    assert ratio.due(250, replay_size=250) == 2
    # learning_starts not a multiple of train_every: the first phase at the first
    # multiple of train_every past it
    assert ReplayRatio(50, 220, 2).due(249, 249) == 0
    assert ReplayRatio(50, 220, 2).due(250, 250) == 1


def test_replay_ratio_owed_decides_waiting_and_relaunching():
    ratio = ReplayRatio.for_fragments(train_every=100, learning_starts=0, env_steps_per_round=250)
    assert ratio.backlog_phases == 3  # one round of fragments is worth 2.5 phases
    assert ratio.idle and not ratio.behind  # nothing owed yet: wait for data
    assert ratio.settle(700, replay_size=700, phases_done=4) == 4
    assert not ratio.idle and ratio.behind  # 4 phases behind > backlog of 3: no relaunch
    assert ratio.settle(700, replay_size=700, phases_done=5) == 3
    assert not ratio.behind
    assert ratio.settle(700, replay_size=700, phases_done=8) == 0 and ratio.idle


def test_weight_versions_measure_lag_from_the_step_each_version_was_taken():
    versions = WeightVersions(train_steps=10)
    assert versions.lag(0, train_steps=15) == 5
    assert versions.next(train_steps=20) == 1 and versions.latest == 1
    assert versions.lag(1, train_steps=26) == 6 and versions.lag(0, train_steps=26) == 16
    for step in range(30, 30 + WeightVersions.KEEP):
        versions.next(step)
    # forgotten versions count from the last sync
    assert versions.lag(0, train_steps=500) == 500 - versions.synced_at


def test_dying_collectors_stop_the_run_with_a_checkpoint_and_one_clear_error(
    tmp_path: Path, monkeypatch
):
    from rlplat import config
    from rlplat.errors import UserError
    from rlplat.experience.collect import CollectorDiedError
    from rlplat.experience.sources import LocalSource
    from rlplat.train import train

    gather = LocalSource.gather
    calls = []

    def dies_on_the_tenth(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 10:
            raise CollectorDiedError("collector actor 0 died 4 times in a row; last cause: x")
        return gather(self, *args, **kwargs)

    monkeypatch.setattr(LocalSource, "gather", dies_on_the_tenth)
    run_dir = tmp_path / "run"
    cfg = config.parse(tiny_config(export={"when": "never"}))
    with pytest.raises(UserError) as err:
        train(cfg, run_dir, show_progress=False)
    assert str(err.value) == (
        "collector actor 0 died 4 times in a row; last cause: x; "
        f"resume with: rlplat train --resume {run_dir}"
    )
    (ckpt,) = [p for p in (run_dir / "checkpoints").glob("ckpt-*") if p.name.endswith("450")]
    assert json.loads((ckpt / "state.json").read_text())["env_steps"] == 9 * 50
    monkeypatch.setattr(LocalSource, "gather", gather)
    summary = train(cfg, run_dir, resume=True, show_progress=False)
    assert summary.env_steps == 1200
