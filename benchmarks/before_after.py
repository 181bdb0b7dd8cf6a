"""Replay and collection throughput at two commits, measured alternately in one sitting;
one JSON line.

    .venv/bin/python benchmarks/before_after.py --before 9230c1f --after HEAD --rounds 3 \
        --out benchmarks/results/experience_before_after.json

Each commit is checked out into a temporary git worktree and measured there by its own
copy of four benchmark scripts (replay_throughput.py, frame_replay.py,
collect_throughput.py, atari_collect_throughput.py on Breakout), on the installed stack
of this checkout. Rounds alternate the order (before, after; then after, before; ...) so
that a drift in the machine's load falls on both alike. Per figure: each commit's median
over the rounds and after / before (for seconds, before / after: above 1 is better).
The load average before and after is recorded; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import _worktree  # benchmarks/ is sys.path[0] when run as a script
from _machine import emit

# script, its arguments, and the figures read from its JSON line: (name, path, higher is better)
SCRIPTS: list[tuple[str, list[str], list[tuple[str, str, bool]]]] = [
    ("replay_throughput.py", [], [
        ("prioritized sample+update /s", "per_sample_plus_update_per_s", True),
        ("prioritized sample /s", "per_sample_per_s", True),
        ("prioritized update /s", "per_update_per_s", True),
        ("uniform sample /s", "uniform_sample_per_s", True),
        ("prioritized fill 1M s", "per_fill_1m_s", False),
    ]),
    ("frame_replay.py", [], [
        ("frames add rows /s", "add_rows_per_s", True),
        ("frames sample32 /s", "sample32_per_s", True),
        ("frames sample32+update /s", "sample32_update_per_s", True),
        ("frames bytes per transition", "bytes_per_transition", False),
        ("frames checkpoint write s", "checkpoint_write_s", False),
    ]),
    ("collect_throughput.py", [], [
        ("LunarLander 2 Ray collectors / (cores x raw)", "median_ratio_to_cores_x_raw", True),
        ("LunarLander in-process collector env steps/s",
         "in_process_collector_env_steps_per_s", True),
    ]),
    ("atari_collect_throughput.py", ["--games", "Breakout"], [
        ("Breakout dqn collector agent steps/s", "games.Breakout.dqn.collector.agent_steps_per_s",
         True),
        ("Breakout dqn 2 Ray collectors agent steps/s",
         "games.Breakout.dqn.ray_2.agent_steps_per_s", True),
        ("Breakout ppo collector agent steps/s", "games.Breakout.ppo.collector.agent_steps_per_s",
         True),
        ("Breakout ppo 2 Ray collectors agent steps/s",
         "games.Breakout.ppo.ray_2.agent_steps_per_s", True),
    ]),
]  # fmt: skip


def measure(tree: Path, script: str, args: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=tree, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def pick(d: dict, path: str) -> float:
    for key in path.split("."):
        d = d[key]
    return float(d)


def compare(runs: dict[str, list[dict]], figures: list[tuple[str, str, bool]]) -> list[dict]:
    rows = []
    for name, path, higher in figures:
        before = statistics.median(pick(r, path) for r in runs["before"])
        after = statistics.median(pick(r, path) for r in runs["after"])
        better = after / before if higher else before / after
        rows.append({
            "figure": name, "before": before, "after": after,
            "before_rounds": [pick(r, path) for r in runs["before"]],
            "after_rounds": [pick(r, path) for r in runs["after"]],
            "after_vs_before": round(better, 3),
        })  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="a git revision")
    ap.add_argument("--after", default="HEAD", help="a git revision")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, help="script names to run")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON line here")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rlplat-before-after-") as tmp:
        root = Path(tmp)
        trees = {
            "before": _worktree.add(args.before, root),
            "after": _worktree.add(args.after, root),
        }
        try:
            results = []
            for script, script_args, figures in SCRIPTS:
                if args.only and script not in args.only:
                    continue
                runs: dict[str, list[dict]] = {"before": [], "after": []}
                for r in range(args.rounds):
                    order = ("before", "after") if r % 2 == 0 else ("after", "before")
                    for which in order:
                        runs[which].append(measure(trees[which][1], script, script_args))
                results.append({"script": script, "args": script_args,
                                "figures": compare(runs, figures)})  # fmt: skip
        finally:
            for _, tree in trees.values():
                _worktree.remove(tree)
    emit({
        "benchmark": "before_after",
        "before": trees["before"][0], "after": trees["after"][0], "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "results": results,
    }, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
