"""Where the learner runs: device placement and TensorFlow threads.

The learner is the training process itself (it owns the run directory, replay and
checkpoints); collectors are Ray actors with `num_gpus=0` and no TensorFlow. So on a
machine with a GPU the learner's variables and training graphs go there, and on a CPU-only
machine the same code runs on the CPU. On a cluster, start `rlplat train --address ...`
on the node that has the GPU: collectors spread over the cluster's CPUs.

`learner.mixed_precision` (float16 compute, float32 variables) is honoured on a GPU only:
on a CPU learner it is off with one warning line rather than an error, so one experiment
file runs on a GPU machine and on a laptop alike (as `learner.device: auto` does), and a
CPU run trains in float32, which is faster there (x86 has no fast float16 arithmetic).

`learner.strategy: mirrored` spreads the learner over `learner.devices` with a
tf.distribute.MirroredStrategy: the agent is built under `learner_scope(placement)`, so its
variables are mirrored, and its training phase splits each minibatch across the replicas
(agents/ppo.py). On a CPU-only machine the devices are TensorFlow's logical CPUs (what the
tests make two of, tests/test_multi_device.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Sequence
from typing import Any

from rlplat._quiet_import import cuda_note
from rlplat.config import ExperimentConfig, LearnerConfig
from rlplat.errors import ConfigError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Placement:
    device: str  # a TensorFlow device string: "/GPU:0" or "/CPU:0"
    why: str
    mixed_precision: bool = False  # float16 compute in the agent's networks (GPU only)
    devices: tuple[str, ...] = ()  # learner.strategy: mirrored: its replicas' devices


def place_learner(requested: str, gpus: list[str]) -> Placement:
    """Pick the learner's device from `learner.device` and the GPUs TensorFlow sees."""
    if requested == "cpu":
        return Placement("/CPU:0", "learner.device: cpu")
    if gpus:
        return Placement("/GPU:0", f"first of {len(gpus)} visible GPU(s): {gpus[0]}")
    if requested == "gpu":
        raise ConfigError(
            "learner.device: gpu, but TensorFlow sees no GPU on this machine "
            f"(use auto or cpu, or check the CUDA driver){cuda_note()}"
        )
    return Placement("/CPU:0", "no GPU visible")


def configure_tensorflow(cfg: LearnerConfig) -> Placement:
    """Thread count and GPU memory growth (both must precede TF's first op), then placement."""
    return with_precision(learner_placement(cfg), cfg)


def check_split(exp: ExperimentConfig, n: int) -> None:
    """A mirrored learner splits each of the agent's batches evenly across its `n` devices:
    a batch that does not divide is a ConfigError naming the setting, before a run starts."""
    for key, size in exp.agent.split_batches(exp).items() if n > 1 else ():
        if size % n:
            raise ConfigError(
                f"{key}: {size} does not split evenly across the learner's {n} devices "
                "(learner.devices)"
            )


def learner_placement(cfg: LearnerConfig) -> Placement:
    """`learner.device` and `learner.devices` against the devices TensorFlow sees, after
    the settings that must precede its first op; a device it lacks is a ConfigError (what
    rlplat/cli.py checks before it makes a run directory)."""
    import tensorflow as tf

    if cfg.threads is not None:
        # RuntimeError: TF already started in this process (tests, notebooks).
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    placement = place_learner(cfg.device, [g.name for g in gpus])
    if cfg.strategy == "mirrored" or cfg.devices not in ("auto", 1):
        kind = "CPU" if placement.device.startswith("/CPU") else "GPU"
        visible = [d.name for d in tf.config.list_logical_devices(kind)]
        devices = pick_devices(cfg.devices, cfg.strategy, visible)
        placement = dataclasses.replace(placement, device=devices[0], devices=devices)
    return placement


def _short(name: str) -> str:
    """'/job:localhost/replica:0/task:0/device:GPU:1' or '/device:GPU:1' -> '/GPU:1'."""
    return "/" + name.rsplit("device:", 1)[-1].lstrip("/")


def pick_devices(
    requested: str | int | list[str], strategy: str, visible: Sequence[str]
) -> tuple[str, ...]:
    """`learner.devices` resolved against the logical devices TensorFlow sees (GPUs, or CPUs
    on a CPU learner); more devices than there are is a ConfigError naming the key."""
    visible = [_short(v) for v in visible]
    if requested == "auto":
        chosen = visible if strategy == "mirrored" else visible[:1]
    elif isinstance(requested, int):
        if requested > len(visible):
            raise ConfigError(
                f"learner.devices: {requested}, but TensorFlow sees {len(visible)} "
                f"device(s) of this kind: {', '.join(visible) or 'none'}"
            )
        chosen = visible[:requested]
    else:
        missing = [d for d in requested if _short(d) not in visible]
        if missing or not requested:
            raise ConfigError(
                f"learner.devices: {missing or requested} not among the devices TensorFlow "
                f"sees: {', '.join(visible) or 'none'}"
            )
        chosen = [_short(d) for d in requested]
    if len(chosen) > 1 and strategy != "mirrored":
        raise ConfigError(f"learner.devices: {len(chosen)} devices need learner.strategy: mirrored")
    return tuple(chosen)


def learner_scope(placement: Placement) -> Any:
    """Where to build the agent: a MirroredStrategy's scope over `placement.devices`, or
    `tf.device(placement.device)`. An agent reads the strategy back with
    `tf.distribute.get_strategy()` when it is built."""
    import tensorflow as tf

    if not placement.devices:
        return tf.device(placement.device)
    return _mirrored(placement.devices).scope()


@functools.cache
def _mirrored(devices: tuple[str, ...]) -> Any:
    """One MirroredStrategy per device set and process: each strategy numbers its collective
    ops from the same start, so two over the same devices (two agents built in one process)
    would mix up each other's all-reduces."""
    import tensorflow as tf

    return tf.distribute.MirroredStrategy(list(devices))


def with_precision(placement: Placement, cfg: LearnerConfig) -> Placement:
    """`placement` with `learner.mixed_precision` applied: on for a GPU device when asked,
    off on a CPU (one warning: the run trains in float32)."""
    if not cfg.mixed_precision:
        return placement
    if placement.device.startswith("/GPU"):
        return dataclasses.replace(placement, mixed_precision=True)
    log.warning(
        "learner.mixed_precision: off, the learner runs on the CPU (%s); training in float32",
        placement.why,
    )
    return placement
