"""Train an experiment for one or more seeds; print one JSON line of figures.

    .venv/bin/python benchmarks/train_to_threshold.py experiments/cartpole_dqn.yaml --seeds 0 1 2

Per seed: env steps and wall seconds when the periodic eval mean first reached the
experiment's `eval.threshold`, the final deterministic eval (>= 20 episodes), env steps/s
and learner updates/s. Runs go to a temporary directory unless --runs-root is given.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import rlplat  # noqa: F401  (environment set-up before TensorFlow)
from rlplat import config as config_mod
from rlplat import stats
from rlplat.train import TrainSummary, train


def run_seed(path: str, seed: int, overrides: list[str], root: Path) -> dict:
    run_dir = root / f"seed{seed}"
    cfg = config_mod.load(
        path, [*overrides, f"seed={seed}", f"export.model_base_path={run_dir / 'models'}"]
    )
    t0 = time.perf_counter()
    s = train(cfg, run_dir, show_progress=False)
    return {"seed": seed, "threshold": cfg.eval.threshold, **figures(s, time.perf_counter() - t0)}


def to_threshold(run: dict, key: str) -> float:
    """A run's env steps (`key` "env_steps") or seconds ("wall_s") to the threshold; a run
    that never reached it counts its whole run, so dropping it never flatters a figure."""
    return run[f"{key}_to_threshold"] if run["reached"] else run[key]


def figures(s: TrainSummary, wall_s: float) -> dict:
    """A finished run's figures: when it first reached the threshold, its final eval, rates."""
    first = s.first_threshold or {}
    return {
        "reached": s.first_threshold is not None,
        "env_steps_to_threshold": first.get("env_steps"),
        "wall_s_to_threshold": first.get("wall_s"),
        "final_eval_mean": round(s.final_eval["return_mean"], 2),
        "final_eval_std": round(s.final_eval["return_std"], 2),
        "final_eval_episodes": s.final_eval["episodes"],
        "env_steps": s.env_steps,
        "wall_s": round(wall_s, 1),
        "env_steps_per_s": round(s.env_steps_per_s, 1),
        "updates_per_s": round(s.updates_per_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--runs-root", type=Path, default=None)
    args = ap.parse_args()
    root = args.runs_root or Path(tempfile.mkdtemp(prefix="rlplat-bench-"))
    runs = [run_seed(args.experiment, seed, args.overrides, root) for seed in args.seeds]
    threshold = runs[0]["threshold"]
    times = [r["wall_s_to_threshold"] for r in runs if r["reached"]]
    out = {
        "benchmark": "train_to_threshold",
        "experiment": Path(args.experiment).stem,
        "overrides": args.overrides,
        "seeds": args.seeds,
        "reached_threshold": f"{len(times)}/{len(runs)}",
        "final_eval_ge_threshold": (
            f"{sum(r['final_eval_mean'] >= threshold for r in runs)}/{len(runs)}"
            if threshold is not None
            else None
        ),
        "median_wall_s_to_threshold": statistics.median(times) if times else None,
        # rlplat/stats.py's IQM and interval over every seed, one that never reached the
        # threshold counted at its whole run (as `rlplat compare` does)
        "wall_s_to_threshold_iqm": stats.estimate(
            [to_threshold(r, "wall_s") for r in runs]
        ).to_dict(),
        "runs": runs,
        "runs_root": str(root),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
