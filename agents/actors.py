"""Actor-side policies: numpy only, no TensorFlow, picklable.

A collector (in the learner's process or in a Ray actor on another machine) acts with one
of these, fed the learner's `Agent.get_weights()`. Keeping them free of TensorFlow makes a
collector process light (no TF import, no GPU claim) and fast at the small batches
collectors act on, where a TF call's fixed cost outweighs the arithmetic
(benchmarks/collect_throughput.py measures collection).

Each policy runs the executor of the same NetworkSpec (agents.netspec) the learner's
network is built from (`forward_pass`). Weights travel as a mapping from the spec's stable
names (`q/layer0/kernel`, `obs/mean`) to numpy arrays, and every `set_weights` checks names,
shapes and dtypes against the network's `WeightSpec`: a changed network is refused by name,
never loaded by position.

Conv nets are the exception: their forward pass is TF (agents.tf_actors.TFNatureCNN, whose
TF graph is built lazily in the acting process).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from rlplat.agents.netspec import NORM_CLIP, NORM_EPS, OBS_MEAN, OBS_VAR, NetworkSpec, q_spec
from rlplat.agents.tf_actors import TFNatureCNN
from rlplat.experience.data import Transitions

Weights = dict[str, np.ndarray]
# name -> (shape, numpy dtype name): what a network's weights must look like.
WeightSpec = dict[str, tuple[tuple[int, ...], str]]


class WeightsError(ValueError):
    """Weights that do not fit the network they are loaded into."""


def weight_spec(weights: Mapping[str, np.ndarray]) -> WeightSpec:
    """The spec these weights have."""
    return {name: (tuple(np.shape(w)), np.asarray(w).dtype.name) for name, w in weights.items()}


def check_weights(weights: Mapping[str, np.ndarray], spec: WeightSpec) -> None:
    """Raise WeightsError, naming the variable, unless `weights` has exactly the names,
    shapes and dtypes of `spec`."""
    if not isinstance(weights, Mapping):
        raise WeightsError(
            f"weights: expected a mapping of variable name to array, got {type(weights).__name__}"
        )
    missing = [name for name in spec if name not in weights]
    extra = [name for name in weights if name not in spec]
    if missing or extra:
        parts = [f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else ""]
        raise WeightsError(f"weights do not match the network: {'; '.join(p for p in parts if p)}")
    for name, (shape, dtype) in spec.items():
        got = (tuple(np.shape(weights[name])), np.asarray(weights[name]).dtype.name)
        if got != (shape, dtype):
            raise WeightsError(
                f"weights: '{name}' is {got[0]} {got[1]}, the network's is {shape} {dtype}"
            )


class ActorPolicy(abc.ABC):
    """What a collector needs from an algorithm (see `Agent.actor_policy`)."""

    @abc.abstractmethod
    def act(self, observations: np.ndarray, explore: bool) -> np.ndarray:
        """Actions for a batch of observations; `explore=False` is the deterministic policy."""

    @abc.abstractmethod
    def set_weights(self, weights: Weights) -> None:
        """Load `Agent.get_weights()` from the learner (checked: `check_weights`)."""

    def update(self, env_steps: int) -> None:
        """Move exploration schedules to the run's global env step count."""

    def priorities(self, t: Transitions) -> np.ndarray | None:
        """Initial replay priorities for (n-step) transitions, or None (the replay's max)."""
        return None

    def act_logged(self, observations: np.ndarray, explore: bool) -> tuple[np.ndarray, np.ndarray]:
        """Actions and the log-probability this policy gave each: what a learner training
        on them later, with newer weights, weighs them by (`collect.overlap`)."""
        raise NotImplementedError(f"{type(self).__name__} does not report log-probabilities")


class ForwardPass(Protocol):
    """A network's forward pass from weights by name: NumpyMLP, agents.tf_actors.TFNatureCNN."""

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None: ...

    def __call__(self, observations: np.ndarray) -> np.ndarray: ...


class NumpyMLP:
    """An MLP's forward pass in numpy, from a NetworkSpec and its weights by name.

    Hidden Dense layers, then a linear output (Q values, logits or action means); with
    `spec.normalize`, raw observations are normalised first as the learner's graph does
    (agents.networks.normalize). Dueling: Q = V + A - mean(A) is linear in the last hidden
    layer, so the value and advantage heads fold into one (W, b) when weights are set: one
    matmul less per call (small-batch numpy is bound by per-operation overhead).
    """

    def __init__(self, spec: NetworkSpec):
        if spec.is_conv:
            raise ValueError("NumpyMLP: a conv net acts in TF (agents.tf_actors.TFNatureCNN)")
        self.spec = spec
        self._relu = spec.activation == "relu"
        self._layers: list[tuple[np.ndarray, np.ndarray]] = []
        self._mean = self._std = None

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        layers = []
        for layer in self.spec.layers:
            w, b = (weights[name] for name in layer.weight_names())
            layers.append((np.asarray(w, np.float32), np.asarray(b, np.float32)))
        if self.spec.dueling:
            (wv, bv), (wa, ba) = layers[-2:]
            w = wv + wa - wa.mean(axis=1, keepdims=True)
            b = bv + ba - ba.mean()
            layers = [*layers[:-2], (w, b)]
        self._layers = layers
        if self.spec.normalize:
            self._mean = weights[OBS_MEAN]
            self._std = np.sqrt(weights[OBS_VAR] + NORM_EPS)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self._mean is not None:
            x = np.clip((x.astype(np.float32) - self._mean) / self._std, -NORM_CLIP, NORM_CLIP)
        x = x.reshape(len(x), -1).astype(np.float32, copy=False)
        relu = self._relu
        for w, b in self._layers[:-1]:
            x = x @ w
            x += b
            if relu:
                np.maximum(x, 0.0, out=x)
            else:
                np.tanh(x, out=x)
        w, b = self._layers[-1]
        out = x @ w
        out += b
        return out


def forward_pass(spec: NetworkSpec) -> ForwardPass:
    """The fastest executor of `spec` in a collector: numpy for an MLP, TF for a conv net
    (agents.tf_actors builds its TF graph lazily, in the process that acts)."""
    return TFNatureCNN(spec) if spec.is_conv else NumpyMLP(spec)


def apex_epsilon(base: float, index: int, num_actors: int, exponent: float) -> float:
    """Ape-X exploration: actor i of N uses base^(1 + exponent * i / (N - 1)).

    With the paper's base 0.4 and exponent 7, actor 0 explores at 0.4 and the last at
    0.4^8 ~ 0.0007: a spread of behaviours from one schedule. One actor keeps `base`.
    """
    if num_actors <= 1 or exponent == 0.0:
        return base
    return float(base ** (1.0 + exponent * index / (num_actors - 1)))


class EpsilonGreedyQ(ActorPolicy):
    """Epsilon-greedy on a numpy Q network; Ape-X epsilons per actor; TD priorities."""

    def __init__(
        self, cfg, spec: WeightSpec, num_actions: int, index: int, num_actors: int, seed: int,
        network: NetworkSpec | None = None,
    ):  # fmt: skip
        # cfg: agents.configs.DQNConfig (pydantic; pickles with the policy). `network`: the
        # Q network's spec (default: cfg.network on float observations).
        self.cfg = cfg
        self.spec = spec
        self.index, self.num_actors = index, num_actors
        self._num_actions = num_actions
        network = network or q_spec(cfg.network, num_actions, cfg.dueling, pixels=False)
        self._q = forward_pass(network)
        self.rng = np.random.default_rng(seed)
        self.epsilon = self._epsilon_at(0)

    def _epsilon_at(self, env_steps: int) -> float:
        base = self.cfg.epsilon.value(env_steps)
        return apex_epsilon(base, self.index, self.num_actors, self.cfg.epsilon.actor_exponent)

    def update(self, env_steps: int) -> None:
        self.epsilon = self._epsilon_at(env_steps)

    def set_weights(self, weights: Weights) -> None:
        check_weights(weights, self.spec)
        self._q.set_weights(weights)

    def q_values(self, observations: np.ndarray) -> np.ndarray:
        return self._q(np.asarray(observations))  # uint8 pixels stay uint8 into a CNN

    def act(self, observations: np.ndarray, explore: bool) -> np.ndarray:
        greedy = self.q_values(observations).argmax(axis=1)
        eps = self.epsilon if explore else self.cfg.eval_epsilon
        if eps <= 0.0:
            return greedy
        # One uniform draw per env decides both: u < eps explores, and then u / eps is
        # uniform on [0, 1), which picks the random action.
        u = self.rng.random(len(greedy))
        random = np.minimum((u / eps * self._num_actions).astype(np.int64), self._num_actions - 1)
        return np.where(u < eps, random, greedy)

    def priorities(self, t: Transitions) -> np.ndarray:
        """|n-step TD error| under the actor's (online) Q network, as Ape-X actors send.

        `t.discount` already is gamma^n (0 after a termination), so the target is
        R + discount * Q(s', argmax_a Q(s', a)) with the online network on both sides:
        actors have no target network, and these priorities are refreshed by the learner
        the first time each transition is sampled.
        """
        q = self.q_values(np.concatenate([t.obs, t.next_obs]))
        q_now, q_next = q[: len(t)], q[len(t) :]
        taken = np.take_along_axis(q_now, t.action.reshape(-1, 1).astype(np.int64), 1)[:, 0]
        target = t.reward + t.discount * q_next.max(axis=1)
        return np.abs(target - taken).astype(np.float32)


class StochasticPolicy(ActorPolicy):
    """A categorical (logits) or diagonal-Gaussian (means + log std) policy on the executor
    of `network` (agents.netspec.policy_spec: normalisation included).

    Weights (PPOAgent.get_weights): the network's (`network.weight_names()`), `log_std`
    (Box only); the critic's come along and go unused.
    """

    def __init__(
        self,
        spec: WeightSpec,
        network: NetworkSpec,
        discrete: bool,
        action_shape: tuple[int, ...],
        seed: int,
    ):
        self.spec = spec
        self._net = forward_pass(network)
        self._discrete = discrete
        self._action_shape = action_shape
        self.rng = np.random.default_rng(seed)
        self._log_std = np.zeros(1, np.float32)

    def set_weights(self, weights: Weights) -> None:
        check_weights(weights, self.spec)
        self._net.set_weights(weights)
        if not self._discrete:
            self._log_std = weights["log_std"]

    def outputs(self, observations: np.ndarray) -> np.ndarray:
        """Logits (Discrete) or Gaussian means (Box) for raw observations."""
        return self._net(np.asarray(observations))

    def act(self, observations: np.ndarray, explore: bool) -> np.ndarray:
        return self._sample(self.outputs(observations), explore)

    def _sample(self, out: np.ndarray, explore: bool) -> np.ndarray:
        if self._discrete:
            if explore:  # Gumbel-max: a categorical sample without a softmax
                out = out - np.log(-np.log(self.rng.random(out.shape)))
            return out.argmax(axis=1)
        if explore:
            out = out + np.exp(self._log_std) * self.rng.standard_normal(out.shape)
        return out.reshape(len(out), *self._action_shape).astype(np.float32)

    def act_logged(self, observations: np.ndarray, explore: bool) -> tuple[np.ndarray, np.ndarray]:
        out = self.outputs(observations)
        actions = self._sample(out, explore)
        return actions, self.log_prob(out, actions)

    def log_prob(self, out: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """log pi(a|s) from the network's outputs, as the learner computes it (float32)."""
        out = out.astype(np.float64)
        if self._discrete:
            top = out.max(axis=1, keepdims=True)
            log_z = top[:, 0] + np.log(np.exp(out - top).sum(axis=1))
            return (np.take_along_axis(out, actions[:, None], 1)[:, 0] - log_z).astype(np.float32)
        log_std = np.broadcast_to(self._log_std.astype(np.float64), out.shape)
        z = (actions.reshape(out.shape) - out) / np.exp(log_std)
        return np.sum(-0.5 * z**2 - log_std - 0.5 * np.log(2 * np.pi), axis=1).astype(np.float32)
