"""Collectors: step vector environments with an actor-side policy and hand back numpy.

`Collector` is the whole job of one collector, in any process. `num_actors: 0` runs one in
the learner's process on the agent's own policy; `num_actors: N` runs N of them as Ray
actors (`RayCollectors`), each with its own vector env and a numpy copy of the policy that
pulls the learner's weights from the object store when their version changes. An MLP
policy acts in numpy, so its collector never imports TensorFlow; a conv-net policy acts in
TF on the collector's CPU (agents/tf_actors.py). Neither claims a GPU.

What a collector hands back is the replay's choice (`RowSpec`): n-step transitions (it
sees each env's stream in order) with, Ape-X style, initial priorities from its own
|n-step TD error|; or one-step rows (on-policy rollouts tagged with the policy version,
and the frame storage, which forms n-step returns itself).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from rlplat import envs
from rlplat.agents.actors import ActorPolicy, Weights
from rlplat.config import EnvConfig, ExperimentConfig
from rlplat.experience.data import EpisodeStats, Fragment, Transitions
from rlplat.experience.nstep import NStepAccumulator
from rlplat.experience.replay import RowSpec, row_spec

if TYPE_CHECKING:
    from rlplat.agents.base import Agent

ONE_STEP_ROWS = RowSpec()  # raw rows: on-policy rollouts (and the frame storage's)


class Collector:
    """A vector env of `num_envs` copies stepped in lockstep by an `ActorPolicy`."""

    def __init__(
        self,
        env_cfg: EnvConfig,
        num_envs: int,
        seed: int,
        policy: ActorPolicy,
        rows: RowSpec = ONE_STEP_ROWS,
        actor: int = 0,
        log_probs: bool = False,
    ):
        """`rows`: what to hand back (default: raw one-step rows); `log_probs`: also the
        policy's log-probability of each action (a rollout trained on by newer weights)."""
        self.num_envs = num_envs
        self._log_probs = log_probs
        self.policy = policy
        self.actor = actor
        self._env = envs.make_vec(env_cfg, num_envs, seed, training=True)
        space = self._env.single_action_space
        # Box actions: the policy's raw (e.g. Gaussian) action is stored for learning; the
        # env gets it clipped to its bounds.
        self._clip = (space.low, space.high) if isinstance(space, gym.spaces.Box) else None
        self._nstep = (
            None if rows.n_step is None else NStepAccumulator(rows.n_step, rows.gamma, num_envs)
        )
        self._priorities = rows.priorities
        self.reset(seed)

    def reset(self, seed: int) -> None:
        """Start fresh episodes (also after a resume: env state is not checkpointed)."""
        self._obs = self._env.reset(seed=[seed + i for i in range(self.num_envs)])
        self._ep_return = np.zeros(self.num_envs)
        self._ep_length = np.zeros(self.num_envs, np.int64)
        if self._nstep is not None:
            self._nstep.reset()

    def collect(self, steps: int, env_steps: int = 0, explore: bool = True) -> Fragment:
        """`steps` vector steps (steps x num_envs env steps); `env_steps` is the run's
        global count, which exploration schedules follow."""
        self.policy.update(env_steps)
        raw, episodes = self._rollout(steps, explore)
        priorities = None
        if self._nstep is not None:
            out = self._nstep.add(raw)
            if out is not None and self._priorities:
                priorities = self.policy.priorities(out)
        else:
            out = raw
        return Fragment(
            transitions=out, episodes=episodes, env_steps=len(raw), num_envs=self.num_envs,
            priorities=priorities, actor=self.actor,
        )  # fmt: skip

    def _rollout(self, steps: int, explore: bool) -> tuple[Transitions, list[EpisodeStats]]:
        obs, actions, rewards, next_obs, discounts, lasts = [], [], [], [], [], []
        log_probs: list[np.ndarray] = []
        episodes: list[EpisodeStats] = []
        for t in range(steps):
            if self._log_probs:
                action, log_prob = self.policy.act_logged(self._obs, explore=explore)
                log_probs.append(log_prob)
            else:
                action = self.policy.act(self._obs, explore=explore)
            env_action = action if self._clip is None else np.clip(action, *self._clip)
            # Same-step autoreset: new_obs already starts the next episode where one ended.
            new_obs, reward, terminated, truncated, final = self._env.step(env_action)
            done = terminated | truncated
            obs.append(self._obs)
            actions.append(action)
            rewards.append(reward)
            next_obs.append(final)
            discounts.append(1.0 - terminated)  # truncation still bootstraps
            lasts.append(done)
            self._ep_return += reward
            self._ep_length += 1
            for i in np.flatnonzero(done):
                episodes.append(
                    EpisodeStats(
                        float(self._ep_return[i]), int(self._ep_length[i]), t * self.num_envs + i
                    )
                )
                self._ep_return[i] = 0.0
                self._ep_length[i] = 0
            self._obs = new_obs
        return (
            Transitions(
                obs=as_obs(np.concatenate(obs)),
                action=np.concatenate(actions),
                reward=np.concatenate(rewards).astype(np.float32),
                next_obs=as_obs(np.concatenate(next_obs)),
                discount=np.concatenate(discounts).astype(np.float32),
                last=np.concatenate(lasts),
                log_prob=np.concatenate(log_probs) if log_probs else None,
            ),
            episodes,
        )

    def close(self) -> None:
        self._env.close()


def as_obs(obs: np.ndarray) -> np.ndarray:
    """Observations as replay, Ray and the learner carry them: uint8 pixels stay uint8 (a
    quarter of float32's bytes; a CNN scales them in its graph), anything else is float32."""
    return obs if obs.dtype == np.uint8 else obs.astype(np.float32, copy=False)


class RolloutGather:
    """On-policy: joins the fragments of one rollout into one [T, N, ...] rollout.

    A fragment is kept if it was collected with the current weight version, or, with
    `max_lag` k (`collect.overlap`), with one of the k before it: such a rollout carries
    its collectors' log-probabilities, so the learner weighs it by the importance ratio
    instead of taking it for its own. Anything older would be silently off-policy: it is
    dropped and counted, never mixed. `stale_dropped` is the run's count (a resumed run
    passes in the count so far). `lag` is the popped rollout's: the weight updates between
    the policy that collected it (its oldest fragment) and the learner.
    """

    def __init__(self, num_fragments: int, stale_dropped: int = 0, max_lag: int = 0):
        self.num_fragments = num_fragments
        self.version = 0
        self.stale_dropped = stale_dropped
        self.max_lag = max_lag
        self.lag = 0
        self._parts: dict[int, Fragment] = {}

    def add(self, fragment: Fragment) -> bool:
        """Keep `fragment` if it is at most `max_lag` versions old; False if dropped."""
        if not 0 <= self.version - fragment.version <= self.max_lag:
            self.stale_dropped += 1
            return False
        self._parts[fragment.actor] = fragment
        return True

    def ready(self) -> bool:
        return len(self._parts) >= self.num_fragments

    def missing(self) -> list[int]:
        return [i for i in range(self.num_fragments) if i not in self._parts]

    def pop(self) -> Transitions:
        """The rollout, time-major [T, sum of envs, ...]; the next version starts."""
        self.lag = max(self.version - f.version for f in self._parts.values())
        parts = [time_major(self._parts[i]) for i in sorted(self._parts)]
        self._parts.clear()
        self.version += 1
        return parts[0] if len(parts) == 1 else Transitions.concat(parts, axis=1)


def time_major(fragment: Fragment) -> Transitions:
    """Collector rows are ordered (step, env): view them as [T, N, ...]."""
    n = fragment.num_envs
    return fragment.transitions.map(lambda a: a.reshape(-1, n, *a.shape[1:]))


# ------------------------------------------------------------------------------- Ray


class CollectorActorBody:
    """The Ray actor around a `Collector`: weights arrive as an object-store reference
    and are fetched only when their version changes (one `ray.put` per broadcast)."""

    def __init__(self, *args: Any, **kwargs: Any):
        import ray

        self._collector = Collector(*args, **kwargs)
        self._version = -1
        # Where this collector runs, for ray.json (operators: which node holds which).
        self._node = {
            "node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(),
        }

    def pid(self) -> int:
        return os.getpid()

    def collect(self, steps: int, env_steps: int, weights: list, version: int) -> Fragment:
        # `weights` is [ObjectRef]: wrapped in a list so Ray does not resolve it eagerly.
        if version != self._version:
            import ray

            self._collector.policy.set_weights(ray.get(weights[0]))
            self._version = version
        started = time.monotonic()
        fragment = self._collector.collect(steps, env_steps)
        # When and how long it collected (monotonic: comparable across this host's
        # processes): benchmarks/collector_profile.py finds Ray's time between calls.
        fragment.info["collect_s"] = (started, time.monotonic() - started)
        fragment.version = version
        fragment.info["pid"] = os.getpid()
        fragment.info["node"] = self._node
        return fragment


class CollectorDiedError(RuntimeError):
    """A collector actor kept dying without producing anything (a bug, not bad luck)."""


def death_cause(err: Exception) -> str:
    """Why a Ray actor died, in one line: for a failed set-up (e.g. an env that cannot be
    made on that node), the exception its __init__ raised, not Ray's header about it."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if getattr(err, "actor_init_failed", False):
        return f"its set-up raised {lines[-1]}"
    return lines[0]


class RayCollectors:
    """N collector actors, each with its queue of `collect` requests.

    A collector whose process dies (SIGKILL, OOM, lost node) is replaced by a fresh actor
    with the same index and a new seed; the loss is counted in `restarts`. Weights are
    put in the object store once per broadcast, not once per actor.
    """

    def __init__(
        self,
        num_actors: int,
        make_args: Callable[[int, int], tuple[tuple, dict]],
        runtime_env: dict[str, Any] | None = None,
        max_consecutive_failures: int = 3,
    ):
        import ray

        self._ray = ray
        self._remote = ray.remote(num_cpus=1, num_gpus=0, max_restarts=0)(CollectorActorBody)
        self._make_args = make_args
        self._runtime_env = runtime_env
        self._max_failures = max_consecutive_failures
        self.num_actors = num_actors
        self.restarts = 0
        self._failures = [0] * num_actors
        self._generation = [0] * num_actors
        self._pending: dict[Any, tuple[int, int]] = {}  # ref -> (actor, env steps asked)
        self._weights_ref: Any = None
        self.version = -1
        self.actors = [self._start(i) for i in range(num_actors)]

    def _start(self, index: int) -> Any:
        args, kwargs = self._make_args(index, self._generation[index])
        options = {"runtime_env": self._runtime_env} if self._runtime_env else {}
        return self._remote.options(**options).remote(*args, **kwargs)

    def broadcast(self, weights: Weights, version: int) -> None:
        self._weights_ref = self._ray.put(weights)
        self.version = version

    def launch(self, index: int, steps: int, env_steps: int, envs_per_actor: int) -> None:
        ref = self.actors[index].collect.remote(steps, env_steps, [self._weights_ref], self.version)
        self._pending[ref] = (index, steps * envs_per_actor)

    def idle(self, depth: int = 1) -> list[int]:
        """Actors with fewer than `depth` requests queued. Depth 2 keeps an actor busy
        while its last fragment travels back and the learner relaunches it."""
        queued = Counter(i for i, _ in self._pending.values())
        return [i for i in range(self.num_actors) if queued[i] < depth]

    @property
    def inflight_env_steps(self) -> int:
        return sum(n for _, n in self._pending.values())

    @property
    def pending(self) -> int:
        return len(self._pending)

    def wait(self, timeout: float | None) -> list[Fragment]:
        """Fragments that are ready (blocking up to `timeout` s for the first one)."""
        if not self._pending:
            return []
        ray = self._ray
        ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        if ready:  # collect everything else that is done too, without waiting
            more, _ = ray.wait(list(self._pending), num_returns=len(self._pending), timeout=0)
            ready = list(dict.fromkeys([*ready, *more]))
        out = []
        for ref in ready:
            index, _ = self._pending.pop(ref)
            try:
                out.append(ray.get(ref))
                self._failures[index] = 0
            except ray.exceptions.RayActorError as err:
                self._replace(index, err)
        return out

    def _replace(self, index: int, err: Exception) -> None:
        self._failures[index] += 1
        if self._failures[index] > self._max_failures:
            raise CollectorDiedError(
                f"collector actor {index} died {self._failures[index]} times in a row "
                f"without returning data; last cause: {death_cause(err)}"
            )
        self.restarts += 1
        self._generation[index] += 1
        with contextlib.suppress(Exception):  # already gone
            self._ray.kill(self.actors[index])
        self.actors[index] = self._start(index)

    def close(self) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self._ray.kill(actor)
        self._pending.clear()


def ray_collectors(cfg: ExperimentConfig, agent: Agent, seed: int) -> RayCollectors:
    """`cfg.collect.num_actors` Ray collectors for `agent` (Ray must be initialised).

    Actor i acts with `agent.actor_policy(i, N)` (its own exploration, e.g. Ape-X
    epsilons) on `envs_per_actor` envs seeded apart from every other actor and from any
    replacement of itself.
    """
    from rlplat import cluster

    c = cfg.collect
    rows = row_spec(cfg, agent)

    def make_args(index: int, generation: int) -> tuple[tuple, dict]:
        actor_seed = seed + 10_007 * (index + 1) + 1_000_003 * generation
        policy = agent.actor_policy(index, c.num_actors, actor_seed)
        kwargs = dict(rows=rows, actor=index, log_probs=c.overlap)
        return (cfg.env, c.envs_per_actor, actor_seed, policy), kwargs

    return RayCollectors(
        c.num_actors, make_args, {"env_vars": cluster.COLLECTOR_ENV}, c.max_actor_failures
    )
