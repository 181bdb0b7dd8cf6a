"""Data parallelism under `learner.strategy: mirrored` (rlplat/learner.py): each replica
trains on its own contiguous slice of a minibatch, so gathered per-sample results (TD errors)
come back in the minibatch's order."""

from __future__ import annotations

import tensorflow as tf


def replica_slice(*tensors: tf.Tensor) -> tuple[tf.Tensor, ...]:
    """This replica's equal, contiguous share of each [B, ...] tensor (all of it with no
    strategy); B must be a multiple of the number of replicas (the agents check it)."""
    ctx = tf.distribute.get_replica_context()
    size = tf.shape(tensors[0])[0] // ctx.num_replicas_in_sync
    start = size * tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    return tuple(x[start : start + size] for x in tensors)
