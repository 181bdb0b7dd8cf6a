"""Agent steps/s of `rlplat play` on Pong through `rlplat serve`: gRPC (the observation as
uint8 `tensor_content` bytes, play's default for pixels) against REST (JSON), next to the
SavedModel called in-process and the env alone (a constant action); one JSON line.

    .venv/bin/python benchmarks/play_pixels.py --steps 500 --rounds 3

The model is an untrained Nature-CNN DQN for ALE/Pong-v5 (speed does not depend on the
weights), exported as a run exports it. Each measurement is play's own episode loop
(rlplat.evaluate.run_episodes, one episode at a time, capped at --steps agent steps, eval
seeds), with the local Atari preprocessing included; the four are interleaved over
--rounds rounds (this machine's speed drifts) and every episode's actions are the policy's.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
from _server import running_server
from serve_pixels import ENV, export_model

import rlplat  # noqa: F401  (environment set-up before TensorFlow)


def steps_per_second(act, env_cfg, rounds_done: int) -> tuple[float, int]:
    from rlplat.evaluate import run_episodes

    t = time.perf_counter()
    result = run_episodes(act, env_cfg, episodes=1, seed=rounds_done)
    steps = int(result.lengths.sum())
    return steps / (time.perf_counter() - t), steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=500, help="agent steps per episode")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    from rlplat.config import EnvConfig
    from rlplat.play import grpc_policy, remote_policy
    from rlplat.policies import load_policy

    env_cfg = EnvConfig(**ENV, max_episode_steps=args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        version = export_model(Path(tmp))
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            gport = s.getsockname()[1]
        with running_server(Path(tmp), "pixels", "--grpc-port", str(gport)) as url:
            policies = {
                "grpc_tensor_content": grpc_policy(f"127.0.0.1:{gport}", "pixels", env_cfg).act,
                "rest_json": remote_policy(url, "pixels", env_cfg).act,
                "in_process": load_policy(version).act,
                "env_only": lambda obs: np.zeros(len(obs), np.int64),
            }
            warm = np.zeros((1, 84, 84, 4), np.uint8)
            for act in policies.values():  # first calls (connections, TF functions) untimed
                for _ in range(5):
                    act(warm)
            rates: dict[str, list[float]] = {k: [] for k in policies}
            steps: dict[str, int] = dict.fromkeys(policies, 0)
            for r in range(args.rounds):
                for name, act in policies.items():
                    rate, n = steps_per_second(act, env_cfg, r)
                    rates[name].append(rate)
                    steps[name] += n
    print(json.dumps({
        "benchmark": "play_pixels", "env": "ALE/Pong-v5 (atari preprocessing, eval env)",
        "unit": "agent steps/s, median over rounds", "rounds": args.rounds,
        **{k: {"steps_per_s": round(float(np.median(v)), 1), "steps": steps[k]}
           for k, v in rates.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
