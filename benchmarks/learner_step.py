"""DQN learner cost per gradient step: a Python call per step vs one training phase of K
steps in one graph, with and without XLA; one JSON line. Samples/s against the number
of replicas (`learner.strategy: mirrored`): benchmarks/multi_device.py.

    .venv/bin/python benchmarks/learner_step.py
"""

from __future__ import annotations

import json
import time

import numpy as np

import rlplat  # noqa: F401  (environment set-up before TensorFlow)
from rlplat import agents, config, envs
from rlplat.experience.data import Transitions

BATCH, K = 64, 128


def batch(rng: np.random.Generator, k: int) -> Transitions:
    return Transitions(
        rng.normal(size=(k, BATCH, 4)).astype(np.float32), rng.integers(0, 2, (k, BATCH)),
        np.ones((k, BATCH), np.float32), rng.normal(size=(k, BATCH, 4)).astype(np.float32),
        np.full((k, BATCH), 0.99, np.float32),
    )  # fmt: skip


def ms_per_update(jit: bool, k: int, calls: int) -> float:
    cfg = config.load("experiments/cartpole_dqn.yaml", [f"agent.jit_compile={str(jit).lower()}"])
    agent = agents.build(cfg.agent, envs.spaces(cfg.env))
    b = batch(np.random.default_rng(0), k)
    agent.train(b)  # trace / compile
    t0 = time.perf_counter()
    for _ in range(calls):
        agent.train(b)
    return (time.perf_counter() - t0) / (calls * k) * 1e3


def main() -> None:
    out = {
        "benchmark": "learner_step",
        "network": "cartpole_dqn.yaml [256, 256]",
        "batch": BATCH,
        "ms_per_update_one_call_per_step": round(ms_per_update(False, 1, 300), 3),
        "ms_per_update_phase_of_128": round(ms_per_update(False, K, 5), 3),
        "ms_per_update_phase_of_128_xla": round(ms_per_update(True, K, 5), 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
