"""One loaded SavedModel version: its signatures and the TF1 session that runs them.

Loaded the way TF Serving loads a SavedModel: a TF1 Session over the MetaGraphDef tagged
`serve`, its SignatureDefs naming the tensors to feed and fetch (rlplat/serving/models.py
decides which versions are loaded and when).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2

from rlplat.serving.batching import Batcher
from rlplat.serving.config import ServingConfig
from rlplat.serving.errors import InvalidArgument

# A signature's name -> what its batcher calls with each batch's size (metrics).
BatchHooks = Callable[[str], Callable[[int], None]]

PREDICT_METHOD = "tensorflow/serving/predict"
_ACCEPTS = {"f": "iuf", "i": "iu", "u": "iu", "b": "b"}  # value kinds each dtype kind takes


def _same_values(given: np.ndarray, cast: np.ndarray) -> bool:
    """Whether a cast kept every value in range: no float overflowing to inf, no integer
    wrapping around."""
    if given.dtype == cast.dtype or given.size == 0:
        return True
    if cast.dtype.kind == "f":
        return not (np.isinf(cast) & ~np.isinf(given)).any()
    if given.dtype.kind in "iu" and cast.dtype.kind in "iu":
        info = np.iinfo(cast.dtype)
        return bool(given.min() >= info.min and given.max() <= info.max)
    return True


@dataclass(frozen=True)
class TensorSpec:
    key: str
    tensor_name: str
    dtype: np.dtype
    shape: tuple[int, ...] | None  # None: unknown rank; -1: any size

    @classmethod
    def from_proto(cls, key: str, info: meta_graph_pb2.TensorInfo) -> TensorSpec:
        shape = None
        if not info.tensor_shape.unknown_rank:
            shape = tuple(int(d.size) for d in info.tensor_shape.dim)
        dtype = np.dtype(tf.dtypes.as_dtype(info.dtype).as_numpy_dtype)
        return cls(key, info.name, dtype, shape)

    def array(self, value: object, what: str, exact: bool = False) -> np.ndarray:
        """A request's value (JSON lists or a decoded TensorProto) as this input's dtype:
        numbers only (no None, strings, ragged lists), cast like TF Serving's JSON path
        where no value changes (300 is no uint8, 3.5e38 no float32). `exact`: a tensor
        (gRPC) must have the input's dtype itself, as TF Serving requires."""
        if self.dtype.kind in "SUO":
            raise InvalidArgument(f"{what}: input '{self.key}' is a string tensor: not supported")
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            raise InvalidArgument(
                f"{what}: input '{self.key}' is not a rectangular array"
            ) from None
        kinds = self.dtype.kind if exact else _ACCEPTS.get(self.dtype.kind, "")
        if arr.dtype.kind not in kinds or (exact and arr.dtype != self.dtype):
            got = "a ragged or mixed array" if arr.dtype.kind == "O" else f"{arr.dtype.name} values"
            raise InvalidArgument(
                f"{what}: input '{self.key}' expects {self.dtype.name}, got {got}"
            )
        out = arr.astype(self.dtype, copy=False)
        if not _same_values(arr, out):
            raise InvalidArgument(
                f"{what}: input '{self.key}' expects {self.dtype.name}, got values out of its range"
            )
        return out

    def check(self, value: np.ndarray, what: str) -> None:
        if self.shape is None:
            return
        if value.ndim != len(self.shape) or any(
            want not in (-1, got) for want, got in zip(self.shape, value.shape, strict=True)
        ):
            want = "[" + ", ".join("?" if d == -1 else str(d) for d in self.shape) + "]"
            raise InvalidArgument(
                f"{what}: input '{self.key}' has shape {list(value.shape)}, expected {want}"
            )


@dataclass
class Signature:
    name: str
    method_name: str
    inputs: dict[str, TensorSpec]  # sorted by key: the order `run` takes them in
    outputs: dict[str, TensorSpec]  # sorted by key: the order `run` returns them in
    run: object  # session callable: list of input arrays -> list of output arrays
    batcher: Batcher | None = None

    @functools.cached_property
    def batchable(self) -> bool:
        """Every input and output is [batch, ...] with a free batch dimension."""
        specs = [*self.inputs.values(), *self.outputs.values()]
        return bool(self.inputs) and all(s.shape and s.shape[0] == -1 for s in specs)

    def coerce(self, values: dict[str, object], what: str, exact: bool = False) -> list[np.ndarray]:
        """A request's named values (JSON lists, or with `exact` decoded TensorProtos) as
        this signature's input arrays, checked, in `run` order."""
        values = {k: self.inputs[k].array(v, what, exact) if k in self.inputs else v
                  for k, v in values.items()}  # fmt: skip
        missing = sorted(set(self.inputs) - set(values))
        extra = sorted(set(values) - set(self.inputs))
        if missing or extra:
            problem = f"missing input(s) {missing}" if missing else f"unknown input(s) {extra}"
            raise InvalidArgument(
                f"{what}: {problem}; signature '{self.name}' takes {sorted(self.inputs)}"
            )
        arrays = []
        for key, spec in self.inputs.items():
            arr = values[key]
            spec.check(arr, what)
            arrays.append(arr)
        if self.batchable:
            sizes = {a.shape[0] for a in arrays}
            if len(sizes) > 1:
                raise InvalidArgument(f"{what}: inputs have different batch sizes {sorted(sizes)}")
            if 0 in sizes:
                raise InvalidArgument(f"{what}: empty batch")
        return arrays


class Servable:
    """One loaded version: a session, its signatures, and requests in flight on it."""

    def __init__(self, name: str, version: int, path: Path, cfg: ServingConfig) -> None:
        self.name, self.version, self.path = name, version, path
        self.in_flight = 0
        self._graph = tf.Graph()
        self._session = tf.compat.v1.Session(graph=self._graph, config=session_config(cfg))
        try:
            with _quiet_deprecation():
                self.meta_graph = tf.compat.v1.saved_model.load(self._session, ["serve"], str(path))
            self.signatures: dict[str, Signature] = {}
            for key in sorted(self.meta_graph.signature_def):
                if key.startswith("__"):  # __saved_model_init_op: internal, not served
                    continue
                sd = self.meta_graph.signature_def[key]
                inputs = {k: TensorSpec.from_proto(k, sd.inputs[k]) for k in sorted(sd.inputs)}
                outputs = {k: TensorSpec.from_proto(k, sd.outputs[k]) for k in sorted(sd.outputs)}
                run = session_callable(
                    self._session,
                    [s.tensor_name for s in inputs.values()],
                    [s.tensor_name for s in outputs.values()],
                )
                self.signatures[key] = Signature(key, sd.method_name, inputs, outputs, run)
            if not self.signatures:
                raise ValueError("the SavedModel has no signatures")
        except BaseException:
            self._session.close()
            raise

    def enable_batching(
        self,
        cfg: ServingConfig,
        loop: asyncio.AbstractEventLoop | None,
        on_batch_for: BatchHooks | None,
    ) -> None:
        if not cfg.batching.enabled:
            return
        for sig in self.signatures.values():
            if sig.batchable and sig.method_name == PREDICT_METHOD:
                hook = on_batch_for(sig.name) if on_batch_for is not None else None
                run = lambda arrays, sig=sig: self.run(sig, arrays)  # noqa: E731
                sig.batcher = Batcher(run, cfg.batching, hook)
                if loop is not None:
                    sig.batcher.bind(loop)

    def warm_up(self) -> None:
        """One call per signature with a zero batch of one, before any traffic."""
        for sig in self.signatures.values():
            feeds = [
                np.zeros([1 if d == -1 else d for d in (s.shape or (1,))], s.dtype)
                for s in sig.inputs.values()
            ]
            sig.run(*feeds)

    def signature(self, name: str | None) -> Signature:
        key = name or "serving_default"
        sig = self.signatures.get(key)
        if sig is None:
            raise InvalidArgument(
                f'Serving signature name: "{key}" not found in signature def; model '
                f"'{self.name}' version {self.version} has {sorted(self.signatures)}"
            )
        return sig

    def run(self, sig: Signature, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return sig.run(*arrays)
        except tf.errors.InvalidArgumentError as exc:
            raise InvalidArgument(exc.message.splitlines()[0]) from None

    async def predict(self, sig: Signature, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if sig.batcher is not None:
            return await sig.batcher.submit(arrays)
        return self.run(sig, arrays)

    def predict_blocking(self, sig: Signature, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if sig.batcher is not None:
            return sig.batcher.submit_threadsafe(arrays).result()
        return self.run(sig, arrays)

    def close(self) -> None:
        self._session.close()


def session_config(cfg: ServingConfig) -> tf.compat.v1.ConfigProto:
    """The ConfigProto of every served version's session (and the shadow's)."""
    from tensorflow.core.protobuf import rewriter_config_pb2

    config = tf.compat.v1.ConfigProto(
        inter_op_parallelism_threads=cfg.session_inter_op_threads,
        intra_op_parallelism_threads=cfg.session_intra_op_threads,
    )
    if not cfg.session_remapping:  # (ServingConfig.session_remapping says why)
        config.graph_options.rewrite_options.remapping = rewriter_config_pb2.RewriterConfig.OFF
    return config


def session_callable(
    session: tf.compat.v1.Session, feeds: list[str], fetches: list[str], generic: bool = False
) -> Callable[..., list[np.ndarray]]:
    """Arrays in `feeds` order -> arrays in `fetches` order, as one C call.

    `Session.make_callable` with a feed list runs each call through `Session.run`'s Python
    feed and fetch handling; the session's C callable (TF_SessionMakeCallable, what Keras'
    TF1 backend used) does not, and that is most of a batch-1 call here
    (benchmarks/serve_load.py times both). It is a private method: if a TF release drops
    it, the public path still works.
    """
    from tensorflow.core.protobuf import config_pb2

    make = getattr(session, "_make_callable_from_options", None)
    if make is None or generic:
        return session.make_callable(fetches, feeds)
    return make(config_pb2.CallableOptions(feed=feeds, fetch=fetches))


@contextlib.contextmanager
def _quiet_deprecation() -> Iterator[None]:
    from tensorflow.python.util import deprecation  # the loader warns it is TF1-style

    with deprecation.silence():
        yield
