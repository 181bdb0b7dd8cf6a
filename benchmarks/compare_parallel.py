"""`rlplat compare` with its runs in parallel against the same comparison one run at a
time (`--jobs 1`), in one sitting:

    .venv/bin/python benchmarks/compare_parallel.py experiments/lunarlander_pg.yaml \
        experiments/variants/lunarlander_pg_no_obs_norm.yaml --seeds 5 \
        --pictures docs/compare --out benchmarks/results/compare_lunarlander_pg_obs_norm.json

Prints one JSON line: both wall times, whether both gave the same final evals (each run is
seeded: on one machine they should), and the parallel comparison's compare.json figures
(without its per-run curves); copies its curves.png and profile.png to --pictures.
Seconds depend on the machine and its load (recorded).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _machine import machine  # noqa: E402

RLPLAT = str(Path(sys.executable).with_name("rlplat"))


def timed_compare(files: list[str], seeds: int, out: Path, jobs: int | None) -> dict:
    cmd = [RLPLAT, "compare", *files, "--seeds", str(seeds), "--out", str(out)]
    cmd += ["--jobs", str(jobs)] if jobs else []
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    summary = json.loads((out / "compare.json").read_text())
    return {"command": " ".join(cmd[1:]), "wall_s": round(wall, 1), "stdout": done.stdout,
            "summary": summary}  # fmt: skip


def finals(summary: dict) -> list[tuple[str, int, float]]:
    return sorted((r["arm"], r["seed"], r["final"]) for r in summary["runs"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiments", nargs="+")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--pictures", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="compare-parallel-"))
    parallel = timed_compare(args.experiments, args.seeds, root / "parallel", None)
    serial = timed_compare(args.experiments, args.seeds, root / "serial", 1)
    summary = parallel["summary"]
    if args.pictures:
        args.pictures.mkdir(parents=True, exist_ok=True)
        for name in ("curves.png", "profile.png"):
            shutil.copy(root / "parallel" / name, args.pictures / name)
    result = {
        "benchmark": "compare_parallel", "machine": machine(),
        "command": parallel["command"].replace(str(root / "parallel"), "DIR"),
        "wall_s_parallel": parallel["wall_s"], "wall_s_one_at_a_time": serial["wall_s"],
        "same_final_evals": finals(summary) == finals(serial["summary"]),
        "table": parallel["stdout"].split("\n", 1)[-1],
        **{k: summary[k] for k in ("experiments", "tasks", "seeds", "score", "per_experiment",
                                   "improvement", "verdict", "scores")},
        "runs": [{k: r[k] for k in ("arm", "seed", "final", "steps_to_threshold",
                                    "seconds_to_threshold", "wall_s")} for r in summary["runs"]],
    }  # fmt: skip
    line = json.dumps(result)
    print(line)
    args.out.write_text(line + "\n")


if __name__ == "__main__":
    main()
