"""benchmarks/results_check.py's header blocks: one per tag, rewritten in place."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import results_check as rc  # noqa: E402


def _result(final: float) -> dict:
    run = {"final_eval_mean": final, "final_eval_episodes": 20}
    estimate = {"value": final, "low": final - 1, "high": final + 1, "runs": 2}
    return {
        "seeds": [21, 22], "threshold": 200.0, "final_ge_threshold": "2/2",
        "reached_threshold": "2/2", "final_eval_iqm": estimate, "runs": [run, run],
        "env_steps_to_threshold_iqm": estimate, "wall_s_to_threshold_iqm": estimate,
    }  # fmt: skip


def test_blocks_are_rewritten_in_place_one_per_tag(tmp_path: Path):
    path = tmp_path / "x.yaml"
    path.write_text("# what it is\n# --- measured\n# ---\nname: x\nseed: 0\n")
    rc.write_header(path, rc.header_lines(_result(210.0), "cmd one"))
    rc.write_header(path, rc.header_lines(_result(220.0), "cmd ray", "_ray"), "_ray")
    rc.write_header(path, rc.header_lines(_result(230.0), "cmd two"))
    text = path.read_text()
    assert text.startswith("# what it is\n# --- measured by ")
    assert text.endswith("name: x\nseed: 0\n")
    assert "cmd one" not in text and text.count("# cmd two") == 1 and text.count("# cmd ray") == 1
    assert "finals 230.0 / 230.0" in text and "[ray] by" in text
    skipped = rc.header_lines({"skipped": "why"}, "cmd")
    assert skipped == ["# --- measured by benchmarks/results_check.py: skipped (why)", "# ---"]
