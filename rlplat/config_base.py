"""The schema's base types, shared by rlplat.config and the algorithm and environment
packages (agents/configs.py, envs/make.py).

They live apart from rlplat.config because that module imports the agents registry to
validate an `agent:` section: agents importing their base from it would close an import
circle. Nothing here imports anything of rlplat's.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Strict(BaseModel):
    """Unknown keys are errors; configs are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]


class AtariConfig(Strict):
    """The DQN/Nature preprocessing of an ALE game (envs/atari.py). Life-loss terminals
    and reward clipping apply to training envs only; evaluation plays full games and
    reports the unclipped score."""

    noop_max: Annotated[int, Field(ge=0, le=30)] = Field(
        30, description="random no-op frames after each reset (0: none)"
    )
    frame_skip: PosInt = 4  # the observation is the max over the last two frames
    screen_size: PosInt = Field(
        84, description="observations are screen_size x screen_size grayscale"
    )
    stack: PosInt = Field(
        4, description="frames per observation: uint8 [H, W, stack], channels last"
    )
    sticky_actions: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25  # ALE v5's default
    # Press FIRE on reset in games that need it (Breakout); evaluation envs also after
    # each lost life (a deterministic policy that never picks FIRE in the ball-less state
    # would otherwise wait out the time limit).
    fire_reset: bool = True
    fire_on_life_loss: bool = Field(
        False, description="training envs press FIRE after each lost life too (python backend)"
    )
    terminal_on_life_loss: bool = True  # training only
    clip_rewards: bool = True  # training only: rewards clipped to [-1, 1]
    # Collectors' vector env: "python" steps one gymnasium env per slot; "vector" is
    # ale-py's C++ AtariVectorEnv (threaded preprocessing). Evaluation is always "python".
    backend: Literal["python", "vector"] = "python"
    threads: NonNegInt = 0  # the "vector" backend's threads (0: ale-py picks)

    @model_validator(mode="after")
    def _fire_needs_python(self) -> AtariConfig:
        # ale-py's C++ env steps its envs in lockstep: it cannot slip one extra frame into
        # one env, so only the python backend can press FIRE after a lost life.
        if self.fire_on_life_loss and self.backend != "python":
            raise ValueError("fire_on_life_loss needs backend: python")
        return self


class EnvConfig(Strict):
    id: str = Field(description="Gymnasium id (CartPole-v1) or `module:Class`")
    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments for the env's constructor"
    )
    max_episode_steps: PosInt | None = Field(
        None, description="time limit in agent steps (null: the env's own)"
    )
    atari: AtariConfig | None = None

    @model_validator(mode="after")
    def _atari_needs_ale_id(self) -> EnvConfig:
        if self.atari is not None and not self.id.startswith("ALE/"):
            raise ValueError(f"env.atari: needs an ALE id such as ALE/Breakout-v5, not {self.id!r}")
        if self.atari is not None and self.atari.backend == "vector" and self.kwargs:
            raise ValueError("env.kwargs: not supported with env.atari.backend: vector")
        return self


class AgentConfig(Strict):
    """Base of every algorithm's config; `agents.CONFIGS` maps `type` to the subclass."""

    type: str
    on_policy: ClassVar[bool | None] = None  # each algorithm's config class sets it
    # The gymnasium action-space classes the algorithm can act in (checked before a run
    # starts, so a mismatch is a config error, not a failure after TensorFlow loaded).
    action_spaces: ClassVar[tuple[str, ...]] = ("Discrete", "Box")

    def split_batches(self, exp: Any) -> dict[str, int]:
        """The batches a mirrored learner splits across its devices, by the settings that
        size them (`exp` is the ExperimentConfig): checked before a run starts."""
        return {}
