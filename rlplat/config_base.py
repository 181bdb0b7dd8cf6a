"""The schema's base types, shared by rlplat.config and the algorithm and environment
packages (agents/configs.py, envs/make.py).

They live apart from rlplat.config because that module imports the agents registry to
validate an `agent:` section: agents importing their base from it would close an import
circle. Nothing here imports anything of rlplat's.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    """Unknown keys are errors; configs are immutable once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]


class EnvConfig(Strict):
    id: str = Field(description="Gymnasium id (CartPole-v1) or `module:Class`")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    max_episode_steps: PosInt | None = None


class AgentConfig(Strict):
    """Base of every algorithm's config; `agents.CONFIGS` maps `type` to the subclass."""

    type: str
    on_policy: ClassVar[bool | None] = None  # each algorithm's config class sets it
    # The gymnasium action-space classes the algorithm can act in (checked before a run
    # starts, so a mismatch is a config error, not a failure after TensorFlow loaded).
    action_spaces: ClassVar[tuple[str, ...]] = ("Discrete", "Box")
