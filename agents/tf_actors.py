"""The acting side of the Nature CNN: a TensorFlow forward pass inside the collector.

agents.actors acts in numpy, which suits MLPs at collector batch sizes; a conv net's
forward pass in numpy is far too slow. `TFNatureCNN` is the twin of NumpyMLP for CNNs: it
reads the same weights-by-name dict (`{torso}/conv0/kernel`, ..., the heads) and runs one
tf.function on CPU, batched over the collector's envs. It pickles to Ray as numpy weights
only: TF variables and the traced function are built lazily in the process that acts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlplat.agents.networks import NATURE_CONVS


class TFNatureCNN:
    """Nature torso `{torso}/conv0..2`, `{torso}/dense0`, then `heads` (weight-name
    prefixes): one head's output, or with `dueling` (heads = value, advantage)
    V + A - mean(A), as agents.networks.NatureQNetwork computes it. `pixels`: the
    observation space is uint8, scaled by 1/255 (agents.networks.scale_pixels)."""

    def __init__(self, torso: str, heads: Sequence[str], dueling: bool = False,
                 pixels: bool = True):  # fmt: skip
        self.torso, self.heads, self.dueling = torso, tuple(heads), dueling
        self.pixels = pixels
        self._weights: dict[str, np.ndarray] = {}
        self._stale = True
        self._vars: dict[str, Any] | None = None  # tf.Variables, built on first call
        self._fn = None

    def __getstate__(self) -> dict[str, Any]:
        # Ship numpy weights only; the receiving process builds its own variables/graph.
        return {**self.__dict__, "_vars": None, "_fn": None, "_stale": True}

    def set_weights(self, weights: Mapping[str, np.ndarray]) -> None:
        names = [f"{self.torso}/conv{i}" for i in range(len(NATURE_CONVS))]
        names += [f"{self.torso}/dense0", *self.heads]
        self._weights = {
            f"{n}/{leaf}": np.asarray(weights[f"{n}/{leaf}"], np.float32)
            for n in names
            for leaf in ("kernel", "bias")
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

        v = self._vars
        x = scale_pixels(observations, self.pixels)
        for i, (_, _, stride) in enumerate(NATURE_CONVS):
            name = f"{self.torso}/conv{i}"
            x = tf.nn.conv2d(x, v[f"{name}/kernel"], stride, "VALID") + v[f"{name}/bias"]
            x = tf.nn.relu(x)
        x = tf.reshape(x, [tf.shape(x)[0], -1])  # NHWC flattened as keras' Flatten does
        x = tf.nn.relu(x @ v[f"{self.torso}/dense0/kernel"] + v[f"{self.torso}/dense0/bias"])
        outs = [x @ v[f"{h}/kernel"] + v[f"{h}/bias"] for h in self.heads]
        if not self.dueling:
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
