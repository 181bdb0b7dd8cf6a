"""The shadow (mirror) arm: a copy of a split request, run once its answer is out.

The front ends hand a copy over only after the answer is sent (REST: on the event loop's
next turn, after the response is written; gRPC: when the RPC has completed). One daemon
thread runs the copies on the shadow version's session directly (not through the request
batcher, so the event loop never runs a shadow batch). The queue is bounded: when the shadow
falls behind, copies are dropped and counted rather than queued without end. Its answers are
discarded; its latency, errors and agreement with the answer sent are recorded in metrics.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rlplat.serving.metrics import ServingMetrics
    from rlplat.serving.models import ModelManager

log = logging.getLogger("rlplat.serve")


@dataclass(frozen=True)
class Copy:
    model: str
    version: int
    signature: str
    arrays: list[np.ndarray]
    answered: dict[str, np.ndarray]  # the outputs the client got, by key


def agree(answered: dict[str, np.ndarray], shadow: dict[str, np.ndarray]) -> bool:
    """Whether the shadow chose the same actions: the `actions` output when there is one
    (policies' exports have it), else every output the client got, exactly."""
    keys = ["actions"] if "actions" in answered and "actions" in shadow else list(answered)
    return all(k in shadow and np.array_equal(answered[k], shadow[k]) for k in keys)


class ShadowRunner:
    """Runs copies in one background thread, started on the first copy."""

    def __init__(self, manager: ModelManager, metrics: ServingMetrics | None, size: int = 256):
        self.manager, self.metrics = manager, metrics
        self._queue: queue.Queue[Copy] = queue.Queue(maxsize=size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, copy: Copy) -> None:
        """Never blocks: a full queue drops the copy (counted)."""
        if self._thread is None:
            self._start()
        try:
            self._queue.put_nowait(copy)
        except queue.Full:
            self._record(copy, "dropped", None, None)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="rlplat-shadow", daemon=True
                )
                self._thread.start()

    def _work(self) -> None:
        while True:
            copy = self._queue.get()
            try:
                self.run(copy)
            except Exception:  # noqa: BLE001  (a bug here must not end the shadow thread)
                log.exception("shadow copy of a %s request failed", copy.model)

    def run(self, copy: Copy) -> None:
        """One copy: run it on the shadow version, record the result."""
        started = time.perf_counter()
        try:
            with self.manager.use(copy.model, copy.version) as servable:
                sig = servable.signature(copy.signature)
                outputs = dict(zip(sig.outputs, servable.run(sig, copy.arrays), strict=True))
        except Exception as exc:  # noqa: BLE001  (not loaded, wrong inputs: its error, counted)
            self._record(copy, "error", time.perf_counter() - started, None)
            log.debug("shadow %s version %d: %s", copy.model, copy.version, exc)
            return
        self._record(copy, "ok", time.perf_counter() - started, agree(copy.answered, outputs))

    def _record(self, copy: Copy, result: str, seconds: float | None, agreed: bool | None):
        if self.metrics is not None:
            self.metrics.shadow(copy.model, copy.version, result, seconds, agreed)
