"""Replay throughput at capacity 1,000,000 LunarLander transitions; one JSON line.

    .venv/bin/python benchmarks/replay_throughput.py

Measures sample(256) + update_priorities(256) pairs per second for prioritized replay
(full buffer), the two halves separately, uniform sample(256) for scale, and memory.
"""

from __future__ import annotations

import json
import time

import numpy as np

from rlplat.experience.data import Fragment, Transitions
from rlplat.experience.replay import LocalReplay
from rlplat.experience.sampler import PrioritizedSampler, UniformSampler
from rlplat.experience.storage import TransitionStorage

CAPACITY, OBS, BATCH = 1_000_000, 8, 256


def fill(replay: LocalReplay, rng: np.random.Generator) -> float:
    t0 = time.perf_counter()
    chunk = 10_000
    for _ in range(CAPACITY // chunk):
        obs = rng.normal(size=(chunk, OBS)).astype(np.float32)
        t = Transitions(obs, rng.integers(0, 4, chunk), rng.normal(size=chunk).astype(np.float32),
                        obs, np.ones(chunk, np.float32))  # fmt: skip
        replay.add(Fragment(t))
    return time.perf_counter() - t0


def rate(fn, seconds: float = 3.0) -> float:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    rng = np.random.default_rng(0)
    per = LocalReplay(TransitionStorage(CAPACITY, (OBS,)), PrioritizedSampler(CAPACITY, seed=0))
    fill_s = fill(per, rng)
    per.update_priorities(np.arange(CAPACITY), rng.exponential(size=CAPACITY))
    td = rng.exponential(size=BATCH)

    def pair():
        s = per.sample(BATCH)
        per.update_priorities(s.indices, td)

    last = per.sample(BATCH)
    sample_rate = rate(lambda: per.sample(BATCH))
    update_rate = rate(lambda: per.update_priorities(last.indices, td))
    pair_rate = rate(pair)
    uniform = LocalReplay(TransitionStorage(CAPACITY, (OBS,)), UniformSampler(CAPACITY, 0, True))
    fill(uniform, rng)
    uniform_rate = rate(lambda: uniform.sample(BATCH))
    tree = per.sampler._tree
    mem = sum(a.nbytes for a in per.storage._data.values()) + tree._sum.nbytes + tree._min.nbytes
    print(json.dumps({
        "benchmark": "replay_throughput",
        "capacity": CAPACITY,
        "obs_dim": OBS,
        "batch": BATCH,
        "per_sample_plus_update_per_s": round(pair_rate, 1),
        "per_sample_per_s": round(sample_rate, 1),
        "per_update_per_s": round(update_rate, 1),
        "uniform_sample_per_s": round(uniform_rate, 1),
        "per_fill_1m_s": round(fill_s, 2),
        "per_memory_mb": round(mem / 2**20, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
