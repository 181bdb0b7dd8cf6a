"""A :predict body's JSON -> numpy arrays, the part that needs no model: run inline for small
bodies and in worker processes for big ones, so a 4 MiB body does not stall other clients.

Why processes, not threads: orjson and `np.asarray` over nested lists hold the GIL for their
whole run (a 4 MiB body: ~0.3 s of parsing, ~0.1 s of conversion on this machine), so a
thread would block the event loop just the same. The workers import neither TensorFlow nor
the model; they return arrays (pickled as flat buffers) or the request's InvalidArgument.
The rows cap is checked on the parsed lists, before any array is allocated.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from rlplat.serving.errors import InvalidArgument, Unavailable


@dataclass
class Split:
    """A request's values by input name (None: the one unnamed input), as arrays."""

    signature_name: Any  # as given (validated by the caller, after the model is known)
    rows: bool  # the row format (`instances`), else columnar (`inputs`)
    values: dict[str | None, Any]
    mixed: bool = False  # `instances` mixes objects and plain values


class _Ragged:
    """Stands for a value that is not a rectangular array: the signature's conversion
    (np.asarray) raises on it as it would on the ragged list, without the list."""

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise ValueError("ragged")


def _array(value: Any, bools: bool = True) -> Any:
    """`value` as an array. `bools`: the body may hold JSON true/false: numpy would turn
    `[true, 1.4]` into [1.0, 1.4] silently, so a numeric array is checked for them."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):
        return _Ragged()
    if arr.dtype.kind in "OUS":  # refused by every signature: keep the dtype, drop the data
        return np.empty(0, arr.dtype)
    if bools and arr.dtype.kind in "iuf" and _has_bool(value):
        return np.empty(0, object)  # refused as a mixed array
    return arr


def _has_bool(value: Any) -> bool:
    if isinstance(value, list):
        return any(_has_bool(v) for v in value)
    return isinstance(value, bool)


def _check_rows(what: str, n: int, cap: int) -> None:
    if n > cap:
        raise InvalidArgument(
            f"{what}: {n} rows in one request; the limit is {cap} (max_rows_per_request)"
        )


def split_predict(body: Any, cap: int, bools: bool = True) -> Split:
    """The model-independent checks of a :predict body, the rows cap, and the arrays.
    `bools`: whether the body may hold JSON true/false (see _array)."""
    array = functools.partial(_array, bools=bools)
    if not isinstance(body, dict):
        raise InvalidArgument("request body must be a JSON object")
    has_rows, has_cols = "instances" in body, "inputs" in body
    if has_rows == has_cols:
        raise InvalidArgument(
            "request must have exactly one of 'instances' (row format) or 'inputs' (columnar)"
        )
    sig_name = body.get("signature_name")
    if has_rows:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise InvalidArgument("'instances' must be a non-empty list")
        _check_rows("instances", len(rows), cap)
        dicts = sum(isinstance(r, dict) for r in rows)
        if 0 < dicts < len(rows):
            return Split(sig_name, True, {}, mixed=True)
        if not dicts:
            return Split(sig_name, True, {None: array(rows)})
        values = {}
        for key in {k for r in rows for k in r}:
            if not all(key in r for r in rows):
                raise InvalidArgument(f"instances: input '{key}' is missing in some rows")
            values[key] = array([r[key] for r in rows])
        return Split(sig_name, True, values)
    cols = body["inputs"]
    named = cols if isinstance(cols, dict) else {None: cols}
    for value in named.values():
        if isinstance(value, list):
            _check_rows("inputs", len(value), cap)
    return Split(sig_name, False, {k: array(v) for k, v in named.items()})


def decode(raw: bytes, cap: int) -> Split:
    """A :predict body's bytes -> Split (what a worker process runs)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"malformed JSON body: {exc}") from None
    return split_predict(body, cap, bools=b"true" in raw or b"false" in raw)


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: the server shuts the pool down, quietly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def encode_predict(outputs: list[np.ndarray], keys: list[str], rows: bool) -> bytes:
    """A :predict answer's JSON: `predictions` (one value or object per row) for the row
    format, `outputs` for the columnar one."""
    if not rows:
        payload = {
            "outputs": outputs[0] if len(keys) == 1 else dict(zip(keys, outputs, strict=True))
        }
    elif len(keys) == 1:
        payload = {"predictions": outputs[0]}
    else:
        named = list(zip(keys, outputs, strict=True))
        payload = {"predictions": [{k: out[i] for k, out in named} for i in range(len(outputs[0]))]}
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


class Offload:
    """Worker processes for big bodies, at most `workers` at once (the memory a big body
    costs is bounded by that); beyond `workers * 4` waiting, a 503."""

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._slots: asyncio.Semaphore | None = None
        self._waiting = 0

    async def run(self, fn: Any, *args: Any) -> Any:
        if self._waiting >= self.workers * 4:
            raise Unavailable("server overloaded: too many large requests at once")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        self._waiting += 1
        try:
            async with self._slots:
                if self._pool is None:
                    ctx = multiprocessing.get_context("spawn")  # never fork a process with TF
                    self._pool = ProcessPoolExecutor(
                        self.workers, mp_context=ctx, initializer=_worker_init,
                        max_tasks_per_child=64,  # a fresh worker now and then: memory returned
                    )  # fmt: skip
                pool = self._pool
                return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool:  # a worker died (killed for memory?): start afresh next time
            if self._pool is pool:
                self._pool = None
            raise Unavailable("a request decoder process died; retry") from None
        finally:
            self._waiting -= 1

    async def decode(self, raw: bytes, cap: int) -> Split:
        return await self.run(decode, raw, cap)

    async def encode(self, outputs: list[np.ndarray], keys: list[str], rows: bool) -> bytes:
        return await self.run(encode_predict, outputs, keys, rows)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
