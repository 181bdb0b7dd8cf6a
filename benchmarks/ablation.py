"""DQN ablation: plain, +double, +dueling, +PER, +n-step, all, on one experiment; one table.

    .venv/bin/python benchmarks/ablation.py experiments/cartpole_dqn.yaml --seeds 0 1 2 \\
        --out benchmarks/results/ablation_cartpole.md

Each variant is the experiment with the four DQN flags forced (so the base file's own
flags do not leak in). Prints one JSON line with every run; writes a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_to_threshold import run_seed  # noqa: E402

PLAIN = {
    "agent.double": "false",
    "agent.dueling": "false",
    "agent.n_step": "1",
    "replay.type": "uniform",
}
VARIANTS = {
    "plain": {},
    "+double": {"agent.double": "true"},
    "+dueling": {"agent.dueling": "true"},
    "+PER": {"replay.type": "prioritized"},
    "+n-step (3)": {"agent.n_step": "3"},
    "all": {
        "agent.double": "true",
        "agent.dueling": "true",
        "replay.type": "prioritized",
        "agent.n_step": "3",
    },
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path, default=None, help="Markdown table file")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="rlplat-ablation-"))
    results = {}
    for name in args.variants:
        flags = {**PLAIN, **VARIANTS[name]}
        overrides = [*args.overrides, *(f"{k}={v}" for k, v in flags.items())]
        slug = name.strip("+").split()[0].replace("-", "")
        results[name] = [
            run_seed(args.experiment, seed, overrides, root / slug) for seed in args.seeds
        ]
    lines = [
        f"Ablation on `{args.experiment}` (seeds {' '.join(map(str, args.seeds))}; "
        "final = deterministic eval over >= 20 episodes)",
        "",
        "| variant | reached threshold | median s to it | final eval per seed | mean final |",
        "|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        times = [r["wall_s_to_threshold"] for r in runs if r["reached"]]
        finals = [r["final_eval_mean"] for r in runs]
        lines.append(
            f"| {name} | {len(times)}/{len(runs)} | "
            f"{round(statistics.median(times), 1) if times else '-'} | "
            f"{' / '.join(f'{f:.1f}' for f in finals)} | {statistics.mean(finals):.1f} |"
        )
    table = "\n".join(lines) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)
    print(table, file=sys.stderr)
    out = {"benchmark": "ablation", "experiment": Path(args.experiment).stem,
           "seeds": args.seeds, "results": results}  # fmt: skip
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
