"""The Nature CNN on this CPU, [84, 84, 4] uint8 observations: learner samples/s for DQN
(batch 32, training phases of 16 steps, with and without XLA) and PPO (minibatch 256,
4 epochs over an 8 x 128 rollout), and the collectors' TF acting policy
(agents.tf_actors.TFNatureCNN): one forward pass for a batch of 8. One JSON line; the
load average says how busy the machine was.

    .venv/bin/python benchmarks/cnn_learner.py
"""

from __future__ import annotations

import json
import os
import time

import gymnasium as gym
import numpy as np

import rlplat  # noqa: F401  (environment set-up before TensorFlow)
from rlplat import agents
from rlplat.agents.configs import DQNConfig, PPOConfig
from rlplat.envs import EnvSpaces
from rlplat.experience.data import Transitions

SPACES = EnvSpaces(gym.spaces.Box(0, 255, (84, 84, 4), np.uint8), gym.spaces.Discrete(6))
DQN_BATCH, DQN_K, DQN_CALLS = 32, 16, 3
PPO_STEPS, PPO_ENVS, PPO_MINIBATCH, PPO_EPOCHS, PPO_CALLS = 128, 8, 256, 4, 2


def pixels(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, (*shape, 84, 84, 4), dtype=np.uint8)


def transitions(rng: np.random.Generator, a: int, b: int) -> Transitions:
    return Transitions(
        pixels(rng, a, b), rng.integers(0, 6, (a, b)), rng.normal(size=(a, b)).astype(np.float32),
        pixels(rng, a, b), np.full((a, b), 0.99, np.float32), last=np.zeros((a, b), bool),
    )  # fmt: skip


def timed(fn, calls: int) -> float:
    fn()  # trace / compile
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def dqn_samples_per_s(rng: np.random.Generator, jit: bool) -> dict[str, float]:
    cfg = DQNConfig(type="dqn", double=True, dueling=True, jit_compile=jit)
    agent = agents.build(cfg, SPACES)
    batch = transitions(rng, DQN_K, DQN_BATCH)
    seconds = timed(lambda: agent.train(batch), DQN_CALLS)
    xla = "_xla" if jit else ""
    return {
        f"dqn_ms_per_update{xla}": round(seconds / DQN_K * 1e3, 1),
        f"dqn_samples_per_s{xla}": round(DQN_K * DQN_BATCH / seconds, 1),
    }


def ppo_samples_per_s(rng: np.random.Generator) -> dict[str, float]:
    cfg = PPOConfig(type="ppo", minibatch_size=PPO_MINIBATCH, epochs=PPO_EPOCHS)
    agent = agents.build(cfg, SPACES)
    rollout = transitions(rng, PPO_STEPS, PPO_ENVS)
    seconds = timed(lambda: agent.train(rollout), PPO_CALLS)
    n = PPO_STEPS * PPO_ENVS
    return {
        "ppo_s_per_rollout": round(seconds, 2),
        "ppo_samples_per_s": round(PPO_EPOCHS * n / seconds, 1),  # minibatch samples
        "ppo_agent_steps_per_s_learner_only": round(n / seconds, 1),
    }


def acting_ms(rng: np.random.Generator, calls: int = 200) -> float:
    agent = agents.build(DQNConfig(type="dqn"), SPACES)
    policy = agent.actor_policy()
    policy.set_weights(agent.get_weights())
    obs = pixels(rng, 8)
    return round(timed(lambda: policy.act(obs, explore=True), calls) * 1e3, 2)


def main() -> None:
    rng = np.random.default_rng(0)
    out = {
        "benchmark": "cnn_learner",
        "network": "nature_cnn (dueling DQN; PPO shared torso), uint8 [84, 84, 4], 6 actions",
        "cpus": os.cpu_count(),
        "load_avg_1m_before": round(os.getloadavg()[0], 2),
        "dqn_batch": DQN_BATCH,
        **dqn_samples_per_s(rng, jit=False),
        **dqn_samples_per_s(rng, jit=True),
        "ppo_minibatch": PPO_MINIBATCH,
        "ppo_rollout": f"{PPO_ENVS} envs x {PPO_STEPS} steps, {PPO_EPOCHS} epochs",
        **ppo_samples_per_s(rng),
        "tf_acting_ms_batch_8": acting_ms(rng),
        "load_avg_1m_after": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
