"""Ray collector throughput against the raw env rate, and 0 vs N actors time-to-threshold.

    .venv/bin/python benchmarks/collect_throughput.py --actors 2 --train-seeds 0

1. Raw rate: one LunarLander-v3 env in this process, random actions, no policy.
2. Collectors: N Ray actors (each a vector env + the DQN actor policy of
   experiments/lunarlander_dqn.yaml, [256, 256] dueling, in the loop, with 3-step
   assembly and Ape-X priorities), kept busy for --seconds; env steps/s of all of them
   together. Weights are re-broadcast every second, as training does. The policy acts at
   the schedule's first epsilon (1.0): random actions as in the raw rate, so the figure
   measures collection, not how an untrained greedy lander changes the physics' cost.
   Raw and collector rates alternate for --rounds rounds; the ratio is per round, and the
   median is reported. Goal: >= 0.7 x cores x raw rate.
3. With --train-seeds: lunarlander_dqn.yaml trained with num_actors 0 and N, same run,
   time (wall, Ray start included) to the first 20-episode eval >= 200.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import rlplat  # noqa: F401  (environment set-up before TensorFlow)

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENT = ROOT / "experiments" / "lunarlander_dqn.yaml"


def raw_rate(env_id: str, seconds: float) -> float:
    import gymnasium as gym

    env = gym.make(env_id)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for a in rng.integers(0, env.action_space.n, 1000):
            _, _, term, trunc, _ = env.step(int(a))
            if term or trunc:
                env.reset()
        n += 1000
    return n / (time.perf_counter() - t0)


def collector_rates(
    actors: int, envs_per_actor: int, fragment: int, seconds: float, depth: int, rounds: int
) -> list[dict]:
    """Rounds of (raw rate, Ray collectors' rate) measured back to back.

    This shared 2-core machine drifts by 20-30% within minutes, so each round's ratio
    compares numbers taken seconds apart; the raw rate is measured while the collectors
    sit idle.
    """
    from rlplat import agents, cluster, envs
    from rlplat import config as config_mod
    from rlplat.experience.collect import ray_collectors

    cfg = config_mod.load(
        EXPERIMENT,
        [f"collect.num_actors={actors}", f"collect.envs_per_actor={envs_per_actor}"],
    )
    agent = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    cluster.start(None, actors)
    try:
        pool = ray_collectors(cfg, agent, seed=0)
        state = {"version": 0, "steps": 0}
        pool.broadcast(agent.get_weights(), 0)
        _drive(pool, agent, state, fragment, envs_per_actor, depth, 2.0)  # start-up
        out = []
        for _ in range(rounds):
            raw = raw_rate("LunarLander-v3", 3.0)
            rate = _drive(pool, agent, state, fragment, envs_per_actor, depth, seconds)
            out.append({
                "raw_env_steps_per_s": round(raw, 1),
                "collectors_env_steps_per_s": round(rate, 1),
                "ratio": round(rate / ((os.cpu_count() or 1) * raw), 3),
            })  # fmt: skip
        pool.close()
    finally:
        cluster.stop()
    return out


def _drive(pool, agent, state, fragment, envs_per_actor, depth, seconds) -> float:
    """Keep every actor busy for `seconds` (weights re-broadcast each second, as in
    training); env steps/s of the fragments that came back. Drains before returning."""
    counted, t0, last_sync = 0, time.perf_counter(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for i in pool.idle(depth):
            # env_steps 0: the schedule's first epsilon (1.0), so actions are uniform
            # random as in the raw rate, but chosen by the policy (Q forward pass and all).
            pool.launch(i, fragment, 0, envs_per_actor)
        for f in pool.wait(timeout=1.0):
            state["steps"] += f.env_steps
            counted += f.env_steps
        if time.perf_counter() - last_sync >= 1.0:
            state["version"] += 1
            pool.broadcast(agent.get_weights(), state["version"])
            last_sync = time.perf_counter()
    elapsed = time.perf_counter() - t0
    while pool.pending:  # fragments still running overlap the next measurement: drop them
        pool.wait(timeout=1.0)
    return counted / elapsed


def in_process_collector(envs_per_actor: int, fragment: int):
    """The collectors' collector, in this process (warmed up by one fragment)."""
    from rlplat import agents, envs
    from rlplat import config as config_mod
    from rlplat.experience.collect import Collector
    from rlplat.experience.replay import RowSpec

    cfg = config_mod.load(EXPERIMENT)
    agent = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    policy = agent.actor_policy(0, 1, seed=0)
    policy.set_weights(agent.get_weights())
    c = Collector(cfg.env, envs_per_actor, 0, policy, RowSpec(3, 0.99, priorities=True))
    c.collect(fragment)
    return c


def in_process_rate(envs_per_actor: int, fragment: int, seconds: float) -> float:
    """One collector in this process with the same policy: what one core gives."""
    c = in_process_collector(envs_per_actor, fragment)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += c.collect(fragment, 0).env_steps
    return n / (time.perf_counter() - t0)


def time_to_threshold(actors: int, seed: int, extra: list[str]) -> dict:
    from train_to_threshold import figures  # benchmarks/ is on sys.path when run as a script

    from rlplat import config as config_mod
    from rlplat.train import train

    root = Path(tempfile.mkdtemp(prefix="rlplat-collect-"))
    overrides = [f"collect.num_actors={actors}", f"seed={seed}",
                 f"export.model_base_path={root / 'models'}"]  # fmt: skip
    if actors:
        overrides += extra
    cfg = config_mod.load(EXPERIMENT, overrides)
    t0 = time.perf_counter()
    s = train(cfg, root / "run", show_progress=False)
    return {
        "num_actors": actors,
        "seed": seed,
        "overrides": overrides[:1] + (extra if actors else []),
        **figures(s, time.perf_counter() - t0),
        "actor_restarts": s.actor_restarts,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--envs-per-actor", type=int, default=8)
    ap.add_argument("--fragment", type=int, default=64, help="vector steps per fragment")
    ap.add_argument("--seconds", type=float, default=6.0, help="per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--depth", type=int, default=2, help="requests queued per actor")
    ap.add_argument("--train-seeds", type=int, nargs="*", default=[])
    ap.add_argument(
        "--train-set", action="append", default=[],
        help="extra overrides for the num_actors > 0 training runs",
    )  # fmt: skip
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    one = in_process_rate(args.envs_per_actor, args.fragment, 5.0)
    rounds = collector_rates(
        args.actors, args.envs_per_actor, args.fragment, args.seconds, args.depth, args.rounds
    )
    out = {
        "benchmark": "collect_throughput",
        "env": "LunarLander-v3",
        "cores": cores,
        "actors": args.actors,
        "envs_per_actor": args.envs_per_actor,
        "fragment_vector_steps": args.fragment,
        "requests_per_actor": args.depth,
        "in_process_collector_env_steps_per_s": round(one, 1),
        "rounds": rounds,
        "median_ratio_to_cores_x_raw": statistics.median(r["ratio"] for r in rounds),
        "goal_ratio": 0.7,
    }
    runs = []
    for seed in args.train_seeds:
        for actors in (0, args.actors):
            runs.append(time_to_threshold(actors, seed, args.train_set))
    if runs:
        out["lunarlander_dqn_time_to_200"] = runs
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
