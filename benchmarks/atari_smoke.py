"""A smoke run of each ready Atari experiment, as a user checks one before a long run:

    .venv/bin/python benchmarks/atari_smoke.py experiments/breakout_dqn.yaml \
        --set train.env_steps=3000 --set collect.num_actors=2

`rlplat train FILE --set ...` in a fresh run directory, timed from the command's start to
its end, with the final eval's games: their lengths in agent steps and how many ran to
the time limit (`env.max_episode_steps`): a policy that waits in a ball-less state plays
every game to that limit. One JSON line, saved as
benchmarks/results/atari_smoke_NAME.json (several files: one line each). Seconds depend
on the machine and its load (`load_avg_1m` says how busy it was); game lengths do not.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from _machine import machine_text

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
RLPLAT = str(Path(sys.executable).with_name("rlplat"))


def smoke(path: Path, sets: list[str], root: Path) -> dict:
    run_dir = root / path.stem
    command = [RLPLAT, "train", str(path), *[f"--set={s}" for s in sets], "--run-dir",
               str(run_dir), "--no-export"]  # fmt: skip
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{path}: exit {out.returncode}\n{out.stderr[-3000:]}")
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    final = json.loads((run_dir / "eval_final.json").read_text())
    limit = cfg["env"]["max_episode_steps"]
    lengths = [int(x) for x in final["lengths"]]
    return {
        "benchmark": "atari_smoke",
        "experiment": path.stem,
        "command": " ".join(["rlplat", *command[1:]]),
        "wall_s": round(wall, 1),
        "load_avg_1m_at_start": round(load, 2),
        "final_eval_episodes": len(lengths),
        "final_eval_lengths": lengths,
        "games_at_time_limit": sum(n >= limit for n in lengths) if limit else None,
        "max_episode_steps": limit,
        "final_eval_returns": final["returns"],
        "eval_heartbeat_lines": sum("episodes done" in ln for ln in out.stdout.splitlines()),
        "machine": machine_text(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiments", nargs="+", type=Path)
    parser.add_argument("--set", dest="sets", action="append", default=[])
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="atari-smoke-") as root:
        for path in args.experiments:
            record = smoke(path, args.sets, Path(root))
            line = json.dumps(record)
            print(line, flush=True)
            (RESULTS / f"atari_smoke_{path.stem}.json").write_text(line + "\n")


if __name__ == "__main__":
    main()
