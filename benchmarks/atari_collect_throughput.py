"""Atari collection on this CPU: raw ALE rate vs one collector vs 1 and 2 Ray collectors.

    .venv/bin/python benchmarks/atari_collect_throughput.py --seconds 4

For each game, on the same training envs (envs.make_vec with training=True, as
rlplat/experience/collect.py builds them; one backend, --envs per collector):
  raw        random actions, no policy (atari_env_throughput.rate).
  collector  one rlplat.experience.collect.Collector in this process acting with the actor policy of
             experiments/spaceinvaders_dqn.yaml (dueling Nature-CNN DQN, epsilon-greedy at
             the schedule's mid-run value) or of experiments/pong_ppo.yaml (Nature-CNN PPO,
             sampled actions), untrained weights; no learner. `policy_ms` is the time in
             the policy's `act` (the TF forward pass on the collector), `rest_ms` the rest:
             env.step and the collector's own bookkeeping, both per vector step.
  ray_N      N Ray collector actors (rlplat.experience.sources.RaySource, the source `rlplat train`
             uses, on an embedded local Ray started by rlplat.cluster), each relaunched as soon
             as its fragment is back, the driver draining fragments and re-broadcasting the
             weights every second; no learner, so this is the collection ceiling. Fragments
             are the experiment's `collect.rollout_length` vector steps. Per collector: its
             env steps between its first and last fragment in the window, over that time.
Then, for central (SEED RL style) inference: the collectors' forward pass at batch 8, 16,
32 in one process, and a Ray actor call carrying one [8, 84, 84, 4] uint8 batch (there and
back, and there with 8 actions back). Prints one JSON line, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from atari_env_throughput import rate as raw_rate  # benchmarks/ is sys.path[0] as a script

import rlplat  # noqa: F401  (environment set-up before TensorFlow)
from rlplat.agents.actors import ActorPolicy, Weights
from rlplat.config import EnvConfig, ExperimentConfig
from rlplat.experience.data import Transitions

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = {
    "dqn": ROOT / "experiments" / "spaceinvaders_dqn.yaml",
    "ppo": ROOT / "experiments" / "pong_ppo.yaml",
}
OBS_SHAPE = (84, 84, 4)


class TimedPolicy(ActorPolicy):
    """An actor policy with the seconds spent in `act` counted (the forward pass)."""

    def __init__(self, policy: ActorPolicy):
        self.policy, self.seconds = policy, 0.0

    def act(self, observations: np.ndarray, explore: bool) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.policy.act(observations, explore)
        self.seconds += time.perf_counter() - t0
        return out

    def set_weights(self, weights: Weights) -> None:
        self.policy.set_weights(weights)

    def update(self, env_steps: int) -> None:
        self.policy.update(env_steps)

    def priorities(self, t: Transitions) -> np.ndarray | None:
        return self.policy.priorities(t)


def env_config(game: str, backend: str, threads: int) -> EnvConfig:
    # As atari_env_throughput.rate builds it, so the raw rate is of the same envs.
    return EnvConfig(id=f"ALE/{game}-v5", atari={"backend": backend, "threads": threads})


def experiment(
    algo: str, env_cfg: EnvConfig, actors: int, num_envs: int, overrides: Sequence[str] = ()
) -> ExperimentConfig:
    """The experiment file of `algo` with `overrides` (`--set`), on `env_cfg`'s envs."""
    from rlplat import config as config_mod

    sizes = [f"collect.num_actors={actors}", f"collect.envs_per_actor={num_envs}"]
    cfg = config_mod.load(EXPERIMENTS[algo], [*overrides, *sizes])
    return cfg.model_copy(update={"env": env_cfg})


def schedule_steps(cfg: ExperimentConfig) -> int:
    """The run's env-step count the policies act at: mid-run (DQN's epsilon at its end)."""
    return cfg.train.env_steps // 2


def in_process(cfg: ExperimentConfig, seconds: float) -> dict[str, Any]:
    """One Collector in this process: agent steps/s, and the forward pass's share."""
    from rlplat import agents, envs
    from rlplat.experience.collect import Collector
    from rlplat.experience.replay import row_spec

    agent = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    policy = TimedPolicy(agent.actor_policy(0, 1, seed=0))
    policy.set_weights(agent.get_weights())
    c = cfg.collect
    collector = Collector(cfg.env, c.envs_per_actor, 0, policy, row_spec(cfg, agent))
    try:
        env_steps = schedule_steps(cfg)
        collector.collect(c.rollout_length, env_steps)  # traces the tf.function
        policy.seconds, n, t0 = 0.0, 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            n += collector.collect(c.rollout_length, env_steps).env_steps
        elapsed = time.perf_counter() - t0
    finally:
        collector.close()
    vector_steps = n / c.envs_per_actor
    epsilon = getattr(policy.policy, "epsilon", None)  # epsilon-greedy policies only
    return {
        "agent_steps_per_s": round(n / elapsed, 1),
        "policy_ms_per_vector_step": round(policy.seconds / vector_steps * 1e3, 2),
        "rest_ms_per_vector_step": round((elapsed - policy.seconds) / vector_steps * 1e3, 2),
        "policy_share": round(policy.seconds / elapsed, 3),
        "epsilon": None if epsilon is None else round(epsilon, 4),
    }


def ray_collectors(cfg: ExperimentConfig, seconds: float) -> dict[str, Any]:
    """`cfg.collect.num_actors` Ray collectors kept busy for `seconds` after a warm-up
    fragment each (actor start, TF import and trace): aggregate and per-collector rates."""
    from rich.console import Console

    from rlplat import agents, envs
    from rlplat.experience.sources import RaySource

    agent = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    source = RaySource(cfg, agent, 0, {"address": "local"}, Console(quiet=True), lambda *_: None)
    c, env_steps = cfg.collect, schedule_steps(cfg)
    returns: dict[int, list[tuple[float, int]]] = defaultdict(list)  # actor -> (time, steps)
    try:
        source.broadcast(agent.get_weights(), 0)
        version, t0 = 0, None
        last_sync = time.perf_counter()
        while t0 is None or not _enough(returns, c.num_actors, time.perf_counter() - t0, seconds):
            for f in source.gather(source.idle(), c.rollout_length, env_steps, block=True):
                returns[f.actor].append((time.perf_counter(), f.env_steps))
            if t0 is None and len(returns) == c.num_actors:
                t0 = time.perf_counter()  # every collector has delivered once: warm
                returns.clear()
            if time.perf_counter() - last_sync >= 1.0:
                version += 1
                source.broadcast(agent.get_weights(), version)
                last_sync = time.perf_counter()
    finally:
        source.close()
    per = [_actor_rate(i, returns.get(i, [])) for i in range(c.num_actors)]
    return {
        "agent_steps_per_s": round(sum(per), 1),
        "per_collector_agent_steps_per_s": [round(r, 1) for r in per],
        "fragments": sum(len(v) for v in returns.values()),
    }


def _enough(returns: dict[int, list], actors: int, elapsed: float, seconds: float) -> bool:
    """`seconds` are up and every collector has brought 3 fragments (2 timed), or the
    time is up five times over (then _actor_rate says which collector stalled)."""
    timed = all(len(returns.get(i, [])) >= 3 for i in range(actors))
    return elapsed >= 5 * seconds or (elapsed >= seconds and timed)


def _actor_rate(actor: int, returns: list[tuple[float, int]]) -> float:
    """Env steps after the first fragment in the window over the time since it: whole
    fragments only, so a fragment half-done at either end does not skew the rate."""
    if len(returns) < 2:
        raise RuntimeError(f"collector {actor} returned {len(returns)} fragment(s): stalled")
    return sum(n for _, n in returns[1:]) / (returns[-1][0] - returns[0][0])


def measure_game(game: str, args: argparse.Namespace) -> dict[str, Any]:
    env_cfg = env_config(game, args.backend, args.threads)
    raw = raw_rate(game, args.backend, args.envs, args.threads, args.seconds)
    skip = env_cfg.atari.frame_skip
    out: dict[str, Any] = {"raw": _rates(f"{game} raw", {"agent_steps_per_s": raw}, raw, skip)}
    for algo in args.algos:
        one = in_process(experiment(algo, env_cfg, 0, args.envs, args.set), args.seconds)
        runs = {"collector": _rates(f"{game} {algo} collector", one, raw, skip)}
        for n in (1, 2):
            r = ray_collectors(experiment(algo, env_cfg, n, args.envs, args.set), args.seconds)
            runs[f"ray_{n}"] = _rates(f"{game} {algo} ray_{n}", r, raw, skip)
        out[algo] = runs
    return out


def _rates(label: str, result: dict, raw: float, frame_skip: int) -> dict:
    """`result` with its agent steps/s rounded, frames/s and the ratio to the raw rate
    added; logs a progress line."""
    steps = result["agent_steps_per_s"]
    print(f"[{time.strftime('%H:%M:%S')}] {label}: {steps:.0f} agent steps/s", file=sys.stderr)
    return {
        **result,
        "agent_steps_per_s": round(steps, 1),
        "frames_per_s": round(frame_skip * steps),
        "ratio_to_raw": round(steps / raw, 3),
    }


# ------------------------------------------------------------------ central inference


def forward_ms(game: str, batches: list[int], calls: int) -> dict[str, dict[str, float]]:
    """The collectors' DQN forward pass (agents.tf_actors.TFNatureCNN) in this process:
    median ms per call and us per observation at each batch size."""
    from rlplat import agents, envs

    cfg = experiment("dqn", env_config(game, "python", 0), 0, 8)
    agent = agents.build(cfg.agent, envs.spaces(cfg.env), seed=0)
    policy = agent.actor_policy(0, 1, seed=0)
    policy.set_weights(agent.get_weights())
    rng = np.random.default_rng(0)
    out = {}
    for b in batches:
        obs = rng.integers(0, 256, (b, *OBS_SHAPE), dtype=np.uint8)
        ms = _median_ms(lambda o=obs: policy.q_values(o), calls)
        out[str(b)] = {"ms_per_call": round(ms, 3), "us_per_obs": round(ms / b * 1e3, 1)}
    return out


class Echo:
    """A Ray actor standing in for a central inference server, minus the inference."""

    def echo(self, x: np.ndarray) -> np.ndarray:
        return x

    def actions(self, x: np.ndarray) -> np.ndarray:
        return np.zeros(len(x), np.int64)

    def ping(self) -> None:
        return None


def ray_call_ms(batch: int, calls: int) -> dict[str, float]:
    """Median ms of a Ray actor call from this process carrying one [batch, 84, 84, 4]
    uint8 array: there and back, there with `batch` actions back, and an empty call."""
    import ray

    actor = ray.remote(num_cpus=1)(Echo).remote()
    obs = np.random.default_rng(0).integers(0, 256, (batch, *OBS_SHAPE), dtype=np.uint8)
    try:
        ray.get(actor.ping.remote())  # started
        return {
            "obs_and_back_ms": round(_median_ms(lambda: ray.get(actor.echo.remote(obs)), calls), 3),
            "obs_to_actions_ms": round(
                _median_ms(lambda: ray.get(actor.actions.remote(obs)), calls), 3
            ),
            "empty_call_ms": round(_median_ms(lambda: ray.get(actor.ping.remote()), calls), 3),
            "obs_bytes": int(obs.nbytes),
        }
    finally:
        ray.kill(actor)


def _median_ms(fn, calls: int) -> float:
    for _ in range(max(3, calls // 10)):  # warm-up (traces, connections)
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--games", nargs="+", default=["Pong", "Breakout"])
    ap.add_argument("--algos", nargs="+", choices=sorted(EXPERIMENTS), default=["dqn", "ppo"])
    ap.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    ap.add_argument("--backend", choices=["python", "vector"], default="vector")
    ap.add_argument("--envs", type=int, default=8, help="envs per collector")
    ap.add_argument("--threads", type=int, default=0, help="vector backend (0: ale-py picks)")
    ap.add_argument("--calls", type=int, default=200, help="per forward/Ray-call timing")
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override in both experiment files, e.g. collect.rollout_length=32",
    )  # fmt: skip
    args = ap.parse_args()
    from rlplat import cluster
    from rlplat.config import load
    from rlplat.errors import UserError

    try:  # a bad --set: one line and exit 2, before anything starts
        fragments = {a: load(EXPERIMENTS[a], args.set).collect.rollout_length for a in args.algos}
    except UserError as exc:
        ap.error(str(exc))
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    cluster.start(None, 2)
    try:
        games = {game: measure_game(game, args) for game in args.games}
        central = {
            "dqn_forward": forward_ms(args.games[0], [8, 16, 32], args.calls),
            "ray_call_batch_8": ray_call_ms(8, args.calls),
        }
    finally:
        cluster.stop()
    out = {
        "benchmark": "atari_collect_throughput",
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "backend": args.backend,
        "threads": args.threads,
        "envs_per_collector": args.envs,
        "overrides": args.set,
        "seconds_each": args.seconds,
        "fragment_vector_steps": fragments,
        "games": games,
        "central_inference": central,
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
