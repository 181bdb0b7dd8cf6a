"""Agent steps/s of the `env.atari` backends with random actions (frames/s = frame_skip x).

    .venv/bin/python benchmarks/atari_env_throughput.py --seconds 3

For each game: the "python" backend (gymnasium's AtariPreprocessing + FrameStackObservation)
as one env and as a vector of 8 (envs.make_vec: one env after another in this process),
and the "vector" backend (ale-py's C++ AtariVectorEnv) with 8 envs on 2 threads. All are
training envs (life-loss terminals, clipped rewards) built through envs.make_vec, so the
figures include rlplat's own adapter (channels-last copy, same-step autoreset). Each
configuration is timed for --seconds after one warm-up second. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np

from rlplat import envs
from rlplat.config_base import EnvConfig

GAMES = ("SpaceInvaders", "Breakout", "Pong")
SETUPS = {  # name: (backend, envs, threads)
    "python_1": ("python", 1, 0),
    "python_8": ("python", 8, 0),
    "vector_8x2threads": ("vector", 8, 2),
}


def rate(game: str, backend: str, num_envs: int, threads: int, seconds: float) -> float:
    """Agent steps/s (all envs together) of random actions."""
    cfg = EnvConfig(id=f"ALE/{game}-v5", atari={"backend": backend, "threads": threads})
    vec = envs.make_vec(cfg, num_envs, seed=0, training=True)
    n = int(vec.single_action_space.n)
    rng = np.random.default_rng(0)
    try:
        warm_until = time.perf_counter() + 1.0
        while time.perf_counter() < warm_until:
            vec.step(rng.integers(0, n, num_envs))
        steps, t0 = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            vec.step(rng.integers(0, n, num_envs))
            steps += num_envs
        return steps / elapsed
    finally:
        vec.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--games", nargs="+", default=list(GAMES))
    args = parser.parse_args()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for game in args.games:
        results[game] = {}
        for name, (backend, num_envs, threads) in SETUPS.items():
            steps = rate(game, backend, num_envs, threads, args.seconds)
            results[game][name] = {
                "agent_steps_per_s": round(steps),
                "frames_per_s": round(4 * steps),
            }
    print(
        json.dumps(
            {
                "benchmark": "atari_env_throughput",
                "seconds_each": args.seconds,
                "cpus": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
                "load_avg_1min": round(os.getloadavg()[0], 2),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
