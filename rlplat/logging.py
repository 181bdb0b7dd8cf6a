"""TensorBoard scalars (x axis: env steps), the metrics window averaged between two log
points, and the event-file trim that makes resume exact."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.summary.writer.event_file_writer import EventFileWriter


class TensorBoardLogger:
    """One writer per run; every value is logged against env steps."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self._writer = tf.summary.create_file_writer(str(logdir))

    def scalars(self, values: dict[str, float], step: int) -> None:
        with self._writer.as_default(step=step):
            for tag, value in values.items():
                tf.summary.scalar(tag, value)

    def histograms(self, values: dict[str, np.ndarray], step: int) -> None:
        with self._writer.as_default(step=step):
            for tag, value in values.items():
                tf.summary.histogram(tag, value)

    def animation(self, tag: str, gif: bytes, height: int, width: int, step: int) -> None:
        """An animated GIF as an image summary: TensorBoard's Images tab plays it."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        image = Summary.Image(height=height, width=width, colorspace=3,
                              encoded_image_string=gif)  # fmt: skip
        summary = Summary(value=[Summary.Value(tag=tag, image=image)])
        with self._writer.as_default(step=step):
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MetricsWindow:
    """Averages train metrics and measures rates between two log points."""

    def __init__(self, env_steps: int, train_steps: int):
        # Each key is averaged over its own count: train metrics arrive once per phase,
        # collector metrics (weight lag) once per fragment.
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)
        self._min: float | None = None
        self._t, self._env, self._train = time.perf_counter(), env_steps, train_steps

    def add(self, metrics: dict[str, float]) -> None:
        for k, v in metrics.items():
            self._sums[k] += v
            self._counts[k] += 1

    def add_is_weights(self, weights: np.ndarray) -> None:
        """Prioritized replay's importance weights: mean (averaged like metrics) and min."""
        self.add({"replay/is_weight_mean": float(weights.mean())})
        low = float(weights.min())
        self._min = low if self._min is None else min(self._min, low)

    def flush(self, env_steps: int, train_steps: int) -> dict[str, float]:
        """The window's averages and rates; the next window starts now."""
        now = time.perf_counter()
        dt = max(now - self._t, 1e-9)
        out = {k: v / self._counts[k] for k, v in self._sums.items()}
        if self._min is not None:
            out["replay/is_weight_min"] = self._min
            self._min = None
        out["charts/SPS"] = (env_steps - self._env) / dt
        out["charts/updates_per_s"] = (train_steps - self._train) / dt
        out["charts/train_steps"] = float(train_steps)
        self._sums.clear()
        self._counts.clear()
        self._t, self._env, self._train = now, env_steps, train_steps
        return out


def truncate_events(logdir: Path, max_step: int) -> int:
    """Drop events logged after `max_step` (the checkpoint a resume starts from).

    Without this, the steps between the last checkpoint and a crash would be logged
    twice. Events are copied into one new file, then the old files are removed.
    Returns the number of events dropped.
    """
    files = sorted(p for p in logdir.glob("events.out.tfevents.*") if p.is_file())
    if not files:
        return 0
    kept, dropped = [], 0
    for path in files:
        for event in EventFileLoader(str(path)).Load():
            if event.step > max_step:
                dropped += 1
            elif not event.HasField("file_version") or not kept:
                kept.append(event)
    if dropped == 0:
        return 0
    writer = EventFileWriter(str(logdir), filename_suffix=".resumed")
    for event in kept:
        writer.add_event(event)
    writer.close()
    for path in files:
        path.unlink()
    return dropped
