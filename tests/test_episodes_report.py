"""rlplat.episodes_report: what `rlplat eval` and `rlplat play` share (episodes, table, record)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rlplat.config import EnvConfig
from rlplat.episodes_report import episodes_report
from rlplat.errors import UserError
from rlplat.policies import LoadedPolicy


def _policy(out_dir: Path | None) -> LoadedPolicy:
    return LoadedPolicy(act=lambda obs: np.zeros(len(obs), np.int64),
                        env=EnvConfig(id="CartPole-v1"), name="zeros", source="test",
                        out_dir=out_dir)  # fmt: skip


def test_the_record_goes_beside_the_policy_with_the_extra_fields(tmp_path: Path, capsys):
    said: list[str] = []
    report = episodes_report(
        _policy(tmp_path), 3, 0, "none", "mp4", None, "eval.json", {"stochastic": False},
        say=said.append,
    )  # fmt: skip
    assert report.record.parent.parent == tmp_path and report.videos == []
    record = json.loads(report.record.read_text())
    assert record["stochastic"] is False and record["episodes"] == 3 and record["seed"] == 0
    assert record["videos"] == [] and len(record["returns"]) == 3
    assert "zeros: 3 episodes (seed 0)" in capsys.readouterr().out


def test_an_out_dir_that_cannot_be_made_is_one_user_error(tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="--out .*cannot create"):
        episodes_report(_policy(None), 1, 0, "none", "mp4", tmp_path / "file" / "x",
                        "play.json", {})  # fmt: skip
