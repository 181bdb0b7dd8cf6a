"""One typed description of a network, from which every executor is built.

The learner's Keras/TF-Agents network (agents.networks), a collector's numpy MLP
(agents.actors.NumpyMLP) and its TF conv net (agents.tf_actors.TFNatureCNN) all read a
`NetworkSpec`: its layers, their activations, the dueling head, observation normalisation
and pixel scaling. Weight names (`q/layer0/kernel`, `torso/conv1/bias`, `obs/mean`) come
from the spec and nowhere else, so the learner names its variables and an actor reads them
with one rule (tests/test_network_spec.py runs both on the same inputs).

No TensorFlow here: collectors import this to act in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlplat.agents.configs import MLPConfig, NatureCNNConfig

Activation = Literal["relu", "tanh"]
NetworkConfig = MLPConfig | NatureCNNConfig

# (filters, kernel size, stride) of the Nature-DQN torso (Mnih et al. 2015).
NATURE_CONVS = ((32, 8, 4), (64, 4, 2), (64, 3, 1))
# uint8 pixels → [0, 1] before the first conv.
PIXEL_SCALE = 1.0 / 255.0
# Running-statistics normalisation: (obs - mean) / sqrt(var + EPS), clipped to ±CLIP.
NORM_EPS = 1e-8
NORM_CLIP = 10.0
OBS_MEAN, OBS_VAR = "obs/mean", "obs/var"
LEAVES = ("kernel", "bias")


@dataclass(frozen=True)
class LayerSpec:
    """A Dense (or, with `conv` = (kernel size, stride), a VALID Conv2D) layer whose
    weights are `{name}/kernel` and `{name}/bias`."""

    name: str
    units: int
    activation: Activation | None = None  # None: linear
    conv: tuple[int, int] | None = None

    def weight_names(self) -> tuple[str, str]:
        return tuple(f"{self.name}/{leaf}" for leaf in LEAVES)


@dataclass(frozen=True)
class NetworkSpec:
    """A torso of layers, then linear heads: one head's output, or with `dueling`
    (heads = value, advantage) Q = V + A - mean(A) (Wang et al. 2016).

    `normalize`: raw observations pass through running statistics first (weights
    `obs/mean`, `obs/var`). `pixels`: uint8 observations, scaled by PIXEL_SCALE first."""

    torso: tuple[LayerSpec, ...]
    heads: tuple[LayerSpec, ...]
    dueling: bool = False
    normalize: bool = False
    pixels: bool = False

    def __post_init__(self) -> None:
        if len(self.heads) != (2 if self.dueling else 1):
            raise ValueError(f"{len(self.heads)} heads; dueling={self.dueling} takes 2 or 1")

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        return (*self.torso, *self.heads)

    @property
    def is_conv(self) -> bool:
        return any(layer.conv for layer in self.torso)

    @property
    def hidden(self) -> tuple[int, ...]:
        """Units of the torso's Dense layers (an MLP's `fc_layer_params`)."""
        return tuple(layer.units for layer in self.torso if layer.conv is None)

    @property
    def activation(self) -> Activation:
        """The torso's activation (one for every torso layer)."""
        return self.torso[0].activation or "relu"

    @property
    def convs(self) -> tuple[tuple[int, int, int], ...]:
        """(filters, kernel size, stride) of the torso's conv layers."""
        return tuple((layer.units, *layer.conv) for layer in self.torso if layer.conv)

    @property
    def outputs(self) -> int:
        return self.heads[-1].units

    def weight_names(self) -> list[str]:
        """Every weight an executor of this spec reads, in layer order."""
        names = [n for layer in self.layers for n in layer.weight_names()]
        return [*names, OBS_MEAN, OBS_VAR] if self.normalize else names


def _mlp_torso(prefix: str, net: MLPConfig) -> tuple[LayerSpec, ...]:
    return tuple(
        LayerSpec(f"{prefix}/layer{i}", units, net.activation) for i, units in enumerate(net.hidden)
    )


def _nature_torso(prefix: str, net: NatureCNNConfig) -> tuple[LayerSpec, ...]:
    convs = tuple(
        LayerSpec(f"{prefix}/conv{i}", filters, "relu", (kernel, stride))
        for i, (filters, kernel, stride) in enumerate(NATURE_CONVS)
    )
    return (*convs, LayerSpec(f"{prefix}/dense0", net.dense, "relu"))


def q_spec(net: NetworkConfig, num_actions: int, dueling: bool, pixels: bool) -> NetworkSpec:
    """DQN's Q network, all under `q/`: an MLP's layers numbered on through its head(s)
    (`q/layer{i}`), a CNN's named (`q/conv{i}`, `q/dense0`, `q/head` or `q/value` +
    `q/advantage`)."""
    cnn = isinstance(net, NatureCNNConfig)
    if cnn:
        torso = _nature_torso("q", net)
        names = ("q/value", "q/advantage") if dueling else ("q/head",)
    else:
        torso = _mlp_torso("q", net)
        names = tuple(f"q/layer{len(torso) + i}" for i in range(2 if dueling else 1))
    units = (1, num_actions) if dueling else (num_actions,)
    heads = tuple(LayerSpec(n, u) for n, u in zip(names, units, strict=True))
    return NetworkSpec(torso, heads, dueling=dueling, pixels=pixels and cnn)


def policy_spec(net: NetworkConfig, outputs: int, normalize: bool, pixels: bool) -> NetworkSpec:
    """A policy (PPO, REINFORCE): logits or Gaussian means. An MLP is `actor/layer{i}`,
    its head numbered on; a CNN is the shared `torso/...` and a `policy` head (never
    normalised: it scales pixels itself)."""
    if isinstance(net, NatureCNNConfig):
        return NetworkSpec(_nature_torso("torso", net), (LayerSpec("policy", outputs),),
                           pixels=pixels)  # fmt: skip
    torso = _mlp_torso("actor", net)
    head = LayerSpec(f"actor/layer{len(torso)}", outputs)
    return NetworkSpec(torso, (head,), normalize=normalize)


def value_spec(net: NetworkConfig, normalize: bool, pixels: bool) -> NetworkSpec:
    """The state-value network beside `policy_spec`: an MLP critic of its own
    (`critic/layer{i}`), or a `value` head on the CNN policy's torso."""
    if isinstance(net, NatureCNNConfig):
        return NetworkSpec(_nature_torso("torso", net), (LayerSpec("value", 1),), pixels=pixels)
    torso = _mlp_torso("critic", net)
    return NetworkSpec(torso, (LayerSpec(f"critic/layer{len(torso)}", 1),), normalize=normalize)
