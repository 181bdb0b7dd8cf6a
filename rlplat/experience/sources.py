"""Where the training loops get their experience from: a `Source` of fragments.

`collect.num_actors: 0` is a `LocalSource` (one collector in the learner's process, acting
with the agent's own policy), or with `collect.overlap` a `ThreadSource` (the same on a
thread, stepping while the learner trains); `num_actors: N` is a `RaySource` (N Ray
collector actors running concurrently with the learner, rlplat/experience/collect.py).
The loops see only `Source`.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, Protocol

import numpy as np
from rich.console import Console

from rlplat import agents
from rlplat.agents.actors import ActorPolicy, Weights
from rlplat.config import ExperimentConfig
from rlplat.experience.collect import Collector, ray_collectors
from rlplat.experience.data import Fragment, Transitions
from rlplat.experience.replay import row_spec

# ray.json's collector part: pid and node of each collector, and the restarts so far.
CollectorReport = Callable[[dict[int, int], int, dict[int, dict]], None]


class Source(Protocol):
    """Fragments of experience, from collectors the source launches on request."""

    num_envs: int  # envs behind one fragment
    num_fragments: int  # fragments per on-policy rollout (one per collector)

    @property
    def restarts(self) -> int:
        """Collectors replaced after their process died, this session."""
        ...

    @property
    def pending(self) -> int:
        """Fragments asked for and not yet returned."""
        ...

    @property
    def inflight_env_steps(self) -> int:
        """Env steps that the pending fragments will bring."""
        ...

    def idle(self) -> list[int]:
        """Collectors with nothing to do."""
        ...

    def gather(self, launch: list[int], steps: int, env_steps: int, block: bool) -> list[Fragment]:
        """Start `steps`-step fragments on the collectors in `launch` (`env_steps`: the
        run's count, for exploration schedules); return those done (`block`: wait a
        little for one). Fragments carry the weight version last broadcast."""
        ...

    def broadcast(self, weights: Weights, version: int) -> None:
        """New learner weights for the collectors (tagged `version`)."""

    def close(self) -> None: ...


def open_source(
    cfg: ExperimentConfig,
    agent: agents.Agent,
    seed: int,
    ray_info: dict[str, Any] | None,
    console: Console,
    report: CollectorReport,
) -> Source:
    """The source `cfg.collect` asks for (Ray must be up for `num_actors` > 0)."""
    if cfg.collect.num_actors == 0:
        local = ThreadSource if cfg.collect.overlap else LocalSource
        return local(cfg, agent, seed)
    assert ray_info is not None, "Ray collectors need Ray (rlplat.cluster.start_cluster)"
    return RaySource(cfg, agent, seed, ray_info, console, report)


class AgentPolicy(ActorPolicy):
    """The learner's own acting policy, always current (`num_actors: 0`)."""

    def __init__(self, agent: agents.Agent):
        self._agent = agent

    def act(self, observations: np.ndarray, explore: bool) -> np.ndarray:
        return self._agent.policy.act(observations, explore)

    def set_weights(self, weights: Weights) -> None:
        self._agent.set_weights(weights)

    def update(self, env_steps: int) -> None:
        self._agent.policy.update(env_steps)

    def priorities(self, t: Transitions) -> np.ndarray | None:
        return self._agent.policy.priorities(t)


class LocalSource:
    """`num_actors: 0`: one collector in this process, on the agent's own policy (so a
    broadcast only sets the version its fragments are tagged with)."""

    restarts = 0
    pending = 0
    inflight_env_steps = 0

    def __init__(self, cfg: ExperimentConfig, agent: agents.Agent, seed: int):
        self.num_envs, self.num_fragments = cfg.collect.envs_per_actor, 1
        self._version = 0
        policy = AgentPolicy(agent)
        self._collector = Collector(cfg.env, self.num_envs, seed, policy, row_spec(cfg, agent))

    def idle(self) -> list[int]:
        return [0]

    def gather(self, launch: list[int], steps: int, env_steps: int, block: bool) -> list[Fragment]:
        if not launch:
            return []
        fragment = self._collector.collect(steps, env_steps)
        fragment.version = self._version
        return [fragment]

    def broadcast(self, weights: Weights, version: int) -> None:
        self._version = version

    def close(self) -> None:
        self._collector.close()


class ThreadSource:
    """`num_actors: 0` with `collect.overlap`: one collector on a thread of this process,
    acting with its own copy of the policy, so the envs step while the learner trains.

    Stepping Python envs holds the GIL; the learner's update is one TF call that runs
    outside it, so the two share the cores. A fragment acts with the weights last
    broadcast when it was launched (and is tagged with their version).
    """

    restarts = 0

    def __init__(self, cfg: ExperimentConfig, agent: agents.Agent, seed: int):
        self.num_envs, self.num_fragments = cfg.collect.envs_per_actor, 1
        self._policy = agent.actor_policy(0, 1, seed)
        self._collector = Collector(
            cfg.env, self.num_envs, seed, self._policy, row_spec(cfg, agent), log_probs=True
        )
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="rlplat-collector")
        self._job: Future[Fragment] | None = None
        self._asked = 0
        self._latest: tuple[Weights, int] | None = None  # the last broadcast
        self._acting = -1  # the version the policy holds

    @property
    def pending(self) -> int:
        return int(self._job is not None)

    @property
    def inflight_env_steps(self) -> int:
        return self._asked if self._job is not None else 0

    def idle(self) -> list[int]:
        return [] if self._job is not None else [0]

    def gather(self, launch: list[int], steps: int, env_steps: int, block: bool) -> list[Fragment]:
        if launch and self._job is None:
            self._asked = steps * self.num_envs
            self._job = self._thread.submit(self._collect, steps, env_steps, self._latest)
        if self._job is None:
            return []
        try:
            fragment = self._job.result(timeout=1.0 if block else 0.0)
        except FutureTimeout:
            return []
        self._job = None
        return [fragment]

    def _collect(self, steps: int, env_steps: int, latest: tuple[Weights, int] | None) -> Fragment:
        """On the collector thread."""
        if latest is not None and latest[1] != self._acting:
            self._policy.set_weights(latest[0])
            self._acting = latest[1]
        fragment = self._collector.collect(steps, env_steps)
        fragment.version = self._acting
        return fragment

    def broadcast(self, weights: Weights, version: int) -> None:
        self._latest = (weights, version)

    def close(self) -> None:
        if self._job is not None:  # a fragment still on its way is finished, then dropped
            self._job.exception()
            self._job = None
        self._thread.shutdown(wait=True)
        self._collector.close()


class RaySource:
    """`num_actors: N`: Ray collector actors (rlplat.experience.collect.RayCollectors)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        agent: agents.Agent,
        seed: int,
        ray_info: dict[str, Any],
        console: Console,
        report: CollectorReport,
    ):
        c = cfg.collect
        self.num_envs, self.num_fragments = c.envs_per_actor, c.num_actors
        self._report = report
        self._pids: dict[int, int] = {}
        self._nodes: dict[int, dict] = {}
        self._actors = ray_collectors(cfg, agent, seed)
        console.print(
            f"collectors: {c.num_actors} Ray actors x {c.envs_per_actor} envs "
            f"(Ray: {ray_info['address']})",
            highlight=False,
        )

    @property
    def restarts(self) -> int:
        return self._actors.restarts

    @property
    def pending(self) -> int:
        return self._actors.pending

    @property
    def inflight_env_steps(self) -> int:
        return self._actors.inflight_env_steps

    def idle(self) -> list[int]:
        return self._actors.idle()

    def gather(self, launch: list[int], steps: int, env_steps: int, block: bool) -> list[Fragment]:
        idle = set(self._actors.idle())  # on-policy asks for missing ones, maybe still busy
        for index in launch:
            if index in idle:
                self._actors.launch(index, steps, env_steps, self.num_envs)
        fragments = self._actors.wait(timeout=1.0 if block else 0.0)
        self._note_pids(fragments)
        return fragments

    def broadcast(self, weights: Weights, version: int) -> None:
        self._actors.broadcast(weights, version)

    def _note_pids(self, fragments: list[Fragment]) -> None:
        """Report each collector's pid when it changes (a replaced collector)."""
        changed = False
        for f in fragments:
            pid = f.info.get("pid")
            if pid is not None and self._pids.get(f.actor) != pid:
                self._pids[f.actor] = pid
                self._nodes[f.actor] = f.info.get("node")
                changed = True
        if changed:
            self._report(self._pids, self._actors.restarts, self._nodes)

    def close(self) -> None:
        self._actors.close()
