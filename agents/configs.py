"""Each algorithm's hyperparameters (pydantic, no TensorFlow: loading a config stays fast)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from rlplat.config_base import AgentConfig, PosInt, Strict

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class MLPConfig(Strict):
    type: Literal["mlp"] = "mlp"
    hidden: list[PosInt] = Field(default_factory=lambda: [64, 64], min_length=1)
    activation: Literal["relu", "tanh"] = "relu"


class NatureCNNConfig(Strict):
    """The Nature-DQN torso (Mnih et al. 2015): conv 32x8x8/4, 64x4x4/2, 64x3x3/1, then a
    dense layer, on [H, W, C] observations (uint8 pixels are scaled by 1/255 in the graph)."""

    type: Literal["nature_cnn"]
    dense: PosInt = 512


def _network_type(value: Any) -> str:
    return value.get("type", "mlp") if isinstance(value, dict) else getattr(value, "type", "mlp")


# Which network an agent gets: `agent.network.type` (default mlp, so existing configs read
# as before), or when `agent.network` is not given at all, inferred from the observation
# space (agents.networks.resolve_network). Tagged: an error names one network's fields.
NetworkConfig = Annotated[
    Annotated[MLPConfig, Tag("mlp")] | Annotated[NatureCNNConfig, Tag("nature_cnn")],
    Discriminator(_network_type),
]


class EpsilonSchedule(Strict):
    """Linear decay from `start` to `end` over the first `decay_env_steps` env steps."""

    start: Probability = Field(1.0, description="exploration at the first env step")
    end: Probability = Field(0.05, description="exploration after decay_env_steps")
    decay_env_steps: PosInt = Field(10_000, description="env steps of the linear decay")
    actor_exponent: Annotated[float, Field(ge=0.0)] = Field(
        7.0,
        description="Ape-X: collector actor i of N explores with "
        "epsilon^(1 + actor_exponent * i / (N - 1)); 0 = all use the schedule",
    )

    def value(self, env_steps: int) -> float:
        frac = min(1.0, env_steps / self.decay_env_steps)
        return self.start + frac * (self.end - self.start)


class TargetUpdate(Strict):
    """Hard copy every `period` train steps (tau=1), or Polyak averaging with `tau` < 1."""

    period: PosInt = Field(500, description="train steps between target-network updates")
    tau: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        1.0, description="1: hard copy; below 1: Polyak averaging"
    )


class DQNConfig(AgentConfig):
    """DQN with fixed Q targets; Double, Dueling and n-step are flags that combine
    (TF-Agents DqnAgent / DdqnAgent + QNetwork or a dueling network)."""

    on_policy: ClassVar[bool] = False
    action_spaces: ClassVar[tuple[str, ...]] = ("Discrete",)  # one Q-value per action
    type: Literal["dqn"]
    network: NetworkConfig = MLPConfig()
    double: bool = Field(False, description="target = Q_target(s', argmax_a Q_online(s', a))")
    dueling: bool = Field(False, description="Q = V + A - mean(A)")
    n_step: Annotated[int, Field(ge=1, le=100)] = Field(
        1, description="n-step returns (1: one-step TD targets)"
    )
    learning_rate: Annotated[float, Field(gt=0.0)] = Field(1e-3, description="Adam's learning rate")
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant", description="linear: decay to 0 over train.env_steps"
    )
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = Field(0.99, description="discount")
    target_update: TargetUpdate = TargetUpdate()
    loss: Literal["huber", "mse"] = Field("huber", description="on the TD error")
    gradient_clipping: Annotated[float, Field(gt=0.0)] | None = Field(
        10.0, description="global gradient-norm clip (null: none)"
    )
    epsilon: EpsilonSchedule = EpsilonSchedule()
    eval_epsilon: Probability = Field(0.0, description="exploration of the eval policy (0: greedy)")
    jit_compile: bool | None = Field(
        None,
        description="XLA-compile the training phase; unset: yes, except a conv net on a "
        "machine without a GPU (XLA's CPU convolutions made a Nature-CNN step ~17x slower: "
        "benchmarks/cnn_learner.py)",
    )

    def split_batches(self, exp: Any) -> dict[str, int]:
        return {"train.batch_size": exp.train.batch_size}

    @model_validator(mode="after")
    def _check(self) -> DQNConfig:
        if self.epsilon.end > self.epsilon.start:
            raise ValueError("agent.epsilon: end must be <= start")
        return self


class PPOConfig(AgentConfig):
    """PPO with clipping, GAE(lambda), minibatch epochs and observation normalisation."""

    on_policy: ClassVar[bool] = True
    type: Literal["ppo"]
    network: NetworkConfig = MLPConfig(hidden=[64, 64], activation="tanh")
    learning_rate: Annotated[float, Field(gt=0.0)] = Field(3e-4, description="Adam's learning rate")
    lr_schedule: Literal["constant", "linear"] = Field(
        "linear", description="linear: decay to 0 over train.env_steps"
    )
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = Field(0.99, description="discount")
    gae_lambda: Probability = Field(0.95, description="GAE's lambda")
    clip_range: Annotated[float, Field(gt=0.0)] = Field(
        0.2, description="PPO's clip epsilon on the probability ratio"
    )
    clip_schedule: Literal["constant", "linear"] = Field(
        "constant", description="linear: decay the clip range to 0 over train.env_steps"
    )
    clip_value: Annotated[float, Field(gt=0.0)] | None = Field(
        None, description="clip the value update around the old value (PPO2-style)"
    )
    epochs: PosInt = Field(4, description="passes over each rollout")
    minibatch_size: PosInt | None = Field(64, description="None: the whole rollout")
    ent_coef: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="weight of the entropy bonus"
    )
    vf_coef: Annotated[float, Field(ge=0.0)] = Field(0.5, description="weight of the value loss")
    max_grad_norm: Annotated[float, Field(gt=0.0)] = Field(
        0.5, description="global gradient-norm clip"
    )
    normalize_advantages: bool = Field(True, description="per minibatch")
    normalize_observations: bool = Field(
        True, description="running mean and std of observations (exported with the policy)"
    )
    log_std_init: float = Field(0.0, description="Box actions: initial log std")

    def split_batches(self, exp: Any) -> dict[str, int]:
        return rollout_minibatch(self.minibatch_size, exp)


class ReinforceConfig(AgentConfig):
    """REINFORCE: discounted returns-to-go, normalised, times grad log pi; optionally
    minus a learned value baseline (which also completes episodes cut by a rollout's
    end or a time limit)."""

    on_policy: ClassVar[bool] = True
    type: Literal["reinforce"]
    network: NetworkConfig = MLPConfig(hidden=[64, 64], activation="tanh")
    learning_rate: Annotated[float, Field(gt=0.0)] = Field(1e-3, description="Adam's learning rate")
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant", description="linear: decay to 0 over train.env_steps"
    )
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = Field(0.99, description="discount")
    baseline: bool = Field(False, description="learn V(s) and use G - V(s) as advantage")
    vf_coef: Annotated[float, Field(ge=0.0)] = Field(
        0.5, description="weight of the value-baseline loss"
    )
    ent_coef: Annotated[float, Field(ge=0.0)] = Field(
        0.0, description="weight of the entropy bonus"
    )
    max_grad_norm: Annotated[float, Field(gt=0.0)] = Field(
        1.0, description="global gradient-norm clip"
    )
    normalize_advantages: bool = Field(True, description="per update")
    normalize_observations: bool = True
    log_std_init: float = 0.0

    def split_batches(self, exp: Any) -> dict[str, int]:
        return rollout_minibatch(None, exp)  # one full-batch step (as_ppo)

    def as_ppo(self) -> PPOConfig:
        """The same update as one full-batch PPO step: at ratio 1 the clipped objective's
        gradient is exactly A * grad log pi, with lambda = 1 returns-to-go."""
        # Only a network the user gave: an unset one stays unset (inferred from the env).
        given = {"network": self.network} if "network" in self.model_fields_set else {}
        return PPOConfig(
            type="ppo", **given, learning_rate=self.learning_rate,
            lr_schedule=self.lr_schedule, gamma=self.gamma, gae_lambda=1.0,
            clip_range=0.2, epochs=1, minibatch_size=None,
            ent_coef=self.ent_coef, vf_coef=self.vf_coef if self.baseline else 0.0,
            max_grad_norm=self.max_grad_norm, normalize_advantages=self.normalize_advantages,
            normalize_observations=self.normalize_observations, log_std_init=self.log_std_init,
        )  # fmt: skip


def rollout_minibatch(minibatch_size: int | None, exp: Any) -> dict[str, int]:
    """An on-policy minibatch: `minibatch_size` rows of the [T, N] rollout (all of it when
    None or larger), named by the settings that make it."""
    c = exp.collect
    rollout = c.rollout_length * c.envs_per_actor * max(1, c.num_actors)
    if minibatch_size is not None and minibatch_size < rollout:
        return {"agent.minibatch_size": minibatch_size}
    return {"collect.rollout_length x envs_per_actor x num_actors": rollout}
