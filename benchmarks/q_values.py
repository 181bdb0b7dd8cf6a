"""The largest mean Q-value of taken actions (TensorBoard `losses/q_values`) each finished
DQN run logged, beside its final eval: a Q-value far above any return the env can pay is a
diverging learner.

    .venv/bin/python benchmarks/q_values.py RUN_DIR [RUN_DIR ...] --label NAME
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_check import max_scalar  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    rows = []
    for run in args.runs:
        final = json.loads((run / "eval_final.json").read_text())
        config = (run / "config.yaml").read_text()
        seed = next(
            int(line.split()[1]) for line in config.splitlines() if line.startswith("seed:")
        )
        rows.append({
            "run": run.name, "seed": seed,
            "max_mean_q_value": round(max_scalar(run / "tb", "losses/q_values"), 2),
            "final_eval_mean": round(final["return_mean"], 2),
        })  # fmt: skip
    print(json.dumps({"benchmark": "q_values", "label": args.label, "runs": rows}), flush=True)


if __name__ == "__main__":
    main()
