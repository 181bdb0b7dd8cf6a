"""The acting side of a conv net: a TensorFlow forward pass inside the collector.

agents.actors acts in numpy, which suits MLPs at collector batch sizes; a conv net's
forward pass in numpy is far too slow. `TFNatureCNN` is the twin of NumpyMLP for CNNs: it
runs the layers of a NetworkSpec (agents.netspec), reading the same weights-by-name dict,
as one tf.function on CPU, batched over the collector's envs. It pickles to Ray as numpy
weights only: TF is imported, and variables and the traced function built, lazily in the
process that acts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from rlplat.agents.netspec import NetworkSpec


class TFNatureCNN:
    """A conv torso (VALID convolutions, NHWC flattened, then Dense layers), then the
    spec's heads: one head's output, or with `dueling` V + A - mean(A), as
    agents.networks.NatureQNetwork computes it. `spec.pixels`: uint8 observations scaled
    by 1/255 (agents.networks.scale_pixels)."""

    def __init__(self, spec: NetworkSpec):
        self.spec = spec
        self._weights: dict[str, np.ndarray] = {}
        self._stale = True
        self._vars: dict[str, Any] | None = None  # tf.Variables, built on first call
        self._fn = None

    def __getstate__(self) -> dict[str, Any]:
        # Ship numpy weights only; the receiving process builds its own variables/graph.
        return {**self.__dict__, "_vars": None, "_fn": None, "_stale": True}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        self._weights = {
            name: np.asarray(weights[name], np.float32)
            for layer in self.spec.layers
            for name in layer.weight_names()
        }
        self._stale = True

    def _build(self) -> None:
        import tensorflow as tf  # only where a CNN acts

        with tf.device("/CPU:0"):
            self._vars = {n: tf.Variable(w, trainable=False) for n, w in self._weights.items()}
        self._fn = tf.function(self._forward, jit_compile=False, reduce_retracing=True)

    def _forward(self, observations):
        import tensorflow as tf

        from rlplat.agents.networks import scale_pixels

        activations = {"relu": tf.nn.relu, "tanh": tf.nn.tanh}
        v = self._vars
        x = scale_pixels(observations, self.spec.pixels)
        for layer in self.spec.torso:
            kernel, bias = (v[name] for name in layer.weight_names())
            if layer.conv:
                x = tf.nn.conv2d(x, kernel, layer.conv[1], "VALID") + bias
            else:
                if len(x.shape) > 2:  # NHWC flattened as keras' Flatten does
                    x = tf.reshape(x, [tf.shape(x)[0], -1])
                x = x @ kernel + bias
            x = activations[layer.activation](x)
        outs = [x @ v[k] + v[b] for k, b in (h.weight_names() for h in self.spec.heads)]
        if not self.spec.dueling:
            return outs[0]
        value, advantage = outs
        return value + advantage - tf.reduce_mean(advantage, axis=-1, keepdims=True)

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        if self._fn is None:
            self._build()
            self._stale = False
        elif self._stale:
            for name, var in self._vars.items():
                var.assign(self._weights[name])
            self._stale = False
        import tensorflow as tf

        with tf.device("/CPU:0"):
            return self._fn(tf.constant(np.asarray(observations))).numpy()
