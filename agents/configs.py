"""Each algorithm's hyperparameters (pydantic, no TensorFlow: loading a config stays fast)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from rlplat.config import AgentConfig, PosInt, Strict

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class MLPConfig(Strict):
    hidden: list[PosInt] = Field(default_factory=lambda: [64, 64], min_length=1)
    activation: Literal["relu", "tanh"] = "relu"


class EpsilonSchedule(Strict):
    """Linear decay from `start` to `end` over the first `decay_env_steps` env steps."""

    start: Probability = 1.0
    end: Probability = 0.05
    decay_env_steps: PosInt = 10_000

    def value(self, env_steps: int) -> float:
        frac = min(1.0, env_steps / self.decay_env_steps)
        return self.start + frac * (self.end - self.start)


class TargetUpdate(Strict):
    """Hard copy every `period` train steps (tau=1), or Polyak averaging with `tau` < 1."""

    period: PosInt = 500
    tau: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0


class DQNConfig(AgentConfig):
    """DQN with fixed Q targets; Double, Dueling and n-step are flags that combine
    (TF-Agents DqnAgent / DdqnAgent + QNetwork or a dueling network)."""

    on_policy: ClassVar[bool] = False
    type: Literal["dqn"]
    network: MLPConfig = MLPConfig()
    double: bool = Field(False, description="target = Q_target(s', argmax_a Q_online(s', a))")
    dueling: bool = Field(False, description="Q = V + A - mean(A)")
    n_step: Annotated[int, Field(ge=1, le=100)] = 1
    learning_rate: Annotated[float, Field(gt=0.0)] = 1e-3
    lr_schedule: Literal["constant", "linear"] = Field(
        "constant", description="linear: decay to 0 over train.env_steps"
    )
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.99
    target_update: TargetUpdate = TargetUpdate()
    loss: Literal["huber", "mse"] = "huber"
    gradient_clipping: Annotated[float, Field(gt=0.0)] | None = 10.0
    epsilon: EpsilonSchedule = EpsilonSchedule()
    eval_epsilon: Probability = 0.0
    jit_compile: bool = Field(True, description="XLA-compile the training phase")

    @model_validator(mode="after")
    def _check(self) -> DQNConfig:
        if self.epsilon.end > self.epsilon.start:
            raise ValueError("agent.epsilon: end must be <= start")
        return self


class PPOConfig(AgentConfig):
    """PPO with clipping, GAE(lambda), minibatch epochs and observation normalisation."""

    on_policy: ClassVar[bool] = True
    type: Literal["ppo"]
    network: MLPConfig = MLPConfig(hidden=[64, 64], activation="tanh")
    learning_rate: Annotated[float, Field(gt=0.0)] = 3e-4
    lr_schedule: Literal["constant", "linear"] = "linear"
    gamma: Annotated[float, Field(gt=0.0, le=1.0)] = 0.99
    gae_lambda: Probability = 0.95
    clip_range: Annotated[float, Field(gt=0.0)] = 0.2
    clip_schedule: Literal["constant", "linear"] = "constant"
    clip_value: Annotated[float, Field(gt=0.0)] | None = Field(
        None, description="clip the value update around the old value (PPO2-style)"
    )
    epochs: PosInt = 4
    minibatch_size: PosInt = 64
    ent_coef: Annotated[float, Field(ge=0.0)] = 0.0
    vf_coef: Annotated[float, Field(ge=0.0)] = 0.5
    max_grad_norm: Annotated[float, Field(gt=0.0)] = 0.5
    normalize_advantages: bool = True
    normalize_observations: bool = True
    log_std_init: float = Field(0.0, description="Box actions: initial log std")
