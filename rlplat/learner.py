"""Where the learner runs: device placement and TensorFlow threads.

The learner is the training process itself (it owns the run directory, replay and
checkpoints); collectors are Ray actors with `num_gpus=0` and no TensorFlow. So on a
machine with a GPU the learner's variables and training graphs go there, and on a CPU-only
machine the same code runs on the CPU. On a cluster, start `rlplat train --address ...`
on the node that has the GPU: collectors spread over the cluster's CPUs.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from rlplat.config import LearnerConfig
from rlplat.errors import ConfigError


@dataclass(frozen=True)
class Placement:
    device: str  # a TensorFlow device string: "/GPU:0" or "/CPU:0"
    why: str


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
    return place_learner(cfg.device, [g.name for g in gpus])
