"""Where a collector's time goes, per env step, against the raw env; one JSON line.

    .venv/bin/python benchmarks/collector_profile.py \
        --out benchmarks/results/collector_profile.json

The collector of benchmarks/collect_throughput.py (experiments/lunarlander_dqn.yaml's
[256, 256] dueling Q policy at epsilon 1.0, 8 envs, 64-step fragments, 3-step returns,
Ape-X priorities), in this process:

1. Timed parts, microseconds per env step, median over --rounds rounds, each with a raw
   rate beside it: the raw env (one `gym.make` env, random int actions, as
   collect_throughput's raw rate), the vector env's step, the policy's `act`, the rest of
   the rollout loop (bookkeeping), the n-step fold and the priorities.
2. cProfile over --seconds of `collect`: the functions with the most own time, as shares.
3. One Ray collector actor driven as training drives it (at most two requests queued):
   its rate, its rate while it collects (the fragments' `collect_s`), and Ray's time
   between two calls.

Depends on the machine and its load (recorded).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

from _machine import emit, machine  # benchmarks/ is sys.path[0] when run as a script
from collect_throughput import EXPERIMENT, in_process_collector, raw_rate

import rlplat  # noqa: F401  (environment set-up before TensorFlow)
from rlplat import agents, cluster, envs
from rlplat import config as config_mod
from rlplat.experience.collect import Collector, ray_collectors

ENVS, FRAGMENT = 8, 64


class Timer:
    """Wraps a callable and adds up the seconds spent in it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0


def timed_parts(c: Collector, seconds: float) -> dict[str, float]:
    """Microseconds per env step of each part of `collect` (the same steps `collect` runs)."""
    step, act = Timer(c._env.step), Timer(c.policy.act)
    nstep, prio = Timer(c._nstep.add), Timer(c.policy.priorities)
    c._env.step, c.policy.act, c._nstep.add, c.policy.priorities = step, act, nstep, prio
    try:
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += c.collect(FRAGMENT).env_steps
        total = time.perf_counter() - t0
    finally:
        for name in ("_env", "policy", "_nstep"):
            target = getattr(c, name)
            for attr in ("step", "act", "add", "priorities"):
                target.__dict__.pop(attr, None)
    us = {
        "vector_env_step": step.seconds, "policy_act": act.seconds, "nstep": nstep.seconds,
        "priorities": prio.seconds,
    }  # fmt: skip
    us["rollout_bookkeeping"] = total - sum(us.values())
    us["collect_total"] = total
    return {k: v / n * 1e6 for k, v in us.items()}


def profile(c: Collector, seconds: float, top: int = 12) -> list[dict]:
    """cProfile's view: the functions with the most own time, as shares of the total."""
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    while time.perf_counter() - t0 < seconds:
        c.collect(FRAGMENT)
    prof.disable()
    stats = pstats.Stats(prof).stats  # {(file, line, name): (cc, nc, tottime, cumtime, _)}
    total = sum(v[2] for v in stats.values())
    rows = sorted(stats.items(), key=lambda kv: -kv[1][2])[:top]
    return [{
        "function": f"{Path(f).name}:{line}({name})", "calls": v[1],
        "own_share": round(v[2] / total, 4), "cumulative_share": round(v[3] / total, 4),
    } for (f, line, name), v in rows]  # fmt: skip


def ray_actor(seconds: float) -> dict[str, float]:
    """One Ray collector kept busy as training keeps it (two requests queued)."""
    cfg = config_mod.load(EXPERIMENT, ["collect.num_actors=1", f"collect.envs_per_actor={ENVS}"])
    agent = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    cluster.start(None, 1)
    try:
        pool = ray_collectors(cfg, agent, seed=0)
        pool.broadcast(agent.get_weights(), 0)
        pool.launch(0, FRAGMENT, 0, ENVS)
        while not pool.wait(timeout=1.0):  # the actor's start-up, outside the clock
            pass
        fragments, t0 = [], time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for i in pool.idle(2):
                pool.launch(i, FRAGMENT, 0, ENVS)
            fragments += pool.wait(timeout=1.0)
        wall = time.perf_counter() - t0
        while pool.pending:
            pool.wait(timeout=1.0)
        pool.close()
    finally:
        cluster.stop()
    spans = sorted(f.info["collect_s"] for f in fragments)
    gaps = [b[0] - (a[0] + a[1]) for a, b in zip(spans, spans[1:], strict=False)]
    steps = sum(f.env_steps for f in fragments)
    return {
        "env_steps_per_s": steps / wall,
        "env_steps_per_s_while_collecting": steps / sum(s[1] for s in spans),
        "ms_between_calls_median": statistics.median(gaps) * 1e3,
        "collecting_share": sum(s[1] for s in spans) / (spans[-1][0] + spans[-1][1] - spans[0][0]),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=4.0, help="per round and measurement")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON line here")
    args = ap.parse_args()
    c = in_process_collector(ENVS, FRAGMENT)
    rounds = []
    for _ in range(args.rounds):
        raw_us = 1e6 / raw_rate("LunarLander-v3", args.seconds / 2)
        rounds.append({"raw_env_step": raw_us, **timed_parts(c, args.seconds)})
    parts = {k: round(statistics.median(r[k] for r in rounds), 2) for k in rounds[0]}
    ratios = [r["raw_env_step"] / r["collect_total"] for r in rounds]
    emit({
        "benchmark": "collector_profile", "env": "LunarLander-v3", "envs": ENVS,
        "fragment_vector_steps": FRAGMENT, "rounds": args.rounds,
        "us_per_env_step_median": parts,
        "in_process_ratio_to_raw_median": round(statistics.median(ratios), 3),
        "cprofile_top_own_time": profile(c, args.seconds),
        "ray_actor": {k: round(v, 3) for k, v in ray_actor(3 * args.seconds).items()},
        **machine(),
    }, args.out)  # fmt: skip
    c.close()


if __name__ == "__main__":
    sys.exit(main())
