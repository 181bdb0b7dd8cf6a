"""Gymnasium spaces → TF-Agents specs (what TF-Agents agents and networks are built from).

Environments themselves are stepped by rlplat's collectors (envs.make.LockstepEnvs), not
through TF-Agents' environment wrappers.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from tf_agents.specs import array_spec, tensor_spec
from tf_agents.trajectories import time_step as ts

from rlplat.envs.make import EnvSpaces


def array_specs(spaces: EnvSpaces) -> tuple[array_spec.ArraySpec, array_spec.BoundedArraySpec]:
    """(observation spec, action spec) as numpy ArraySpecs."""
    obs = array_spec.ArraySpec(spaces.observation.shape, np.float32, name="observation")
    act = spaces.action
    if isinstance(act, gym.spaces.Discrete):
        action = array_spec.BoundedArraySpec(
            (), np.int64, minimum=0, maximum=int(act.n) - 1, name="action"
        )
    else:
        action = array_spec.BoundedArraySpec(
            act.shape, np.float32, minimum=act.low, maximum=act.high, name="action"
        )
    return obs, action


def tensor_specs(spaces: EnvSpaces) -> tuple[ts.TimeStep, tensor_spec.BoundedTensorSpec]:
    """(time_step_spec, action_spec) as TF-Agents agents want them."""
    obs, action = array_specs(spaces)
    return (
        ts.time_step_spec(tensor_spec.from_spec(obs)),
        tensor_spec.from_spec(action),
    )
