"""PPO (clip) on TF-Agents networks: an EncodingNetwork actor torso with a logits or
Gaussian-mean head, and a ValueNetwork critic, built from agents.netspec's policy_spec and
value_spec (collectors act with the policy spec's executor: agents.actors.forward_pass).

What TF-Agents' PPOClipAgent does not give: minibatches (it trains full-batch epochs),
GAE that bootstraps time-limit truncation (it treats truncation as termination), and
speed. So the update is one tf.function per rollout that runs epochs x minibatches in a
while loop; advantages come from agents.advantages.gae; acting is numpy.

With `agent.network.type: nature_cnn` actor and critic share one Nature torso
(agents.networks.NatureTorso: TF-Agents' ActorDistributionNetwork and ValueNetwork each own
their torso, so the policy and value heads here are two Dense layers on one torso's
features, as in CleanRL's ppo_atari); pixels stay uint8 up to the graph, are not
normalised (the torso scales by 1/255), and actors act in TF (agents.tf_actors).

Otherwise observations are normalised by running statistics kept in tf.Variables: checkpointed,
and part of the exported graph, so a served policy takes raw observations. The stats are
updated after each training phase, so the policy that collected a rollout and the one
whose log-probs are the PPO "old" ones are exactly the same.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import tensorflow as tf
from tf_agents.networks import value_network

from rlplat.agents.actors import StochasticPolicy
from rlplat.agents.advantages import gae
from rlplat.agents.base import Agent, TrainResult
from rlplat.agents.configs import NatureCNNConfig, PPOConfig
from rlplat.agents.netspec import OBS_MEAN, OBS_VAR, policy_spec, value_spec
from rlplat.agents.networks import (
    ACTIVATIONS,
    NatureTorso,
    float32_copy,
    loss_scaled,
    mlp_torso,
    named_variables,
    normalize,
    resolve_network,
)
from rlplat.agents.replicas import replica_slice
from rlplat.envs import EnvSpaces
from rlplat.errors import ConfigError
from rlplat.experience.data import Transitions

_LOG_2PI = math.log(2.0 * math.pi)


class PPOAgent(Agent):
    on_policy = True

    def __init__(self, cfg: PPOConfig, spaces: EnvSpaces, seed: int = 0, uses_values: bool = True,
                 mixed_precision: bool = False):  # fmt: skip
        """`uses_values=False` (REINFORCE without a baseline): advantages are Monte-Carlo
        returns; the critic is never evaluated. `mixed_precision`: a CNN torso computes in
        float16 (heads, log-probs and losses stay float32), with dynamic loss scaling."""
        self.cfg = cfg
        self.uses_values = uses_values
        self.gamma = cfg.gamma
        self._discrete = isinstance(spaces.action, gym.spaces.Discrete)
        self._obs_shape = tuple(spaces.observation.shape)
        self._action_space = spaces.action
        n_out = int(spaces.action.n) if self._discrete else int(np.prod(spaces.action.shape))
        net = resolve_network(cfg, spaces.observation)
        self._cnn = isinstance(net, NatureCNNConfig)
        self.mixed_precision = mixed_precision and self._cnn
        # A running mean over raw pixels is wrong (and slow): the CNN scales them itself.
        self._normalize_on = cfg.normalize_observations and not self._cnn
        self._obs_dtype = tf.as_dtype(spaces.observation.dtype) if self._cnn else tf.float32
        # One description each for the policy (what collectors run) and the value network.
        pixels = self._obs_dtype == tf.uint8
        self.network_spec = policy_spec(net, n_out, self._normalize_on, pixels)
        self._value_spec = value_spec(net, self._normalize_on, pixels)
        self._log_std = tf.Variable(
            np.full(n_out, cfg.log_std_init, np.float32), name="log_std",
            trainable=not self._discrete,
        )  # fmt: skip
        if self._cnn:
            self._build_cnn()
        else:
            self._build_mlp()
        self._obs_mean = tf.Variable(np.zeros(self._obs_shape, np.float32), trainable=False)
        self._obs_var = tf.Variable(np.ones(self._obs_shape, np.float32), trainable=False)
        self._obs_count = tf.Variable(1e-4, dtype=tf.float64, trainable=False)
        # Built under learner.strategy's scope (rlplat/learner.py: learner_scope), variables
        # are mirrored and each minibatch is split evenly across the replicas.
        self._strategy = tf.distribute.get_strategy()
        replicas = self._strategy.num_replicas_in_sync
        if cfg.minibatch_size is not None and cfg.minibatch_size % replicas:
            raise ConfigError(
                f"agent.minibatch_size: {cfg.minibatch_size} does not split evenly across "
                f"the learner's {replicas} devices (learner.devices)"
            )
        self._optimizer = tf.keras.optimizers.Adam(learning_rate=cfg.learning_rate, epsilon=1e-5)
        self._optimizer.build(self._vars)
        # What applies the gradients; `_optimizer` is what is checkpointed (one format).
        self._apply = loss_scaled(self._optimizer) if self.mixed_precision else self._optimizer
        if self._normalize_on:
            self._weights.update({OBS_MEAN: self._obs_mean, OBS_VAR: self._obs_var})
        self._train_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="train_step")
        self._clip = cfg.clip_range
        sig = dict(autograph=False, reduce_retracing=True)
        self._values_fn = tf.function(self._values, **sig)
        # No XLA here: with the minibatch gathers it recompiled on every call (seconds per
        # rollout instead of a fraction of one, seen while building this).
        self._update_fn = tf.function(self._update, **sig)
        self._policy = self.actor_policy(0, 1, seed)
        self._policy_stale = True

    def _build_mlp(self) -> None:
        """Separate actor and critic MLPs (`actor/layer{i}`, `critic/layer{i}`)."""
        spec, critic = self.network_spec, self._value_spec
        obs_spec = tf.TensorSpec(self._obs_shape, tf.float32)
        ortho = tf.compat.v1.keras.initializers.Orthogonal  # fresh values per layer
        self._torso = mlp_torso(obs_spec, spec, kernel_initializer=ortho(math.sqrt(2)))
        self._head = tf.keras.layers.Dense(spec.outputs, kernel_initializer=ortho(0.01),
                                           name="policy")  # fmt: skip
        self._critic = value_network.ValueNetwork(
            obs_spec, fc_layer_params=critic.hidden, activation_fn=ACTIVATIONS[critic.activation],
            kernel_initializer=ortho(math.sqrt(2)),
        )  # fmt: skip
        zeros = tf.zeros((1, *self._obs_shape))
        self._head(self._torso(zeros)[0])
        self._critic(zeros)
        actor_vars = [*self._torso.trainable_variables, *self._head.trainable_variables]
        self._vars = [
            *actor_vars,
            *([] if self._discrete else [self._log_std]),
            *self._critic.trainable_variables,
        ]
        self._weights = {
            **named_variables(spec.layers, actor_vars),
            **({} if self._discrete else {"log_std": self._log_std}),
            **named_variables(critic.layers, self._critic.trainable_variables),
        }

    def _build_cnn(self) -> None:
        """One Nature torso, a `policy` and a `value` Dense head on its features."""
        spec = self.network_spec
        ortho = tf.compat.v1.keras.initializers.Orthogonal
        obs_spec = tf.TensorSpec(self._obs_shape, self._obs_dtype)
        self._torso = NatureTorso(
            obs_spec, spec.hidden[-1], kernel_initializer=ortho(math.sqrt(2)),
            mixed_precision=self.mixed_precision, convs=spec.convs,
        )  # fmt: skip
        self._head = tf.keras.layers.Dense(spec.outputs, kernel_initializer=ortho(0.01),
                                           name="policy")  # fmt: skip
        self._value_head = tf.keras.layers.Dense(1, kernel_initializer=ortho(1.0), name="value")
        self._critic = None
        hidden, _ = self._torso(tf.zeros((1, *self._obs_shape), self._obs_dtype))
        self._head(hidden)
        self._value_head(hidden)
        policy_vars = [*self._torso.trainable_variables, *self._head.trainable_variables]
        self._vars = [
            *policy_vars,
            *([] if self._discrete else [self._log_std]),
            *self._value_head.trainable_variables,
        ]
        self._weights = {
            **named_variables(spec.layers, policy_vars),
            **named_variables(self._value_spec.heads, self._value_head.trainable_variables),
            **({} if self._discrete else {"log_std": self._log_std}),
        }

    # ------------------------------------------------------------------ policy
    def _normalize(self, obs: tf.Tensor) -> tf.Tensor:
        if not self._normalize_on:
            return obs
        return normalize(obs, self._obs_mean, self._obs_var)

    def _policy_out(self, nobs: tf.Tensor) -> tf.Tensor:
        """Logits (Discrete) or Gaussian means (Box) for normalised observations."""
        hidden, _ = self._torso(nobs)
        return self._head(hidden)

    def _forward(self, nobs: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(policy outputs, values): a shared CNN torso runs once for both."""
        if self._critic is not None:
            return self._policy_out(nobs), self._critic(nobs)[0]
        hidden, _ = self._torso(nobs)
        return self._head(hidden), tf.squeeze(self._value_head(hidden), -1)

    def _log_prob_entropy(self, out: tf.Tensor, actions: tf.Tensor):
        if self._discrete:
            logp_all = tf.nn.log_softmax(out)
            logp = tf.gather(logp_all, tf.cast(actions, tf.int32), batch_dims=1)
            entropy = -tf.reduce_sum(tf.exp(logp_all) * logp_all, axis=-1)
            return logp, entropy
        std = tf.exp(self._log_std)
        z = (tf.reshape(actions, tf.shape(out)) - out) / std
        logp = tf.reduce_sum(-0.5 * tf.square(z) - self._log_std - 0.5 * _LOG_2PI, axis=-1)
        entropy = tf.reduce_sum(self._log_std + 0.5 * (_LOG_2PI + 1.0)) * tf.ones_like(logp)
        return logp, entropy

    def actor_policy(self, index: int = 0, num_actors: int = 1, seed: int = 0) -> StochasticPolicy:
        return StochasticPolicy(
            self.weight_spec(), self.network_spec, self._discrete, self._action_space.shape, seed
        )

    def update_schedules(self, env_steps: int, progress: float) -> dict[str, float]:
        remaining = max(0.0, 1.0 - progress)
        lr = self.cfg.learning_rate * (remaining if self.cfg.lr_schedule == "linear" else 1.0)
        self._optimizer.learning_rate = lr
        self._clip = self.cfg.clip_range * (
            remaining if self.cfg.clip_schedule == "linear" else 1.0
        )
        return {"charts/learning_rate": lr, "charts/clip_range": self._clip}

    # ---------------------------------------------------------------- learning
    def _values(self, obs: tf.Tensor) -> tf.Tensor:
        return self._forward(self._normalize(obs))[1]

    def _losses(self, out, v, actions, adv, ret, v_old, logp_old, clip):
        """(clipped policy loss, value loss, entropy, approx KL, clip fraction)."""
        logp, entropy = self._log_prob_entropy(out, actions)
        log_ratio = logp - logp_old
        ratio = tf.exp(log_ratio)
        clipped = tf.clip_by_value(ratio, 1.0 - clip, 1.0 + clip)
        pg_loss = -tf.reduce_mean(tf.minimum(ratio * adv, clipped * adv))
        v_loss = tf.square(v - ret)
        if self.cfg.clip_value is not None:
            cv = self.cfg.clip_value
            v_loss = tf.maximum(
                v_loss, tf.square(v_old + tf.clip_by_value(v - v_old, -cv, cv) - ret)
            )
        approx_kl = tf.reduce_mean((ratio - 1.0) - log_ratio)
        clip_frac = tf.reduce_mean(tf.cast(tf.abs(ratio - 1.0) > clip, tf.float32))
        return [pg_loss, 0.5 * tf.reduce_mean(v_loss), tf.reduce_mean(entropy), approx_kl,
                clip_frac]  # fmt: skip

    def _update(self, obs, actions, advantages, returns, old_values, clip, behavior_logp=None):
        """The epochs on one rollout: the loss terms' means, and log(pi / behaviour) at the
        start. `behavior_logp`: the collecting policy's log-probabilities when it is older
        than the learner's (`collect.overlap`); None: the learner's own (on-policy)."""
        cfg = self.cfg
        n = tf.shape(advantages)[0]
        mb = n if cfg.minibatch_size is None else tf.minimum(cfg.minibatch_size, n)
        per_epoch = n // mb
        nobs = self._normalize(obs)
        start_logp, _ = self._log_prob_entropy(self._policy_out(nobs), actions)
        old_logp = start_logp if behavior_logp is None else behavior_logp
        perms = tf.stack([tf.random.shuffle(tf.range(n)) for _ in range(cfg.epochs)])
        total = cfg.epochs * per_epoch
        data = (nobs, actions, advantages, returns, old_values, old_logp)

        def body(i, sums):
            start = (i % per_epoch) * mb
            idx = perms[i // per_epoch, start : start + mb]
            o, a, adv, ret, v_old, lp_old = (tf.gather(x, idx) for x in data)
            if cfg.normalize_advantages:  # over the whole minibatch, before it is split
                adv = (adv - tf.reduce_mean(adv)) / (tf.math.reduce_std(adv) + 1e-8)
            terms = self._strategy.run(
                self._replica_step, args=(o, a, adv, ret, v_old, lp_old, clip)
            )
            # Equal slices: the mean of the replicas' means is the minibatch's mean.
            terms = self._strategy.reduce(tf.distribute.ReduceOp.MEAN, terms, axis=None)
            return i + 1, sums + terms

        _, sums = tf.while_loop(lambda i, _: i < total, body, (tf.constant(0), tf.zeros(5)))
        self._train_step.assign_add(tf.cast(total, tf.int64))
        return sums / tf.cast(tf.maximum(total, 1), tf.float32), start_logp - old_logp

    def _replica_step(self, o, a, adv, ret, v_old, lp_old, clip):
        """One gradient step on this replica's slice of the minibatch (all of it with no
        strategy). Gradients are summed over replicas before clipping, so the step equals
        the one-device step on the whole minibatch."""
        cfg = self.cfg
        ctx = tf.distribute.get_replica_context()
        k = ctx.num_replicas_in_sync
        o, a, adv, ret, v_old, lp_old = replica_slice(o, a, adv, ret, v_old, lp_old)
        with tf.GradientTape() as tape:
            out, v = self._forward(o)
            terms = self._losses(out, v, a, adv, ret, v_old, lp_old, clip)
            # / k: the replicas' gradients are summed below (a mean over the minibatch).
            loss = (terms[0] - cfg.ent_coef * terms[2] + cfg.vf_coef * terms[1]) / k
            if self.mixed_precision:  # float16 gradients would underflow unscaled
                loss = self._apply.get_scaled_loss(loss)
        grads = tape.gradient(loss, self._vars)
        if self.mixed_precision:
            grads = self._apply.get_unscaled_gradients(grads)
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        grads, _ = tf.clip_by_global_norm(grads, cfg.max_grad_norm)
        # Loss-scaled: non-finite gradients skip the step and halve the scale.
        self._apply.apply_gradients(
            zip(grads, self._vars, strict=True), skip_gradients_aggregation=True
        )
        return tf.stack(terms)

    def train(self, batch: Transitions, weights: np.ndarray | None = None) -> TrainResult:
        """`batch` is one rollout, [T, N, ...] (time, env), with `last` flags."""
        t, n = batch.reward.shape
        replicas, mb = (
            self._strategy.num_replicas_in_sync,
            min(self.cfg.minibatch_size or t * n, t * n),
        )
        if mb % replicas:
            raise ConfigError(
                f"a minibatch of {mb} does not split evenly across the learner's {replicas} "
                "devices (agent.minibatch_size, collect.rollout_length x envs_per_actor)"
            )
        obs = batch.obs.reshape(t * n, *self._obs_shape)
        next_obs = batch.next_obs.reshape(t * n, *self._obs_shape)
        if self._cnn:  # pixels go to the graph as they are (uint8), however they came
            obs, next_obs = (np.asarray(o, self._obs_dtype.as_numpy_dtype) for o in (obs, next_obs))
        if self.uses_values:
            values = self._values_fn(tf.constant(np.concatenate([obs, next_obs]))).numpy()
        else:  # plain REINFORCE: Monte-Carlo returns, no baseline
            values = np.zeros(2 * t * n, np.float32)
        v, next_v = values[: t * n].reshape(t, n), values[t * n :].reshape(t, n)
        adv, ret = gae(
            batch.reward, v, next_v, batch.discount == 0.0, batch.last,
            self.cfg.gamma, self.cfg.gae_lambda,
        )  # fmt: skip
        actions = batch.action.reshape(t * n, *batch.action.shape[2:])
        behavior = None if batch.log_prob is None else tf.constant(batch.log_prob.ravel())
        stats, log_ratio = self._update_fn(
            tf.constant(obs),
            tf.constant(actions, tf.int64 if self._discrete else tf.float32),
            tf.constant(adv.ravel()),
            tf.constant(ret.ravel()),
            tf.constant(v.ravel().astype(np.float32)),
            tf.constant(self._clip, tf.float32),
            behavior,
        )
        stats = stats.numpy()
        self._update_obs_stats(obs)
        self._policy_stale = True
        explained = 1.0 - np.var(ret - v) / (np.var(ret) + 1e-8)
        metrics = {
            "losses/policy_loss": float(stats[0]),
            "losses/value_loss": float(stats[1]),
            "losses/entropy": float(stats[2]),
            "losses/approx_kl": float(stats[3]),
            "losses/clip_fraction": float(stats[4]),
            "losses/explained_variance": float(explained),
        }
        if not self._discrete:  # a categorical policy has no std (its log_std is unused)
            metrics["charts/policy_std"] = float(np.exp(self._log_std.numpy()).mean())
        if behavior is not None:
            metrics.update(importance_ratio_stats(log_ratio.numpy(), self._clip))
        return TrainResult(metrics=metrics)

    def _update_obs_stats(self, obs: np.ndarray) -> None:
        """Parallel (Chan et al.) update of the running mean/variance."""
        if not self._normalize_on:
            return
        b_mean, b_var, b_n = obs.mean(0), obs.var(0), len(obs)
        mean, var, n = self._obs_mean.numpy(), self._obs_var.numpy(), self._obs_count.numpy()
        delta, total = b_mean - mean, n + b_n
        new_mean = mean + delta * b_n / total
        m2 = var * n + b_var * b_n + delta**2 * n * b_n / total
        self._obs_mean.assign(new_mean.astype(np.float32))
        self._obs_var.assign((m2 / total).astype(np.float32))
        self._obs_count.assign(total)

    @property
    def train_steps(self) -> int:
        return int(self._train_step.numpy())

    # ------------------------------------------------------- weights and saving
    def weight_variables(self) -> dict[str, tf.Variable]:
        return self._weights

    def checkpoint_items(self) -> dict[str, Any]:
        critic = {"critic": self._critic} if self._critic is not None else {}
        return {
            "torso": self._torso,
            "head": self._head,
            **critic,
            **({"value_head": self._value_head} if self._cnn else {}),
            "log_std": self._log_std,
            "obs_mean": self._obs_mean,
            "obs_var": self._obs_var,
            "obs_count": self._obs_count,
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
        return _PolicyServing(self)


class _PolicyServing(tf.Module):
    """serving_default: raw observations → deterministic `actions` (argmax / clipped mean)
    and the distribution's parameters; `sample`: a stochastic action. Normalisation is in
    the graph."""

    def __init__(self, agent: PPOAgent):
        super().__init__(name="rlplat_ppo")
        self.torso = float32_copy(agent._torso) if agent.mixed_precision else agent._torso
        self.head, self.log_std = agent._head, agent._log_std
        self.obs_mean, self.obs_var = agent._obs_mean, agent._obs_var
        self._normalize_on = agent._normalize_on
        self._discrete = agent._discrete
        space = agent._action_space
        if not self._discrete:
            self._low = tf.constant(space.low.ravel(), tf.float32)
            self._high = tf.constant(space.high.ravel(), tf.float32)
        spec = tf.TensorSpec([None, *agent._obs_shape], agent._obs_dtype, name="observations")
        self.serving_default = tf.function(self._deterministic, input_signature=[spec])
        self.sample = tf.function(self._sample, input_signature=[spec])

    def _out(self, observations: tf.Tensor) -> tf.Tensor:
        x = observations
        if self._normalize_on:
            x = normalize(x, self.obs_mean, self.obs_var)
        hidden, _ = self.torso(x)
        return self.head(hidden)

    def _deterministic(self, observations: tf.Tensor) -> dict[str, tf.Tensor]:
        out = self._out(observations)
        if self._discrete:
            return {"actions": tf.argmax(out, axis=-1), "logits": out}
        return {
            "actions": tf.clip_by_value(out, self._low, self._high),
            "mean": out,
            "log_std": tf.broadcast_to(self.log_std, tf.shape(out)),
        }

    def _sample(self, observations: tf.Tensor) -> dict[str, tf.Tensor]:
        out = self._out(observations)
        if self._discrete:
            return {"actions": tf.random.categorical(out, 1, dtype=tf.int64)[:, 0]}
        noise = tf.random.normal(tf.shape(out)) * tf.exp(self.log_std)
        return {"actions": tf.clip_by_value(out + noise, self._low, self._high)}


def importance_ratio_stats(log_ratio: np.ndarray, clip: float) -> dict[str, float]:
    """How far a rollout's collecting policy was from the learner when training on it began
    (pi_learner / pi_collector per step): 1 everywhere when there is no lag."""
    ratio = np.exp(log_ratio.astype(np.float64))
    return {
        "lag/importance_ratio_mean": float(ratio.mean()),
        "lag/importance_ratio_min": float(ratio.min()),
        "lag/importance_ratio_max": float(ratio.max()),
        "lag/outside_clip_range": float(np.mean(np.abs(ratio - 1.0) > clip)),
    }
