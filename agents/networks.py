"""The learner's TF-Agents/Keras networks, built from an agents.netspec.NetworkSpec (the
same spec a collector's executor is built from: agents.actors.forward_pass)."""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import tensorflow as tf
from tf_agents.networks import encoding_network, network, q_network

from rlplat.agents.configs import MLPConfig, NatureCNNConfig
from rlplat.agents.netspec import (
    NATURE_CONVS,
    NORM_CLIP,
    NORM_EPS,
    PIXEL_SCALE,
    LayerSpec,
    NetworkSpec,
)
from rlplat.errors import ConfigError

NamedVariables = dict[str, tf.Variable]

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


def q_net(observation_spec, action_spec, spec: NetworkSpec,
          mixed_precision: bool = False) -> network.Network:  # fmt: skip
    """The Q network of `spec` (agents.netspec.q_spec): observations → one Q value per
    discrete action. `mixed_precision` applies to a conv torso (an MLP stays float32)."""
    if spec.is_conv:
        net = NatureQNetwork(observation_spec, action_spec, spec.hidden[-1], spec.dueling,
                             mixed_precision, convs=spec.convs)  # fmt: skip
    else:
        cls = DuelingQNetwork if spec.dueling else q_network.QNetwork
        net = cls(observation_spec, action_spec, fc_layer_params=spec.hidden,
                  activation_fn=ACTIVATIONS[spec.activation])  # fmt: skip
    net.create_variables()
    return net


def mlp_torso(observation_spec, spec: NetworkSpec, kernel_initializer=None):
    """The Dense layers of an MLP spec's torso, as a TF-Agents EncodingNetwork."""
    return encoding_network.EncodingNetwork(
        observation_spec, fc_layer_params=spec.hidden,
        activation_fn=ACTIVATIONS[spec.activation], kernel_initializer=kernel_initializer,
    )  # fmt: skip


def named_variables(
    layers: Sequence[LayerSpec], variables: Sequence[tf.Variable]
) -> NamedVariables:
    """The spec's weight names (LayerSpec.weight_names) for a network's variables, which
    come in the spec's layer order, kernel then bias. Keras' own names carry process-wide
    counters (`dense_7/kernel` here is `dense/kernel` in another process), so names come
    from the spec; each variable's leaf and units are checked against it."""
    names = [name for layer in layers for name in layer.weight_names()]
    units = [layer.units for layer in layers for _ in layer.weight_names()]
    if len(names) != len(variables):
        raise ValueError(f"{len(variables)} variables for the spec's {names}")
    for name, n, var in zip(names, units, variables, strict=True):
        leaf = var.name.partition(":")[0].rpartition("/")[2]
        if leaf != name.rpartition("/")[2] or var.shape[-1] != n:
            raise ValueError(f"variable {var.name} {var.shape} does not fit the spec's {name}")
    return dict(zip(names, variables, strict=True))


def normalize(obs: tf.Tensor, mean: tf.Variable, var: tf.Variable) -> tf.Tensor:
    """Observations scaled by running statistics and clipped (a spec's `normalize`: the
    learner's graphs and the exported one; agents.actors.NumpyMLP is its numpy twin)."""
    return tf.clip_by_value((obs - mean) / tf.sqrt(var + NORM_EPS), -NORM_CLIP, NORM_CLIP)


# ------------------------------------------------------------------ pixels: Nature CNN
def is_image(space: gym.Space) -> bool:
    """An image observation: a rank-3 uint8 Box ([H, W, C] stacked frames)."""
    return isinstance(space, gym.spaces.Box) and len(space.shape) == 3 and space.dtype == np.uint8


def resolve_network(cfg, observation_space: gym.Space) -> MLPConfig | NatureCNNConfig:
    """The network `cfg.network` asks for; when the config leaves `network` out, the Nature
    CNN for image observations (is_image) and the config's default MLP otherwise."""
    net = cfg.network
    if "network" not in cfg.model_fields_set and is_image(observation_space):
        net = NatureCNNConfig(type="nature_cnn")
    if isinstance(net, NatureCNNConfig):
        shape = getattr(observation_space, "shape", None)
        if shape is None or len(shape) != 3 or min(shape[:2]) < 36:
            raise ConfigError(
                "agent.network.type: nature_cnn needs [height, width, channels] image "
                f"observations at least 36x36; this env's observation space is {observation_space}"
            )
    return net


def scale_pixels(observations: tf.Tensor, pixels: bool) -> tf.Tensor:
    """float32 for the first conv: for a uint8 observation space (`pixels`) scaled by 1/255,
    whatever dtype the values arrive in (a caller that cast uint8 frames to float32 still
    gets [0, 1]); a float image env keeps its own scale."""
    x = tf.cast(observations, tf.float32)
    return x * PIXEL_SCALE if pixels else x


class _BuildOnZeros(network.Network):
    """create_variables on a zeros batch: TF-Agents samples a random input from the spec,
    which fails for a uint8 spec."""

    def create_variables(self, input_tensor_spec=None, **kwargs):
        if self._network_output_spec is None:
            spec = self.input_tensor_spec
            out, _ = self(tf.zeros([1, *spec.shape], spec.dtype), **kwargs)
            self._network_output_spec = tf.TensorSpec(out.shape[1:], out.dtype)
        return self._network_output_spec


def layer_dtype(mixed_precision: bool) -> tf.keras.mixed_precision.Policy | None:
    """The dtype policy for a torso's layers: Keras' `mixed_float16` (float32 variables,
    float16 compute) or None (the global policy, float32). Passed per layer, never set
    globally: heads, collectors' actors and the export stay float32."""
    return tf.keras.mixed_precision.Policy("mixed_float16") if mixed_precision else None


def loss_scaled(optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer:
    """`optimizer` behind tf_keras' dynamic LossScaleOptimizer: callers scale the loss
    (`get_scaled_loss`) inside the tape and unscale the gradients (`get_unscaled_gradients`)
    before clipping them; `apply_gradients` skips a step whose gradients are not finite and
    halves the scale (it doubles after 2,000 finite steps).

    The agents checkpoint `optimizer` itself, and the wrapper's scale is taken out of it
    (the wrapper tracks it as a dependency of `optimizer`): so a checkpoint has one format
    with or without mixed precision and each resumes the other (a float32 checkpoint has no
    scale to restore). A resumed mixed run starts its scale again at 2^15; too big a scale
    costs one skipped step per halving."""
    scaled = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    optimizer._delete_tracking("loss_scale")
    return scaled


def float32_copy(net: network.Network) -> network.Network:
    """A float32 copy, weights included, of a network built with `mixed_precision`: what
    an export serves, so a SavedModel computes the same way whether its run trained on a
    GPU in float16 or not (and fast on a serving CPU, which float16 convolutions are not)."""
    twin = net.copy(mixed_precision=False)
    twin.create_variables()
    for mine, theirs in zip(twin.variables, net.variables, strict=True):
        mine.assign(theirs)
    return twin


class NatureTorso(_BuildOnZeros):
    """Nature-DQN torso: [B, H, W, C] pixels → [B, dense] features (ReLU layers `conv{i}`
    for each (filters, kernel size, stride) of `convs`, then `dense0`; a NetworkSpec's
    `convs` and `hidden`). Called like a TF-Agents EncodingNetwork: returns (features, state).
    A uint8 `input_tensor_spec` means pixels, scaled by 1/255 in the graph.
    `mixed_precision`: the layers compute in float16 (features come out float16; a float32
    head casts them back)."""

    def __init__(self, input_tensor_spec, dense: int = 512, kernel_initializer=None,
                 mixed_precision: bool = False, convs=NATURE_CONVS,
                 name="NatureTorso"):  # fmt: skip
        super().__init__(input_tensor_spec=input_tensor_spec, state_spec=(), name=name)
        init = kernel_initializer or "glorot_uniform"
        dtype = layer_dtype(mixed_precision)
        relu = dict(activation="relu", kernel_initializer=init, dtype=dtype)
        self.convs = [
            tf.keras.layers.Conv2D(f, k, s, name=f"conv{i}", **relu)
            for i, (f, k, s) in enumerate(convs)
        ]
        self.flatten = tf.keras.layers.Flatten(dtype=dtype)
        self.dense = tf.keras.layers.Dense(dense, name="dense0", **relu)

    def call(self, observation, step_type=None, network_state=(), training=False):
        x = scale_pixels(observation, self.input_tensor_spec.dtype == tf.uint8)
        for conv in self.convs:
            x = conv(x, training=training)
        return self.dense(self.flatten(x), training=training), network_state


class NatureQNetwork(_BuildOnZeros):
    """Q values on the Nature torso: one `head` layer, or dueling `value` + `advantage`
    heads combined as in DuelingQNetwork. The heads are float32 (so are the Q values and
    the losses on them) whatever the torso's `mixed_precision`."""

    def __init__(self, input_tensor_spec, action_spec, dense: int = 512, dueling: bool = False,
                 mixed_precision: bool = False, convs=NATURE_CONVS,
                 name="NatureQNetwork"):  # fmt: skip
        super().__init__(input_tensor_spec=input_tensor_spec, state_spec=(), name=name)
        num_actions = int(action_spec.maximum - action_spec.minimum + 1)
        self.torso = NatureTorso(
            input_tensor_spec, dense, mixed_precision=mixed_precision, convs=convs
        )
        self.dueling = dueling
        if dueling:
            self.heads = [tf.keras.layers.Dense(1, name="value"),
                          tf.keras.layers.Dense(num_actions, name="advantage")]  # fmt: skip
        else:
            self.heads = [tf.keras.layers.Dense(num_actions, name="head")]

    def call(self, observation, step_type=None, network_state=(), training=False):
        hidden, _ = self.torso(observation, training=training)
        if not self.dueling:
            return self.heads[0](hidden, training=training), network_state
        value, advantage = (h(hidden, training=training) for h in self.heads)
        q = value + advantage - tf.reduce_mean(advantage, axis=-1, keepdims=True)
        return q, network_state
