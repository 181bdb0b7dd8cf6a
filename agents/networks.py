"""TF-Agents networks for the agents (their numpy twins for acting: agents.actors)."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
from tf_agents.networks import encoding_network, network, q_network

from rlplat.agents.configs import MLPConfig

ACTIVATIONS = {"relu": tf.keras.activations.relu, "tanh": tf.keras.activations.tanh}


class DuelingQNetwork(network.Network):
    """Q(s, a) = V(s) + A(s, a) - mean_a' A(s, a') (Wang et al. 2016), on an MLP torso.

    Subtracting the mean advantage makes V and A identifiable without changing argmax.
    """

    def __init__(self, input_tensor_spec, action_spec, fc_layer_params=(64, 64),
                 activation_fn=tf.keras.activations.relu, name="DuelingQNetwork"):  # fmt: skip
        super().__init__(input_tensor_spec=input_tensor_spec, state_spec=(), name=name)
        num_actions = int(action_spec.maximum - action_spec.minimum + 1)
        self._encoder = encoding_network.EncodingNetwork(
            input_tensor_spec, fc_layer_params=fc_layer_params, activation_fn=activation_fn
        )
        self._value = tf.keras.layers.Dense(1, name="value")
        self._advantage = tf.keras.layers.Dense(num_actions, name="advantage")

    def call(self, observation, step_type=None, network_state=(), training=False):
        hidden, network_state = self._encoder(
            observation, step_type=step_type, network_state=network_state, training=training
        )
        value = self._value(hidden, training=training)
        advantage = self._advantage(hidden, training=training)
        q = value + advantage - tf.reduce_mean(advantage, axis=-1, keepdims=True)
        return q, network_state


def q_net(observation_spec, action_spec, cfg: MLPConfig, dueling: bool = False) -> network.Network:
    """An MLP Q network: observations → one Q value per discrete action."""
    cls = DuelingQNetwork if dueling else q_network.QNetwork
    net = cls(
        observation_spec,
        action_spec,
        fc_layer_params=tuple(cfg.hidden),
        activation_fn=ACTIVATIONS[cfg.activation],
    )
    net.create_variables()
    return net


def named_variables(prefix: str, variables: Sequence[tf.Variable]) -> dict[str, tf.Variable]:
    """Variables by names that are the same in every process and every agent:
    `{prefix}/layer{i}/{kernel|bias}`, i numbering the layers in order (what
    agents.actors.NumpyMLP reads). Keras' own names carry process-wide counters: a layer's
    `dense_7/kernel` in one process is `dense/kernel` in another."""
    layers: dict[str, int] = {}
    named = {}
    for var in variables:
        scope, _, leaf = var.name.partition(":")[0].rpartition("/")
        named[f"{prefix}/layer{layers.setdefault(scope, len(layers))}/{leaf}"] = var
    if len(named) != len(variables):  # two variables of one layer with one leaf name
        raise ValueError(f"{prefix}: variable names are not unique: {[v.name for v in variables]}")
    return named
