"""One `breakout_ppo` run's agent steps/s on this machine, alternating and overlapped; one
JSON line.

    .venv/bin/python benchmarks/atari_train_throughput.py --rounds 2 \
        --out benchmarks/results/atari_train_throughput.json

Trains experiments/breakout_ppo.yaml (CleanRL's ppo_atari settings: 8 envs x 128 steps, 4
epochs x 4 minibatches, Nature CNN) for --env-steps agent steps in this process, once as
shipped and once with `collect.overlap: true` (the next rollout collected on a thread while
the learner trains), alternating for --rounds rounds. No periodic evals; the rate is
rlplat's own `charts/SPS` (agent steps/s between two scalar logs), median over the run
after its first --skip logs (start-up and XLA compilation). The final eval is not timed.
Depends on the machine and its load (recorded).
"""

from __future__ import annotations

import argparse
import glob
import statistics
import tempfile
from pathlib import Path

from _machine import emit, machine  # benchmarks/ is sys.path[0] when run as a script

import rlplat  # noqa: F401  (environment set-up before TensorFlow)
from rlplat import config as config_mod
from rlplat.train import train

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "experiments" / "breakout_ppo.yaml"


def sps(run_dir: Path, skip: int) -> list[float]:
    import tensorflow as tf

    values = []
    for path in sorted(glob.glob(str(run_dir / "tb" / "*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            found = [v for v in event.summary.value if v.tag == "charts/SPS"]
            values += [float(tf.make_ndarray(v.tensor)) for v in found]
    return values[skip:]


def run(overlap: bool, env_steps: int, skip: int, root: Path) -> dict:
    overrides = [
        f"collect.overlap={str(overlap).lower()}", f"train.env_steps={env_steps}",
        "train.log_every=2048", f"eval.every_env_steps={10 * env_steps}",
        "env.max_episode_steps=4500", "export.when=never",
    ]  # fmt: skip
    cfg = config_mod.load(EXPERIMENT, overrides)
    run_dir = root / f"{'overlap' if overlap else 'alternating'}-{len(list(root.iterdir()))}"
    train(cfg, run_dir, show_progress=False)
    rates = sps(run_dir, skip)
    return {"overlap": overlap, "agent_steps_per_s": round(statistics.median(rates), 1),
            "logs": len(rates)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--env-steps", type=int, default=24_576, help="agent steps per run")
    ap.add_argument("--skip", type=int, default=2, help="first scalar logs left out")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON line here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rlplat-atari-train-") as tmp:
        runs = [run(overlap, args.env_steps, args.skip, Path(tmp))
                for _ in range(args.rounds) for overlap in (False, True)]  # fmt: skip
    median = {
        mode: statistics.median(r["agent_steps_per_s"] for r in runs if r["overlap"] == flag)
        for mode, flag in (("alternating", False), ("overlap", True))
    }
    emit({
        "benchmark": "atari_train_throughput", "experiment": "breakout_ppo",
        "env_steps_per_run": args.env_steps, "rounds": args.rounds, "runs": runs,
        "median_agent_steps_per_s": median,
        "overlap_over_alternating": round(median["overlap"] / median["alternating"], 3),
        **machine(),
    }, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
