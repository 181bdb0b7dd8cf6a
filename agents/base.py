"""The one seam between the platform and the algorithms: rlplat/ asks an algorithm only
what `Agent` declares.

Nothing here imports TensorFlow, so `rlplat` can load configs and print errors fast.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rlplat.agents.actors import ActorPolicy, Weights, WeightSpec, check_weights
from rlplat.experience.data import Transitions


@dataclass
class TrainResult:
    """Scalars to log (`losses/...` style names) and, for prioritized replay, |TD errors|."""

    metrics: dict[str, float] = field(default_factory=dict)
    td_errors: np.ndarray | None = None


class Agent(abc.ABC):
    """What the platform may ask of an algorithm. Batches in and out are numpy."""

    on_policy: bool
    # Off-policy agents: n-step returns are formed with this discount before the learner
    # (rlplat/experience/nstep.py), and the agent gets `discount` = gamma^n (0 after a
    # termination) as the bootstrap multiplier.
    gamma: float = 0.99
    n_step: int = 1
    # Whether the learner's networks compute in float16 (`agents.build(...,
    # mixed_precision=True)` on a network that has a conv torso); variables, weights sent to
    # collectors, checkpoints and exports stay float32 either way.
    mixed_precision: bool = False

    @abc.abstractmethod
    def actor_policy(self, index: int = 0, num_actors: int = 1, seed: int = 0) -> ActorPolicy:
        """A fresh numpy-only copy of the acting policy for collector `index` of
        `num_actors` (its exploration may depend on both, as in Ape-X). It holds no
        weights until `set_weights(agent.get_weights())`; it pickles to other processes."""

    # Subclasses set `_policy = self.actor_policy(0, 1, seed)` and set `_policy_stale`
    # whenever their weights change (train, set_weights, restore).
    _policy: ActorPolicy
    _policy_stale: bool = True

    @property
    def policy(self) -> ActorPolicy:
        """The in-process acting policy, kept in step with the learner's weights (what
        `num_actors: 0` collection and evaluation act with; its RNG is checkpointed).
        Weights are copied lazily: once per change, not once per step."""
        if self._policy_stale:
            self._policy.set_weights(self.get_weights())
            self._policy_stale = False
        return self._policy

    def act(self, observations: np.ndarray, explore: bool) -> np.ndarray:
        """Actions for a batch of observations; `explore=False` is the deterministic policy."""
        return self.policy.act(observations, explore)

    @abc.abstractmethod
    def train(self, batch: Transitions, weights: np.ndarray | None = None) -> TrainResult:
        """A training phase: `batch` is [K, B, ...], K gradient steps on K minibatches in
        order (one call, one compiled graph). `weights` [K, B] are importance-sampling
        weights; `TrainResult.td_errors` comes back [K, B]."""

    def update_schedules(self, env_steps: int, progress: float) -> dict[str, float]:
        """Move learner schedules (learning rate, ...) forward; returns values to log.
        Acting schedules (epsilon) live in the ActorPolicy (`update(env_steps)`).

        `progress` is env_steps / train.env_steps, in [0, 1].
        """
        return {}

    @property
    @abc.abstractmethod
    def train_steps(self) -> int:
        """Gradient steps taken so far (restored with checkpoints)."""

    @abc.abstractmethod
    def weight_variables(self) -> Mapping[str, Any]:
        """The acting policy's TF variables by the names its NetworkSpec gives (agents.netspec):
        what `get_weights` reads and `set_weights` assigns."""

    def weight_spec(self) -> WeightSpec:
        """Names, shapes and dtypes of `get_weights()` (what actor policies check against)."""
        return {n: (tuple(v.shape), v.dtype.name) for n, v in self.weight_variables().items()}

    def get_weights(self) -> Weights:
        """The acting policy's weights as numpy arrays by name: what collectors receive."""
        return {name: var.numpy() for name, var in self.weight_variables().items()}

    def set_weights(self, weights: Weights) -> None:
        """Assign `get_weights()` of an agent with the same network; anything else (a name
        missing or extra, a shape or dtype changed) raises WeightsError naming it."""
        variables = self.weight_variables()
        check_weights(weights, self.weight_spec())
        for name, var in variables.items():
            var.assign(weights[name])
        self._policy_stale = True

    @abc.abstractmethod
    def checkpoint_items(self) -> dict[str, Any]:
        """Trackables for `tf.train.Checkpoint` (networks, optimizer, counters)."""

    def extra_state(self) -> dict[str, Any]:
        """JSON-serialisable state outside TF variables (numpy RNGs, schedules)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Inverse of `extra_state`, called when a checkpoint is restored."""

    def on_restore(self) -> None:
        """Called after a checkpoint was restored into `checkpoint_items()`."""

    @abc.abstractmethod
    def serving_module(self) -> Any:
        """A `tf.Module` whose `serving_default` maps float32 observations to outputs.

        It must load with plain `tf.saved_model.load` in a process without rlplat,
        TF-Agents or tensorflow-probability.
        """
