"""Algorithms behind the Agent seam. `build(cfg, spaces)` is the platform's only entry point."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if __name__ != "rlplat.agents":  # one module, one name: a registry imported twice would split
    raise ModuleNotFoundError(
        f"{__file__}: rlplat's agents/ folder is the package rlplat.agents, not a top-level "
        "`agents` (is an rlplat source checkout on sys.path ahead of your own `agents` package?)",
        name=__name__,
    )

from rlplat.agents.base import Agent, TrainResult
from rlplat.agents.configs import DQNConfig, PPOConfig, ReinforceConfig

if TYPE_CHECKING:
    from rlplat.config_base import AgentConfig
    from rlplat.envs import EnvSpaces

# type -> (config class, "module:Agent class"); modules import TensorFlow, so load lazily.
_REGISTRY = {
    "dqn": (DQNConfig, "rlplat.agents.dqn:DQNAgent"),
    "ppo": (PPOConfig, "rlplat.agents.ppo:PPOAgent"),
    "reinforce": (ReinforceConfig, "rlplat.agents.reinforce:ReinforceAgent"),
}
CONFIGS = {name: cfg for name, (cfg, _) in _REGISTRY.items()}


def build(
    cfg: AgentConfig, spaces: EnvSpaces, seed: int = 0, mixed_precision: bool = False
) -> Agent:
    """The agent for `cfg.type`, built for these observation/action spaces.
    `mixed_precision`: float16 compute in its conv torso, for a GPU learner (the caller,
    rlplat/learner.py, decides; on a CPU it works, slowly, which is what tests use)."""
    module_name, _, cls_name = _REGISTRY[cfg.type][1].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(cfg, spaces, seed=seed, mixed_precision=mixed_precision)


__all__ = ["Agent", "TrainResult", "CONFIGS", "build"]
