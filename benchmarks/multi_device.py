"""Learner samples/s against the number of replicas (`learner.strategy: mirrored`), for a
DQN training phase and a PPO update; one JSON line.

On a CPU the replicas are logical CPUs carved out of the same cores (TensorFlow's
`set_logical_device_configuration`), so they share the cores and add all-reduce work: no
speed-up is expected, only the cost of the strategy. On a machine with N GPUs run it with
`--gpus` to measure real replicas:

    .venv/bin/python benchmarks/multi_device.py [--replicas 1 2] [--gpus] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import rlplat  # noqa: F401  (environment set-up before TensorFlow)

BATCH, K, CALLS = 256, 32, 5


def devices(n: int, gpus: bool) -> tuple[str, ...]:
    return tuple(f"/{'GPU' if gpus else 'CPU'}:{i}" for i in range(n))


def samples_per_s(agent_type: str, devs: tuple[str, ...]) -> float:
    import gymnasium as gym

    from rlplat import agents
    from rlplat.agents.configs import DQNConfig, PPOConfig
    from rlplat.envs import EnvSpaces
    from rlplat.experience.data import Transitions
    from rlplat.learner import Placement, learner_scope

    spaces = EnvSpaces(gym.spaces.Box(-1, 1, (4,), np.float32), gym.spaces.Discrete(2))
    net = {"hidden": [256, 256]}
    if agent_type == "dqn":
        cfg = DQNConfig(type="dqn", network=net, jit_compile=False)
        shape = (K, BATCH)
    else:
        cfg = PPOConfig(type="ppo", network=net, epochs=1, minibatch_size=BATCH)
        shape = (K, BATCH)  # a rollout of K steps x BATCH envs: K minibatches of BATCH
    rng = np.random.default_rng(0)
    batch = Transitions(
        rng.normal(size=(*shape, 4)).astype(np.float32), rng.integers(0, 2, shape),
        rng.normal(size=shape).astype(np.float32), rng.normal(size=(*shape, 4)).astype(np.float32),
        np.full(shape, 0.99, np.float32), np.zeros(shape, bool),
    )  # fmt: skip
    placement = Placement(devs[0], "benchmark", devices=devs if len(devs) > 1 else ())
    with learner_scope(placement):
        agent = agents.build(cfg, spaces)
    agent.train(batch)  # trace
    t0 = time.perf_counter()
    for _ in range(CALLS):
        agent.train(batch)
    return CALLS * K * BATCH / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--gpus", action="store_true", help="replicas on GPUs, not CPUs")
    parser.add_argument("--out", help="also write the JSON line to this file")
    args = parser.parse_args()
    import tensorflow as tf

    if not args.gpus:
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration()] * max(args.replicas)
        tf.config.set_logical_device_configuration(cpu, logical)
    out = {"benchmark": "multi_device", "device": "GPU" if args.gpus else "logical CPU",
           "network": "MLP [256, 256]", "global_batch": BATCH, "steps_per_call": K}  # fmt: skip
    for agent_type in ("dqn", "ppo"):
        for n in args.replicas:
            out[f"{agent_type}_samples_per_s_{n}_replicas"] = round(
                samples_per_s(agent_type, devices(n, args.gpus))
            )
    line = json.dumps(out)
    print(line)
    if args.out:
        Path(args.out).write_text(line + "\n")


if __name__ == "__main__":
    main()
