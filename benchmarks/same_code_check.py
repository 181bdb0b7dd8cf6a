"""Train one experiment at several commits with the same seed; print one JSON line saying
whether their eval curves are identical.

    .venv/bin/python benchmarks/same_code_check.py experiments/lunarlander_dqn.yaml \
        --commits 1863410 HEAD --seed 1

Each commit is checked out into a temporary git worktree and trained there by its own
benchmarks/train_to_threshold.py, on the installed stack of this checkout. Python's
`random` is seeded as well as TensorFlow's (tf-keras draws unseeded initializers' seeds
from it; commits before the Trainer did this themselves were otherwise not repeatable), so
on one machine the same code gives the same curve, and a curve that differs between two
commits is a change in behaviour, not noise: bisect with it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import _worktree  # benchmarks/ is sys.path[0] when run as a script

# Run inside each worktree: seed Python's random whenever TensorFlow's seed is set.
_PRELUDE = """
import random, runpy, sys
import rlplat  # noqa: F401  (environment set-up before TensorFlow)
import tensorflow as tf
_set_seed = tf.random.set_seed
def _seed_all(seed):
    random.seed(seed)
    _set_seed(seed)
tf.random.set_seed = _seed_all
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_commit(commit: str, experiment: str, seed: int, overrides: list[str], root: Path) -> dict:
    sha, tree = _worktree.add(commit, root)
    try:
        runs = root / f"runs-{sha}"
        cmd = [sys.executable, "-c", _PRELUDE, "benchmarks/train_to_threshold.py", experiment,
               "--seeds", str(seed), "--runs-root", str(runs)]  # fmt: skip
        for item in overrides:
            cmd += ["--set", item]
        env = {**os.environ, "PYTHONPATH": str(tree)}
        out = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
        if out.returncode != 0:  # say why, not only that it failed
            raise SystemExit(f"{sha}: training failed (exit {out.returncode}):\n"
                             f"{out.stderr[-3000:]}")  # fmt: skip
        summary = json.loads(out.stdout.strip().splitlines()[-1])["runs"][0]
        evals = [json.loads(line) for line in (runs / f"seed{seed}" / "evals.jsonl").open()]
    finally:
        _worktree.remove(tree)
    return {
        "commit": sha,
        "curve": [[e["env_steps"], round(e["return_mean"], 4)] for e in evals],
        "env_steps_to_threshold": summary["env_steps_to_threshold"],
        "final_eval_mean": summary["final_eval_mean"],
        "wall_s": summary["wall_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment", help="path relative to the repository root")
    ap.add_argument("--commits", nargs="+", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON line here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rlplat-same-code-") as tmp:
        results = [
            run_commit(c, args.experiment, args.seed, args.overrides, Path(tmp))
            for c in args.commits
        ]
    curves = [r["curve"] for r in results]
    first_difference = None
    for point in range(max(len(c) for c in curves)):
        values = {json.dumps(c[point]) if point < len(c) else None for c in curves}
        if len(values) > 1:
            first_difference = point
            break
    out = {
        "benchmark": "same_code_check",
        "experiment": Path(args.experiment).stem,
        "seed": args.seed,
        "overrides": args.overrides,
        "identical_curves": first_difference is None,
        "first_differing_eval": first_difference,
        "commits": results,
    }
    line = json.dumps(out)
    print(line, flush=True)
    if args.out:
        args.out.write_text(line + "\n")


if __name__ == "__main__":
    main()
