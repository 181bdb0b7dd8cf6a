"""DQN on TF-Agents: fixed Q targets (hard or Polyak), Double (DdqnAgent), Dueling
(agents.networks.DuelingQNetwork), n-step returns and prioritized-replay IS weights.

n-step returns are formed before the learner sees them (rlplat/experience/nstep.py, in the
collector or by the frame storage), with `discount` = gamma^n (0 after a termination); so
TF-Agents gets gamma = 1 and the bootstrap is reward + discount * Q_target(next_obs, .).

The Q network is described once (agents.netspec.q_spec): the learner's TF-Agents network
and the collectors' forward pass are both built from that spec. With
`agent.network.type: nature_cnn` (agents.networks.NatureQNetwork) observations stay uint8
up to the graph, and actors run the Q network in TF (agents.tf_actors.TFNatureCNN).

Acting happens in numpy from the Q network's weights (agents.actors.EpsilonGreedyQ: epsilon
greedy, Ape-X epsilons per collector actor, |n-step TD| initial priorities); learning is one
tf.function around `DqnAgent.train` that also returns per-sample TD errors (for
prioritized replay) and the mean Q value of the batch (a health signal worth watching).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import tensorflow as tf
from tf_agents.agents.dqn import dqn_agent
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.trajectories import trajectory
from tf_agents.utils import common, eager_utils

from rlplat.agents.actors import EpsilonGreedyQ
from rlplat.agents.base import Agent, TrainResult
from rlplat.agents.configs import DQNConfig, NatureCNNConfig
from rlplat.agents.netspec import q_spec
from rlplat.agents.networks import (
    float32_copy,
    loss_scaled,
    named_variables,
    q_net,
    resolve_network,
)
from rlplat.agents.replicas import replica_slice
from rlplat.envs import EnvSpaces
from rlplat.envs.tf_agents_adapter import tensor_specs
from rlplat.errors import ConfigError
from rlplat.experience.data import Transitions


class DQNAgent(Agent):
    on_policy = False

    def __init__(
        self, cfg: DQNConfig, spaces: EnvSpaces, seed: int = 0, mixed_precision: bool = False
    ):
        if not isinstance(spaces.action, gym.spaces.Discrete):
            raise ConfigError(
                f"agent.type: dqn needs a Discrete action space; this env has {spaces.action}"
            )
        self.cfg = cfg
        self._num_actions = int(spaces.action.n)
        self._obs_shape = tuple(spaces.observation.shape)
        self._net = resolve_network(cfg, spaces.observation)
        self._cnn = isinstance(self._net, NatureCNNConfig)
        self.mixed_precision = mixed_precision and self._cnn
        # A CNN takes the env's dtype (uint8 pixels) and scales in its graph.
        self._obs_dtype = tf.as_dtype(spaces.observation.dtype) if self._cnn else tf.float32
        time_step_spec, action_spec = self._specs(spaces)
        self.gamma, self.n_step = cfg.gamma, cfg.n_step
        # One description for the learner's Q network and the collectors' (actor_policy).
        pixels = self._obs_dtype == tf.uint8
        self.network_spec = q_spec(self._net, self._num_actions, cfg.dueling, pixels)
        self._q = q_net(
            time_step_spec.observation, action_spec, self.network_spec, self.mixed_precision
        )
        # Checkpointed as it is (agents.networks.loss_scaled): one format either way.
        self._optimizer = tf.keras.optimizers.Adam(learning_rate=cfg.learning_rate)
        # Built under learner.strategy's scope (rlplat/learner.py: learner_scope), variables
        # are mirrored and each minibatch is split evenly across the replicas.
        self._strategy = tf.distribute.get_strategy()
        # int64: TF-Agents' summaries reject an int32 counter on TF 2.21.
        self._train_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_step")
        self._agent = self._tf_agent(time_step_spec, action_spec)
        self._agent.initialize()
        self._weights = named_variables(self.network_spec.layers, self._q.trainable_variables)
        # Slots exist before any restore, so a checkpoint's Adam moments load eagerly.
        self._optimizer.build(self._q.trainable_variables)
        # autograph=False: TF-Agents' Python control flow is static, and autograph-converting
        # it made the first trace take ~10 s instead of ~1 s.
        self.jit_compile = cfg.jit_compile
        if self.jit_compile is None:
            self.jit_compile = not self._cnn or bool(tf.config.list_physical_devices("GPU"))
        # A phase over several devices is not one XLA cluster (its all-reduces cross them).
        self.jit_compile = self.jit_compile and self._strategy.num_replicas_in_sync == 1
        self._train_fn = tf.function(
            self._train_phase, autograph=False, jit_compile=self.jit_compile,
            reduce_retracing=True,
        )  # fmt: skip
        self._policy = self.actor_policy(0, 1, seed)
        self._policy_stale = True  # numpy weights lag the TF ones until the next use

    def _specs(self, spaces: EnvSpaces) -> tuple:
        time_step_spec, action_spec = tensor_specs(spaces)
        if self._cnn:
            obs_spec = tensor_spec.BoundedTensorSpec(  # bounded: TF-Agents samples from it
                self._obs_shape, self._obs_dtype, spaces.observation.low.min(),
                spaces.observation.high.max(), "observation",
            )  # fmt: skip
            time_step_spec = ts.time_step_spec(obs_spec)
        return time_step_spec, action_spec

    def _tf_agent(self, time_step_spec, action_spec) -> dqn_agent.DqnAgent:
        cfg = self.cfg
        loss_fn = (
            common.element_wise_huber_loss
            if cfg.loss == "huber"
            else common.element_wise_squared_loss
        )
        agent_cls = _ReplicaDdqn if cfg.double else _ReplicaDqn
        agent = agent_cls(
            time_step_spec,
            action_spec,
            q_network=self._q,
            optimizer=loss_scaled(self._optimizer) if self.mixed_precision else self._optimizer,
            target_update_period=cfg.target_update.period,
            target_update_tau=cfg.target_update.tau,
            td_errors_loss_fn=loss_fn,
            gamma=1.0,  # the discount in the data already is gamma^n (see module doc)
            gradient_clipping=cfg.gradient_clipping,
            train_step_counter=self._train_step,
        )
        agent.loss_scaled = self.mixed_precision
        return agent

    # ------------------------------------------------------------------ acting
    def actor_policy(self, index: int = 0, num_actors: int = 1, seed: int = 0) -> EpsilonGreedyQ:
        return EpsilonGreedyQ(
            self.cfg, self.weight_spec(), self._num_actions, index, num_actors, seed,
            self.network_spec,
        )  # fmt: skip

    def q_values(self, observations: np.ndarray) -> np.ndarray:
        return self.policy.q_values(observations)

    def update_schedules(self, env_steps: int, progress: float) -> dict[str, float]:
        lr = self.cfg.learning_rate
        if self.cfg.lr_schedule == "linear":
            lr *= max(0.0, 1.0 - progress)
        # Also when constant: a checkpoint restores the optimizer's own learning rate, and a
        # resume that changes it (a PBT mutation, rlplat/tune_trial.py) must win.
        self._optimizer.learning_rate = lr
        return {"charts/epsilon": self.cfg.epsilon.value(env_steps), "charts/learning_rate": lr}

    # ---------------------------------------------------------------- learning
    def _train_graph(self, obs, action, reward, next_obs, discount, weights):
        """One gradient step on a [B] minibatch, split across the strategy's replicas."""
        args = (obs, action, reward, next_obs, discount, weights)
        loss, td_error = self._strategy.run(self._replica_train, args=args)
        # Each replica's loss is its share of the minibatch mean (divided by the global B).
        loss = self._strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        td_error = self._strategy.gather(td_error, axis=0)  # contiguous slices: B's order
        # What DqnAgent._train does after its step, here once for all replicas.
        self._train_step.assign_add(1)
        self._agent._update_target()
        q, _ = self._q(obs, training=False)
        q_taken = tf.gather(q, action, batch_dims=1)
        return {"loss": loss, "q_mean": tf.reduce_mean(q_taken), "td_error": tf.abs(td_error)}

    def _replica_train(self, obs, action, reward, next_obs, discount, weights):
        obs, action, reward, next_obs, discount, weights = replica_slice(
            obs, action, reward, next_obs, discount, weights
        )
        # A [B, 2] trajectory: step 0 carries (obs, action, reward, discount), step 1 the
        # next observation. MID step types: DqnAgent masks transitions that start at LAST.
        mid = tf.fill(tf.shape(reward), ts.StepType.MID)
        experience = trajectory.Trajectory(
            step_type=tf.stack([mid, mid], axis=1),
            observation=tf.stack([obs, next_obs], axis=1),
            action=tf.stack([action, action], axis=1),
            policy_info=(),
            next_step_type=tf.stack([mid, mid], axis=1),
            reward=tf.stack([reward, tf.zeros_like(reward)], axis=1),
            discount=tf.stack([discount, tf.ones_like(discount)], axis=1),
        )
        loss_info = self._agent.train(experience, weights=weights)
        return loss_info.loss, tf.reshape(loss_info.extra.td_error, [-1])

    def _train_phase(self, obs, action, reward, next_obs, discount, weights):
        # K sequential gradient steps in one graph (inputs are [K, B, ...]): one Python
        # call per training phase instead of per step. benchmarks/learner_step.py: 5.8 ms
        # per update with a call per step, 2.0 ms in a phase, 1.1 ms with XLA ([256, 256]).
        k = tf.shape(reward)[0]

        def body(i, loss, q_mean, td):
            out = self._train_graph(
                obs[i], action[i], reward[i], next_obs[i], discount[i], weights[i]
            )
            return i + 1, loss + out["loss"], q_mean + out["q_mean"], td.write(i, out["td_error"])

        _, loss, q_mean, td = tf.while_loop(
            lambda i, *_: i < k,
            body,
            (tf.constant(0), tf.constant(0.0), tf.constant(0.0), tf.TensorArray(tf.float32, k)),
        )
        n = tf.cast(k, tf.float32)
        return {"loss": loss / n, "q_mean": q_mean / n, "td_error": td.stack()}

    def train(self, batch: Transitions, weights: np.ndarray | None = None) -> TrainResult:
        """`batch` is [K, B, ...]: K gradient steps on K minibatches, in order."""
        if batch.reward.shape[1] % self._strategy.num_replicas_in_sync:
            raise ConfigError(
                f"train.batch_size: {batch.reward.shape[1]} does not split evenly across the "
                f"learner's {self._strategy.num_replicas_in_sync} devices (learner.devices)"
            )
        if weights is None:
            weights = np.ones(batch.reward.shape, np.float32)
        obs_dtype = self._obs_dtype.as_numpy_dtype
        out = self._train_fn(
            tf.convert_to_tensor(np.asarray(batch.obs, obs_dtype)),
            tf.convert_to_tensor(batch.action, tf.int64),
            tf.convert_to_tensor(batch.reward, tf.float32),
            tf.convert_to_tensor(np.asarray(batch.next_obs, obs_dtype)),
            tf.convert_to_tensor(batch.discount, tf.float32),
            tf.convert_to_tensor(weights, tf.float32),
        )
        self._policy_stale = True
        return TrainResult(
            metrics={
                "losses/td_loss": float(out["loss"]),
                "losses/q_values": float(out["q_mean"]),
            },
            td_errors=out["td_error"].numpy(),
        )

    @property
    def train_steps(self) -> int:
        return int(self._train_step.numpy())

    # ------------------------------------------------------- weights and saving
    def weight_variables(self) -> dict[str, tf.Variable]:
        return self._weights

    def checkpoint_items(self) -> dict[str, Any]:
        return {
            "q_network": self._q,
            "target_q_network": self._agent._target_q_network,
            "optimizer": self._optimizer,
            "train_step": self._train_step,
        }

    def extra_state(self) -> dict[str, Any]:
        return {"rng": self._policy.rng.bit_generator.state}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "rng" in state:
            self._policy.rng.bit_generator.state = state["rng"]

    def on_restore(self) -> None:
        self._policy_stale = True

    def serving_module(self) -> tf.Module:
        q = float32_copy(self._q) if self.mixed_precision else self._q
        return _QServing(q, self._obs_shape, self._obs_dtype)


class _ReplicaTrain:
    """DqnAgent._train (TF-Agents 0.19) for one replica of `learner.strategy` (or the only
    one): gradients are summed over replicas before they are clipped (TF-Agents clips each
    replica's own), so N replicas take the one-device step. With `loss_scaled` (a float16
    torso; `_optimizer` is then a LossScaleOptimizer, agents.networks.loss_scaled) the loss
    is scaled inside the tape and the gradients unscaled before clipping. The step counter
    and target update are the caller's (DQNAgent._train_graph), once per step, not per
    replica."""

    loss_scaled = False

    def _train(self, experience, weights):
        with tf.GradientTape() as tape:
            loss_info = self._loss(
                experience, td_errors_loss_fn=self._td_errors_loss_fn, gamma=self._gamma,
                reward_scale_factor=self._reward_scale_factor, weights=weights, training=True,
            )  # fmt: skip
            loss = loss_info.loss
            if self.loss_scaled:
                loss = self._optimizer.get_scaled_loss(loss)
        tf.debugging.check_numerics(loss_info.loss, "Loss is inf or nan")
        variables = self._q_network.trainable_weights
        grads = tape.gradient(loss, variables)
        if self.loss_scaled:
            grads = self._optimizer.get_unscaled_gradients(grads)
        grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        grads_and_vars = list(zip(grads, variables, strict=True))
        if self._gradient_clipping is not None:
            grads_and_vars = eager_utils.clip_gradient_norms(
                grads_and_vars, self._gradient_clipping
            )
        # Loss-scaled: non-finite gradients skip the step and halve the scale.
        self._optimizer.apply_gradients(grads_and_vars, skip_gradients_aggregation=True)
        return loss_info


class _ReplicaDqn(_ReplicaTrain, dqn_agent.DqnAgent):
    pass


class _ReplicaDdqn(_ReplicaTrain, dqn_agent.DdqnAgent):
    pass


class _QServing(tf.Module):
    """serving_default: observations (float32, or a CNN's uint8 pixels) → greedy `actions`
    and raw `q_values`."""

    def __init__(self, q_network: tf.Module, obs_shape: tuple[int, ...], dtype: tf.DType):
        super().__init__(name="rlplat_dqn")
        self.q_network = q_network
        spec = tf.TensorSpec([None, *obs_shape], dtype, name="observations")
        self.serving_default = tf.function(self._serve, input_signature=[spec])

    def _serve(self, observations: tf.Tensor) -> dict[str, tf.Tensor]:
        q, _ = self.q_network(observations, training=False)
        return {"actions": tf.argmax(q, axis=-1), "q_values": q}
