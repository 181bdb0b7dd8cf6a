"""TF-Agents networks for the agents (their numpy twins for acting: agents.actors)."""

from __future__ import annotations

import tensorflow as tf
from tf_agents.networks import encoding_network, network, q_network

from agents.configs import MLPConfig

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
