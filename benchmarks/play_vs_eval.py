"""`rlplat play` through `rlplat serve` against `rlplat eval` of the same exported version:
the same seeded episodes, acted by the server (REST :predict per step) and in-process
(the SavedModel); one JSON line with both results and how many episodes match exactly.

    .venv/bin/python benchmarks/play_vs_eval.py --model-base-path models --model lunarlander_pg
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _server import RLPLAT, latest_version, running_server


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run([RLPLAT, *args], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: rlplat {' '.join(args)}: {out.stderr[-1500:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-base-path", type=Path, default=Path("models"))
    ap.add_argument("--model", default="lunarlander_pg")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    version_dir, meta = latest_version(args.model_base_path, args.model)
    out = Path(tempfile.mkdtemp(prefix="rlplat-play-vs-eval-"))
    with running_server(args.model_base_path, args.model) as url:
        common = ["--episodes", str(args.episodes), "--seed", str(args.seed)]
        play_s = run(["play", "--server", url, "--model", args.model, "--env",
                      meta["env"]["id"], "--out", str(out / "play"), *common])  # fmt: skip
        eval_s = run(["eval", str(version_dir), "--out", str(out / "eval"),
                      *common])  # fmt: skip
    play = json.loads((out / "play" / "play.json").read_text())
    ev = json.loads((out / "eval" / "eval.json").read_text())
    same = sum(abs(a - b) < 1e-6 for a, b in zip(play["returns"], ev["returns"], strict=True))
    print(json.dumps({
        "benchmark": "play_vs_eval",
        "model": f"{args.model} v{version_dir.name}",
        "env": meta["env"]["id"],
        "episodes": args.episodes,
        "seed": args.seed,
        "play": {"return_mean": round(play["return_mean"], 2),
                 "return_std": round(play["return_std"], 2), "wall_s": round(play_s, 1)},
        "eval": {"return_mean": round(ev["return_mean"], 2),
                 "return_std": round(ev["return_std"], 2), "wall_s": round(eval_s, 1)},
        "episodes_with_identical_return": same,
        "mean_difference": round(play["return_mean"] - ev["return_mean"], 4),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
