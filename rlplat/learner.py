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
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging

from rlplat.config import LearnerConfig
from rlplat.errors import ConfigError

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Placement:
    device: str  # a TensorFlow device string: "/GPU:0" or "/CPU:0"
    why: str
    mixed_precision: bool = False  # float16 compute in the agent's networks (GPU only)


def place_learner(requested: str, gpus: list[str]) -> Placement:
    """Pick the learner's device from `learner.device` and the GPUs TensorFlow sees."""
    if requested == "cpu":
        return Placement("/CPU:0", "learner.device: cpu")
    if gpus:
        return Placement("/GPU:0", f"first of {len(gpus)} visible GPU(s): {gpus[0]}")
    if requested == "gpu":
        raise ConfigError(
            "learner.device: gpu, but TensorFlow sees no GPU on this machine "
            "(use auto or cpu, or check the CUDA driver)"
        )
    return Placement("/CPU:0", "no GPU visible")


def configure_tensorflow(cfg: LearnerConfig) -> Placement:
    """Thread count and GPU memory growth (both must precede TF's first op), then placement."""
    import tensorflow as tf

    if cfg.threads is not None:
        # RuntimeError: TF already started in this process (tests, notebooks).
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(cfg.threads)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    return with_precision(place_learner(cfg.device, [g.name for g in gpus]), cfg)


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
