"""Algorithms behind the Agent seam. `build(cfg, spaces)` is the platform's only entry point."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from agents.base import Agent, TrainResult
from agents.configs import DQNConfig, PPOConfig, ReinforceConfig
from rlplat import _bootstrap  # noqa: F401  (before any TensorFlow import)

if TYPE_CHECKING:
    from envs import EnvSpaces
    from rlplat.config_base import AgentConfig

# type -> (config class, "module:Agent class"); modules import TensorFlow, so load lazily.
_REGISTRY = {
    "dqn": (DQNConfig, "agents.dqn:DQNAgent"),
    "ppo": (PPOConfig, "agents.ppo:PPOAgent"),
    "reinforce": (ReinforceConfig, "agents.reinforce:ReinforceAgent"),
}
CONFIGS = {name: cfg for name, (cfg, _) in _REGISTRY.items()}


def build(cfg: AgentConfig, spaces: EnvSpaces, seed: int = 0) -> Agent:
    """The agent for `cfg.type`, built for these observation/action spaces."""
    module_name, _, cls_name = _REGISTRY[cfg.type][1].partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(cfg, spaces, seed=seed)


__all__ = ["Agent", "TrainResult", "CONFIGS", "build"]
