"""Networks for the agents, and their numpy twins for fast actor-side inference.

perf-notes: a TF-Agents policy call costs ~440 µs at batch 1; the same MLP in numpy
~17 µs, which made collection 2.5× faster. Learning stays in TensorFlow.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from tf_agents.networks import q_network

from agents.configs import MLPConfig

_ACTIVATIONS = {"relu": tf.keras.activations.relu, "tanh": tf.keras.activations.tanh}


def q_net(observation_spec, action_spec, cfg: MLPConfig) -> q_network.QNetwork:
    """An MLP Q network: observations → one Q value per discrete action."""
    net = q_network.QNetwork(
        observation_spec,
        action_spec,
        fc_layer_params=tuple(cfg.hidden),
        activation_fn=_ACTIVATIONS[cfg.activation],
    )
    net.create_variables()
    return net


class NumpyMLP:
    """Forward pass of a Dense stack (hidden activations, linear output) in numpy.

    `weights` is the [W1, b1, ..., Wout, bout] list of the TF network's variables.
    """

    def __init__(self, activation: str = "relu"):
        self._act = {"relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh}[activation]
        self._layers: list[tuple[np.ndarray, np.ndarray]] = []

    def set_weights(self, weights: list[np.ndarray]) -> None:
        self._layers = [(weights[i], weights[i + 1]) for i in range(0, len(weights), 2)]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = x.reshape(len(x), -1).astype(np.float32, copy=False)
        for W, b in self._layers[:-1]:
            x = self._act(x @ W + b)
        W, b = self._layers[-1]
        return x @ W + b
