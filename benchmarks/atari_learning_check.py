"""A learning check on pixels that fits a 2-core CPU: PPO on Breakout, several seeds.

    .venv/bin/python benchmarks/atari_learning_check.py --seeds 0 1 2 --env-steps 500000 \\
        --runs-root /tmp/atari-check --plot docs/breakout_ppo_cpu_check.png

Trains experiments/breakout_ppo.yaml (CleanRL's ppo_atari settings) for --env-steps agent
steps per seed, with a deterministic eval of --episodes full games every --eval-every steps,
and plays a uniformly random policy on the same eval envs and episode seeds as the baseline.
Prints one JSON line (per seed: the eval curve, the final eval, wall time; the random
policy's score) and draws the curve (mean over seeds, min-max band) beside the published
points. A seed whose run directory holds a final eval (eval_final.json) is read, not
retrained (`--report-only` never trains): the seeds can run as separate processes at the same
time (`--seeds 0`, `--seeds 1`, ... with one --runs-root), then one call with all the seeds
and `--report-only` prints the JSON and draws the plot.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np

import rlplat  # noqa: F401  (environment set-up before TensorFlow)
from rlplat import config as config_mod
from rlplat.evaluate import run_episodes

# The published curves' values at about the same number of agent steps (both are training
# returns of full games under the stochastic policy, a mean over runs; this check's curve is
# the deterministic policy's eval):
# - OpenAI Baselines' ppo2 (the settings CleanRL's ppo_atari copies) on BreakoutNoFrameskip-v4,
#   mean of 6 runs, read off the learning-curve plot of benchmarks_atari10M.htm in
#   github.com/openai/baselines (the page tabulates only 10M-step figures);
# - the PPO baseline ("ppo_fixhp", 5 seeds, sticky actions) in DreamerV3's published scores,
#   scores/atari57-ppo_fixhp.json.gz in github.com/danijar/dreamerv3, at 2M frames.
PUBLISHED = [
    {
        "source": "OpenAI Baselines ppo2, Atari 10M benchmark plot",
        "env_steps": 505_000,
        "return": 13.4,
    },
    {
        "source": "DreamerV3 scores, ppo_fixhp (sticky actions)",
        "env_steps": 500_000,
        "return": 12.8,
    },
]


def overrides(args: argparse.Namespace, seed: int, run_dir: Path) -> list[str]:
    return [
        f"seed={seed}",
        f"train.env_steps={args.env_steps}",
        f"eval.every_env_steps={args.eval_every}",
        f"eval.episodes={args.episodes}",
        f"eval.final_episodes={max(args.episodes, 20)}",
        f"env.max_episode_steps={args.max_episode_steps}",
        f"checkpoint.every_env_steps={args.eval_every * 2}",
        f"export.model_base_path={run_dir / 'models'}",
    ]


def run_seed(args: argparse.Namespace, seed: int) -> dict:
    """Train one seed (unless its run dir holds a final eval) and read its figures back."""
    from rlplat.train import train

    run_dir = args.runs_root / f"seed{seed}"
    done = run_dir / "check.json"
    if done.exists():
        return json.loads(done.read_text())
    cfg = config_mod.load(args.experiment, overrides(args, seed, run_dir))
    if not (run_dir / "eval_final.json").exists():
        if args.report_only:
            return {}
        train(cfg, run_dir, show_progress=False)
    out = read_run(run_dir, seed)
    out["random"] = random_baseline(cfg, args.episodes, seed)
    done.write_text(json.dumps(out))
    return out


def read_run(run_dir: Path, seed: int) -> dict:
    """A finished run's eval curve (evals.jsonl) and final eval (eval_final.json)."""
    evals = [json.loads(line) for line in (run_dir / "evals.jsonl").read_text().splitlines()]
    final = json.loads((run_dir / "eval_final.json").read_text())
    curve = [
        {"env_steps": e["env_steps"], "return_mean": round(e["return_mean"], 2),
         "return_std": round(e["return_std"], 2), "final": e["final"]}
        for e in evals
    ]  # fmt: skip
    wall_s = evals[-1]["wall_s"]  # the final eval's end: training plus the periodic evals
    return {
        "seed": seed,
        "curve": curve,
        "final_eval_mean": round(final["return_mean"], 2),
        "final_eval_std": round(final["return_std"], 2),
        "final_eval_episodes": final["episodes"],
        "env_steps": final["env_steps"],
        "wall_s": wall_s,
        "env_steps_per_s": round(final["env_steps"] / wall_s, 1),
    }


def random_baseline(cfg: config_mod.ExperimentConfig, episodes: int, seed: int) -> dict:
    """A uniformly random policy on the eval envs and episode seeds the agent's evals use."""
    from rlplat import envs

    n = envs.make(cfg.env).action_space.n
    rng = np.random.default_rng(seed)
    result = run_episodes(lambda obs: rng.integers(n, size=len(obs)), cfg.env, episodes, seed)
    return {"return_mean": round(result.mean, 2), "return_std": round(result.std, 2)}


def plot(runs: list[dict], path: Path, random_mean: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [{p["env_steps"]: p["return_mean"] for p in r["curve"]} for r in runs]
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    table = np.array([[c[s] for s in steps] for c in curves])
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.plot(steps, table.mean(axis=0), marker="o", label=f"rlplat PPO, mean of {len(runs)} seeds")
    ax.fill_between(steps, table.min(axis=0), table.max(axis=0), alpha=0.25, label="seeds' min-max")
    ax.axhline(random_mean, color="gray", ls="--", label=f"random policy ({random_mean:.1f})")
    for anchor, marker in zip(PUBLISHED, ("r*", "m^"), strict=True):
        ax.plot(
            [anchor["env_steps"]],
            [anchor["return"]],
            marker,
            ms=11,
            label=f"{anchor['source']}: {anchor['return']}",
        )
    ax.set_xlabel("agent steps (4 frames each)")
    ax.set_ylabel("game score, deterministic policy, 20 full games")
    ax.set_title("Breakout from pixels, PPO, 2-core CPU")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiment", default="experiments/breakout_ppo.yaml")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--env-steps", type=int, default=500_000)
    ap.add_argument("--eval-every", type=int, default=100_000)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument(
        "--max-episode-steps",
        type=int,
        default=4_500,
        help="agent steps per game (18,000 frames = 5 min of play), eval and train",
    )
    ap.add_argument("--runs-root", type=Path, default=Path("/tmp/atari-check"))
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args()
    runs = [r for r in (run_seed(args, s) for s in args.seeds) if r]
    if not runs:
        raise SystemExit("no finished seed under " + str(args.runs_root))
    random_mean = statistics.mean(r["random"]["return_mean"] for r in runs)
    finals = [r["final_eval_mean"] for r in runs]
    if args.plot is not None:
        plot(runs, args.plot, random_mean)
    print(
        json.dumps(
            {
                "benchmark": "atari_learning_check",
                "experiment": Path(args.experiment).stem,
                "env_steps_per_seed": args.env_steps,
                "max_episode_steps": args.max_episode_steps,
                "seeds": [r["seed"] for r in runs],
                "final_eval_mean_over_seeds": round(statistics.mean(finals), 2),
                "final_eval_min_seed": min(finals),
                "random_policy_mean": round(random_mean, 2),
                "published": PUBLISHED,
                "runs": runs,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
