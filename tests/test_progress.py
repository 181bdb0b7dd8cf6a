"""The training progress bar at a fixed terminal width: fields that do not fit are left out
whole, never cut mid-number."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from rlplat.loops.session import progress_bar


def _render(width: int, name: str, total: int, done: int) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=True, color_system=None)
    bar = progress_bar(console, True, name, total)
    bar.start()
    bar.add_task(name, total=total, completed=done, sps=12345.6, ret="-1234.5", eval="215.3")
    bar.refresh()
    bar.stop()
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buf.getvalue()).replace("\r", "\n")
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.mark.parametrize("width", [60, 80, 100, 120, 200])
@pytest.mark.parametrize(("total", "done"), [(100_000, 81_920), (150_000, 49_152),
                                             (10_000_000, 8_192_000)])  # fmt: skip
def test_the_bar_fits_and_never_cuts_a_number(width: int, total: int, done: int):
    line = _render(width, "lunarlander_dqn", total, done)
    assert len(line) <= width
    assert f"{done:,}/{total:,}" in line  # the count, always, whole
    assert "eval 215.3" in line
    assert not re.search(r"\d…", line), line  # nothing cut mid-number
    if width >= 80:
        assert "train -1234.5" in line
    if width >= 120:
        assert "12,346 steps/s" in line and "━" in line


def test_a_long_name_is_shortened_not_the_numbers():
    line = _render(80, "a_very_long_experiment_name_indeed", 150_000, 120_000)
    assert line.startswith("a_very_long_experiment_…") and "120,000/150,000" in line


def test_without_the_bar_a_plain_progress_line_comes_on_a_cadence(tmp_path, monkeypatch):
    from conftest import tiny_config

    from rlplat import config
    from rlplat.loops import session
    from rlplat.train import Trainer

    monkeypatch.setattr(session, "HEARTBEAT_S", 0.0)
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=False, width=80)
    data = tiny_config(train={"env_steps": 600}, export={"enabled": False})
    Trainer(config.parse(data), tmp_path / "run", console=console).run(show_progress=False)
    lines = [line for line in buf.getvalue().splitlines() if line.startswith("tiny: ")]
    assert lines, buf.getvalue()
    assert re.fullmatch(
        r"tiny: [\d,]+/600 env steps, [\d,]+ steps/s, train \S+, eval \S+, ETA (\d+:\d\d:\d\d|-)",
        lines[-1],
    ), lines[-1]
    assert session._clock(3 * 86400 + 62) == "72:01:02"
