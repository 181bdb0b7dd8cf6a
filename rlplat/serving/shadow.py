"""The shadow (mirror) arm: a copy of a split request, run once its answer is out.

The front ends hand a copy over only after the answer is sent (REST: on the event loop's
next turn, after the response is written; gRPC: when the RPC has completed). One daemon
thread runs the copies on the shadow version's session directly (not through the request
batcher, so the event loop never runs a shadow batch), the copies queued meanwhile as one
batch: one session call and little Python per copy, so the thread seldom holds the GIL
the front ends need. The queue is bounded: when the shadow
falls behind, copies are dropped and counted rather than queued without end. Its answers are
discarded; its latency, errors and agreement with the answer sent are recorded in metrics.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from rlplat.serving.batching import cut_rows
from rlplat.serving.errors import InvalidArgument
from rlplat.serving.servable import Servable, Signature

if TYPE_CHECKING:
    from rlplat.serving.metrics import ServingMetrics


class Servables(Protocol):
    """What the shadow needs of the model manager (rlplat/serving/models.py): a loaded
    version, held while its copies run."""

    def use(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> AbstractContextManager[Servable]: ...


log = logging.getLogger("rlplat.serve")


@dataclass(frozen=True)
class Copy:
    model: str
    version: int  # the shadow version that runs it
    signature: str
    inputs: dict[str, np.ndarray]  # the request's inputs by key, as the answer took them
    answered: dict[str, np.ndarray]  # the outputs the client got, by key

    @property
    def nbytes(self) -> int:
        """What the copy holds while queued."""
        return sum(a.nbytes for a in (*self.inputs.values(), *self.answered.values()))


def agree(answered: dict[str, np.ndarray], shadow: dict[str, np.ndarray]) -> bool:
    """Whether the shadow chose the same actions: the `actions` output when there is one
    (policies' exports have it), else every output the client got, exactly."""
    keys = ["actions"] if "actions" in answered and "actions" in shadow else list(answered)
    return all(k in shadow and np.array_equal(answered[k], shadow[k]) for k in keys)


class ShadowRunner:
    """Runs copies in one background thread, started on the first copy."""

    def __init__(
        self,
        manager: Servables,
        metrics: ServingMetrics | None,
        size: int = 1024,
        max_batch: int = 64,
        max_bytes: int = 64 << 20,
    ) -> None:
        self.manager, self.metrics, self.max_batch = manager, metrics, max_batch
        self.max_bytes = max_bytes  # the queue's bound in bytes: copies of big requests
        self._queue: queue.Queue[Copy] = queue.Queue(maxsize=size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._queued_bytes = 0  # under _lock

    def submit(self, copy: Copy) -> None:
        """Never blocks: a queue full by count or by bytes drops the copy (counted)."""
        if self._thread is None:
            self._start()
        size = copy.nbytes
        with self._lock:
            fits = self._queued_bytes + size <= self.max_bytes
            self._queued_bytes += size if fits else 0
        if not fits:
            self._record(copy, "dropped", None, None)
            return
        try:
            self._queue.put_nowait(copy)
        except queue.Full:
            self._dequeued([copy])
            self._record(copy, "dropped", None, None)

    def _dequeued(self, copies: list[Copy]) -> None:
        with self._lock:
            self._queued_bytes -= sum(c.nbytes for c in copies)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="rlplat-shadow", daemon=True
                )
                self._thread.start()

    def _work(self) -> None:
        while True:
            copies = [self._queue.get()]
            while len(copies) < self.max_batch:  # what queued meanwhile: one session call
                try:
                    copies.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._dequeued(copies)
            groups: dict[tuple, list[Copy]] = {}
            for copy in copies:
                groups.setdefault((copy.model, copy.version, copy.signature), []).append(copy)
            for group in groups.values():
                try:
                    self.run(group)
                except Exception:  # noqa: BLE001  (a bug here must not end the shadow thread)
                    log.exception("shadow copies of %s requests failed", group[0].model)

    def run(self, group: list[Copy]) -> None:
        """Copies for one model version and signature: each checked as a request to that
        version would be (an invalid one counts as an error), the rest run (as one batch
        when the signature is batchable), each one's result recorded."""
        first = group[0]
        started = time.perf_counter()
        try:
            with self.manager.use(first.model, first.version) as servable:
                sig = servable.signature(first.signature)
                valid, inputs = self._valid(sig, group)
                results = self._run(servable, sig, inputs) if valid else []
        except Exception as exc:  # noqa: BLE001  (not loaded, failed to run: its error, counted)
            seconds = time.perf_counter() - started
            for copy in group:
                self._record(copy, "error", seconds, None)
            log.debug("shadow %s version %d: %s", first.model, first.version, exc)
            return
        seconds = time.perf_counter() - started  # each copy's: its batch's time
        for copy, outputs in zip(valid, results, strict=True):
            self._record(copy, "ok", seconds, agree(copy.answered, outputs))

    def _valid(self, sig: Signature, group: list[Copy]) -> tuple[list[Copy], list[list]]:
        """The copies this signature takes (and their input arrays); the others counted."""
        valid, inputs = [], []
        for copy in group:
            try:
                inputs.append(sig.coerce(copy.inputs, "shadow", exact=True))
            except InvalidArgument as exc:
                self._record(copy, "error", None, None)
                log.debug("shadow %s version %d: %s", copy.model, copy.version, exc)
            else:
                valid.append(copy)
        return valid, inputs

    @staticmethod
    def _run(servable: Servable, sig: Signature, inputs: list[list]) -> list[dict]:
        if sig.batchable and len(inputs) > 1:
            arrays = [np.concatenate(column) for column in zip(*inputs, strict=True)]
            outs = servable.run(sig, arrays)
            per_copy = cut_rows(outs, [arrays[0].shape[0] for arrays in inputs])
        else:
            per_copy = [servable.run(sig, arrays) for arrays in inputs]
        return [dict(zip(sig.outputs, o, strict=True)) for o in per_copy]

    def _record(self, copy: Copy, result: str, seconds: float | None, agreed: bool | None):
        if self.metrics is not None:
            self.metrics.shadow(copy.model, copy.version, result, seconds, agreed)
