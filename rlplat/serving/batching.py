"""Request batching across concurrent clients, on the server's event loop.

Requests to one signature of one model version queue here; the queue is flushed by one
callback scheduled with `call_soon`, so every request that arrived in the same event-loop
pass goes into one session call (while a call runs, the next pass's requests gather).
The call runs inline: on a small policy one batched session call is a few hundred
microseconds, and handing it to a thread costs two thread wake-ups per call. With
`batch_timeout_micros` > 0 a flush waits that long for more rows, unless the batch is full.
gRPC handler threads join the same queue through `submit_threadsafe`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlplat.serving.config import BatchingConfig
from rlplat.serving.errors import Unavailable

Run = Callable[[list[np.ndarray]], list[np.ndarray]]


@dataclass
class _Item:
    inputs: list[np.ndarray]
    rows: int
    future: Any  # asyncio.Future or concurrent.futures.Future


class Batcher:
    def __init__(
        self, run: Run, cfg: BatchingConfig, on_batch: Callable[[int], None] | None = None
    ) -> None:
        self._run = run
        self._cfg = cfg
        self._on_batch = on_batch
        self._queue: list[_Item] = []
        self._rows = 0
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    async def submit(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """From a coroutine on the loop: the outputs for these rows."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        future = self._loop.create_future()
        self._enqueue(_Item(inputs, len(inputs[0]), future))
        return await future

    def submit_threadsafe(self, inputs: list[np.ndarray]) -> concurrent.futures.Future:
        """From another thread (gRPC handlers): a future for the outputs."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        item = _Item(inputs, len(inputs[0]), future)
        if self._loop is None or self._loop.is_closed():
            self._flush_items([item])  # no loop (yet): run in the caller's thread
        else:
            self._loop.call_soon_threadsafe(self._enqueue, item)
        return future

    def _enqueue(self, item: _Item) -> None:
        if len(self._queue) >= self._cfg.max_enqueued:
            _fail(item.future, Unavailable("server overloaded: the batch queue is full"))
            return
        self._queue.append(item)
        self._rows += item.rows
        if self._rows >= self._cfg.max_batch_size:
            if self._scheduled is not None:
                self._scheduled.cancel()
            self._scheduled = None
            self._flush()
        elif self._scheduled is None:
            assert self._loop is not None
            timeout = self._cfg.batch_timeout_micros / 1e6
            self._scheduled = (
                self._loop.call_later(timeout, self._flush)
                if timeout > 0
                else self._loop.call_soon(self._flush)
            )

    def _flush(self) -> None:
        self._scheduled = None
        queue, self._queue, self._rows = self._queue, [], 0
        limit = self._cfg.max_batch_size
        batch: list[_Item] = []
        rows = 0
        for item in queue:
            if batch and rows + item.rows > limit:
                self._flush_items(batch)
                batch, rows = [], 0
            batch.append(item)
            rows += item.rows
        if batch:
            self._flush_items(batch)

    def _flush_items(self, batch: list[_Item]) -> None:
        live = [it for it in batch if not it.future.done()]  # drop cancelled requests
        if not live:
            return
        try:
            if len(live) == 1:
                outputs = [self._run(live[0].inputs)]
            else:
                columns = zip(*(it.inputs for it in live), strict=True)
                result = self._run([np.concatenate(parts) for parts in columns])
                outputs = cut_rows(result, [it.rows for it in live])
        except Exception as exc:  # noqa: BLE001  (each waiting request gets the error)
            for it in live:
                _fail(it.future, exc)
            return
        if self._on_batch is not None:
            self._on_batch(sum(it.rows for it in live))
        for it, out in zip(live, outputs, strict=True):
            if not it.future.done():
                it.future.set_result(out)


def cut_rows(result: list[np.ndarray], rows: list[int]) -> list[list[np.ndarray]]:
    """Each request's rows of a batch's outputs (views). Slices, not np.split: np.split is
    Python-level work per piece that cost more than the session call on a small policy
    (benchmarks/serve_ab.py measures a split's extra, smaller batches)."""
    outputs = []
    start = 0
    for n in rows:
        end = start + n
        outputs.append([out[start:end] for out in result])
        start = end
    return outputs


def _fail(future: Any, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
