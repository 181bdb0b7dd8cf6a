"""One network spec, many executors: for every network type and option, the learner's
Keras network and the collector's executor are built from the same NetworkSpec, loaded
with the same (random) weights and run on the same inputs; their outputs must agree."""

from __future__ import annotations

import pickle

import gymnasium as gym
import numpy as np
import pytest
import tensorflow as tf

from rlplat import agents
from rlplat.agents.actors import NumpyMLP, forward_pass
from rlplat.agents.configs import (
    DQNConfig,
    MLPConfig,
    NatureCNNConfig,
    PPOConfig,
    ReinforceConfig,
)
from rlplat.agents.netspec import OBS_MEAN, OBS_VAR, NetworkSpec, q_spec
from rlplat.agents.networks import named_variables
from rlplat.agents.tf_actors import TFNatureCNN
from rlplat.envs import EnvSpaces

VECTOR = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
# Non-square, small (fast), and large enough for the Nature torso: 52x44 → 3x2x64 features.
PIXELS = gym.spaces.Box(0, 255, (52, 44, 4), np.uint8)
DISCRETE, BOX = gym.spaces.Discrete(3), gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
TOL = dict(rtol=1e-5, atol=1e-5)  # float32, different summation orders


def mlp(activation: str) -> MLPConfig:
    return MLPConfig(hidden=[16, 8], activation=activation)


# name -> (agent config, observation space, action space): every network and option.
CASES = {
    **{
        f"dqn_{act}{'_dueling' if duel else ''}": (
            DQNConfig(type="dqn", network=mlp(act), dueling=duel, jit_compile=False),
            VECTOR,
            DISCRETE,
        )
        for act in ("relu", "tanh")
        for duel in (False, True)
    },
    **{
        f"ppo_{act}_{space}{'_norm' if norm else ''}": (
            PPOConfig(type="ppo", network=mlp(act), normalize_observations=norm),
            VECTOR,
            DISCRETE if space == "discrete" else BOX,
        )
        for act in ("relu", "tanh")
        for space in ("discrete", "box")
        for norm in (False, True)
    },
    "reinforce": (ReinforceConfig(type="reinforce", network=mlp("tanh")), VECTOR, DISCRETE),
    "reinforce_box_baseline": (
        ReinforceConfig(type="reinforce", network=mlp("relu"), baseline=True),
        VECTOR,
        BOX,
    ),
    # An MLP asked for on pixels flattens them, unscaled.
    "dqn_mlp_on_pixels": (
        DQNConfig(type="dqn", network=mlp("relu"), jit_compile=False),
        PIXELS,
        DISCRETE,
    ),
    "cnn_dqn": (DQNConfig(type="dqn", jit_compile=False), PIXELS, DISCRETE),
    "cnn_dqn_dueling": (DQNConfig(type="dqn", dueling=True, jit_compile=False), PIXELS, DISCRETE),
    "cnn_ppo": (PPOConfig(type="ppo"), PIXELS, DISCRETE),
    "cnn_ppo_box": (PPOConfig(type="ppo"), PIXELS, BOX),
    "cnn_reinforce": (ReinforceConfig(type="reinforce"), PIXELS, DISCRETE),
}


def random_weights(agent: agents.Agent, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights unlike any initialisation: kernels ~ 1/sqrt(fan in), biases and log std
    small, non-trivial normalisation statistics (so a missed one shows)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, (shape, dtype) in agent.weight_spec().items():
        if name == OBS_VAR:
            w = rng.uniform(0.25, 4.0, shape)
        elif name.endswith("/kernel"):
            w = rng.normal(size=shape) / np.sqrt(np.prod(shape[:-1]))
        else:
            w = rng.normal(size=shape) * (1.0 if name == OBS_MEAN else 0.1)
        out[name] = w.astype(dtype)
    return out


def observations(space: gym.spaces.Box, n: int = 16) -> np.ndarray:
    rng = np.random.default_rng(1)
    if space.dtype == np.uint8:
        return rng.integers(0, 256, (n, *space.shape), dtype=np.uint8)
    return (rng.normal(size=(n, *space.shape)) * 10).astype(np.float32)  # many clip at ±10


def learner_outputs(agent: agents.Agent, obs: np.ndarray) -> np.ndarray:
    """The raw outputs of the learner's own network (through its serving module, which
    wraps the very Keras objects it trains, normalisation included)."""
    serve = agent.serving_module().serving_default
    out = serve(tf.constant(obs, serve.input_signature[0].dtype))  # an MLP takes float32
    return next(out[k] for k in ("q_values", "logits", "mean") if k in out).numpy()


@pytest.fixture(scope="module", params=list(CASES))
def built(request) -> tuple[str, agents.Agent, np.ndarray, dict]:
    cfg, obs_space, action_space = CASES[request.param]
    agent = agents.build(cfg, EnvSpaces(obs_space, action_space), seed=0)
    weights = random_weights(agent)
    agent.set_weights(weights)
    return request.param, agent, observations(obs_space), weights


def test_executor_matches_the_learner_network(built):
    name, agent, obs, weights = built
    spec: NetworkSpec = agent.network_spec
    executor = forward_pass(spec)
    assert isinstance(executor, TFNatureCNN if name.startswith("cnn") else NumpyMLP)
    executor.set_weights(weights)
    expected = learner_outputs(agent, obs)
    np.testing.assert_allclose(executor(obs), expected, **TOL)
    # What collectors run: the actor policy around the executor, after a trip through
    # pickle (what Ray ships; a CNN's TF graph is rebuilt on the other side).
    policy = agent.actor_policy(0, 1, seed=0)
    policy.set_weights(weights)
    outputs = policy.q_values if isinstance(agent.cfg, DQNConfig) else policy.outputs
    outputs(obs)
    policy = pickle.loads(pickle.dumps(policy))
    outputs = policy.q_values if isinstance(agent.cfg, DQNConfig) else policy.outputs
    np.testing.assert_allclose(outputs(obs), expected, **TOL)
    if obs.dtype == np.uint8 and spec.pixels:  # frames a caller cast to float32 stay pixels
        np.testing.assert_allclose(outputs(obs.astype(np.float32)), expected, **TOL)


def test_spec_names_every_weight_the_executor_reads(built):
    _, agent, _, _ = built
    spec: NetworkSpec = agent.network_spec
    names = spec.weight_names()
    assert set(names) <= set(agent.weight_spec())
    assert (OBS_MEAN in names) == (spec.normalize and not spec.is_conv)
    # Each layer's width is the spec's: the weights' last axis.
    for layer in spec.layers:
        kernel, bias = (agent.weight_spec()[n][0] for n in layer.weight_names())
        assert kernel[-1] == bias[0] == layer.units


def test_learner_variables_are_checked_against_the_spec():
    """named_variables refuses variables that do not come in the spec's layer order."""
    cfg, obs_space, action_space = CASES["dqn_relu_dueling"]
    agent = agents.build(cfg, EnvSpaces(obs_space, action_space))
    spec = agent.network_spec
    variables = list(agent.checkpoint_items()["q_network"].trainable_variables)
    assert list(named_variables(spec.layers, variables)) == spec.weight_names()
    with pytest.raises(ValueError, match="does not fit"):
        named_variables(spec.layers, variables[::-1])
    with pytest.raises(ValueError, match="variables for"):
        named_variables(spec.layers, variables[:-2])


def test_spec_is_built_from_the_network_config_and_the_agent_type():
    spec = q_spec(MLPConfig(hidden=[32, 32], activation="tanh"), 4, dueling=True, pixels=True)
    assert [layer.name for layer in spec.layers] == [f"q/layer{i}" for i in range(4)]
    assert spec.hidden == (32, 32) and spec.activation == "tanh" and spec.outputs == 4
    assert not spec.pixels  # pixel scaling belongs to the conv torso only
    with pytest.raises(ValueError, match="heads"):
        NetworkSpec(spec.torso, spec.heads[:1], dueling=True)
    with pytest.raises(ValueError, match="conv net acts in TF"):
        NumpyMLP(q_spec(NatureCNNConfig(type="nature_cnn"), 4, dueling=False, pixels=True))
