"""rlplat serve: Request batching: concurrent requests share a session call and are split back."""

from __future__ import annotations

import asyncio

import numpy as np


def test_concurrent_requests_are_batched_and_split_back():
    from rlplat.serving.batching import Batcher
    from rlplat.serving.config import BatchingConfig
    from rlplat.serving.errors import Unavailable

    calls: list[int] = []

    def run(arrays):
        calls.append(len(arrays[0]))
        if np.any(arrays[0] < 0):
            raise ValueError("negative")
        return [arrays[0] * 2, arrays[0].sum(axis=1)]

    async def scenario(cfg: BatchingConfig, n: int, rows: int = 1):
        batcher = Batcher(run, cfg, on_batch=None)
        xs = [np.full((rows, 3), i, np.float32) for i in range(n)]
        return xs, await asyncio.gather(*(batcher.submit([x]) for x in xs), return_exceptions=True)

    xs, outs = asyncio.run(scenario(BatchingConfig(max_batch_size=64), 10))
    assert calls == [10]  # one session call for ten concurrent requests
    for x, (double, total) in zip(xs, outs, strict=True):
        np.testing.assert_array_equal(double, x * 2)
        np.testing.assert_array_equal(total, x.sum(axis=1))
    calls.clear()
    asyncio.run(scenario(BatchingConfig(max_batch_size=4), 10))
    assert calls == [4, 4, 2]
    calls.clear()
    _, outs = asyncio.run(scenario(BatchingConfig(max_batch_size=64, max_enqueued=6), 10))
    assert sum(isinstance(o, Unavailable) for o in outs) == 4  # the queue is bounded
    assert calls == [6]
    calls.clear()
    asyncio.run(scenario(BatchingConfig(max_batch_size=64, batch_timeout_micros=20_000), 3, 2))
    assert calls == [6]

    async def one_bad():
        batcher = Batcher(run, BatchingConfig(), on_batch=None)
        good, bad = np.ones((1, 3), np.float32), -np.ones((1, 3), np.float32)
        return await asyncio.gather(batcher.submit([good]), batcher.submit([bad]),
                                    return_exceptions=True)  # fmt: skip

    assert all(isinstance(o, ValueError) for o in asyncio.run(one_bad()))


def test_requests_of_different_sizes_get_their_own_rows_back():
    from rlplat.serving.batching import Batcher
    from rlplat.serving.config import BatchingConfig

    def run(arrays):
        return [arrays[0] + 1, arrays[0][:, :1]]

    async def scenario():
        batcher = Batcher(run, BatchingConfig(max_batch_size=64), on_batch=None)
        xs = [np.full((rows, 2), i, np.float32) for i, rows in enumerate([1, 3, 2, 5])]
        return xs, await asyncio.gather(*(batcher.submit([x]) for x in xs))

    xs, outs = asyncio.run(scenario())
    for x, (plus, first) in zip(xs, outs, strict=True):
        np.testing.assert_array_equal(plus, x + 1)
        np.testing.assert_array_equal(first, x[:, :1])
