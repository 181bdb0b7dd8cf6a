"""Train two experiment files alternately, seed by seed; print one JSON line comparing them.

    .venv/bin/python benchmarks/compare_experiments.py OLD.yaml NEW.yaml --seeds 3 4 5

Runs OLD seed s, NEW seed s, OLD seed s+1, NEW seed s+1, ... in this one process, each as
`rlplat train` runs it (one process, the file's own collectors), so a change of the
machine's load during the run hits both files alike. Per seed: each file's env steps and
wall seconds to its first periodic eval >= the threshold, its final eval, and the ratio
NEW/OLD of the wall time to the threshold; `wins` counts the seeds where NEW reached the
threshold in <= --win-ratio of OLD's time (OLD reached it too).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _machine import machine  # noqa: E402
from train_to_threshold import run_seed, to_threshold  # noqa: E402

from rlplat import config as config_mod  # noqa: E402
from rlplat import stats  # noqa: E402


def ratio(new: dict, old: dict) -> float | None:
    """NEW/OLD wall time to the threshold; None unless both reached it."""
    if not (new["reached"] and old["reached"]):
        return None
    return round(new["wall_s_to_threshold"] / old["wall_s_to_threshold"], 3)


def compare(old: str, new: str, seeds: list[int], root: Path, win_ratio: float) -> dict:
    rows = []
    for seed in seeds:
        row = {"seed": seed}
        for label, path in (("old", old), ("new", new)):
            row[label] = run_seed(path, seed, [], root / label)
            print(f"seed {seed} {label}: {json.dumps(row[label])}", file=sys.stderr, flush=True)
        row["ratio_new_old_wall_s_to_threshold"] = ratio(row["new"], row["old"])
        rows.append(row)
    ratios = [r["ratio_new_old_wall_s_to_threshold"] for r in rows]
    wins = sum(r is not None and r <= win_ratio for r in ratios)
    return {
        "benchmark": "compare_experiments",
        "old": old,
        "new": new,
        "seeds": seeds,
        "win_ratio": win_ratio,
        "wins": f"{wins}/{len(seeds)}",
        "ratios_new_old_wall_s_to_threshold": ratios,
        # P(NEW reaches the threshold sooner than OLD), rlplat/stats.py (a seed that never
        # reached it counts its whole run)
        "probability_new_sooner": stats.improvement_probability(
            [np.array([-to_threshold(r["old"], "wall_s") for r in rows])],
            [np.array([-to_threshold(r["new"], "wall_s") for r in rows])],
        ).to_dict(),
        "runs": rows,
        "old_config": config_mod.load(old).to_dict(),
        "new_config": config_mod.load(new).to_dict(),
        "machine": machine(),
        "runs_root": str(root),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old", help="experiment file A (today's)")
    ap.add_argument("new", help="experiment file B (the candidate)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5])
    ap.add_argument("--win-ratio", type=float, default=0.5)
    ap.add_argument("--runs-root", type=Path, default=None)
    args = ap.parse_args()
    root = args.runs_root or Path(tempfile.mkdtemp(prefix="rlplat-compare-"))
    t0 = time.perf_counter()
    out = compare(args.old, args.new, args.seeds, root, args.win_ratio)
    out["total_wall_s"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
