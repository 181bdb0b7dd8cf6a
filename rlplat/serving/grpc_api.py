"""TF Serving's gRPC services (PredictionService, ModelService) over the ModelManager.

The protos and service definitions are the `tensorflow-serving-api` package's, so its
generated stubs are the client. Handlers run in gRPC's thread pool; predictions join the
REST requests' batch queues on the event loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from rlplat.serving.auth import authorized
from rlplat.serving.errors import InvalidArgument, ServingError
from rlplat.serving.metrics import ServingMetrics
from rlplat.serving.models import ModelManager
from rlplat.serving.rest import signature_def_map
from rlplat.serving.shadow import Copy
from rlplat.serving.traffic import ROUTE_METADATA

log = logging.getLogger("rlplat.serve")
_STATE = get_model_status_pb2.ModelVersionStatus.State


def _spec(request: Any) -> tuple[str, int | None, str | None]:
    spec = request.model_spec
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label or None
    if version is not None and label is not None:
        raise InvalidArgument("model_spec: give a version or a version_label, not both")
    return spec.name, version, label


def _to_array(proto: tensor_pb2.TensorProto, max_bytes: int, max_rows: int) -> np.ndarray:
    """A TensorProto as numpy, refusing shapes larger than a request may be: one repeated
    value may stand for any number of elements, and make_ndarray would allocate them all."""
    dims = [d.size for d in proto.tensor_shape.dim]
    if any(d < 0 for d in dims):
        raise InvalidArgument(f"malformed TensorProto: negative dimension in {dims}")
    try:
        itemsize = max(tf.dtypes.as_dtype(proto.dtype).size, 1) if proto.dtype else 1
    except TypeError:  # not a DataType enum value
        raise InvalidArgument(f"malformed TensorProto: unknown dtype {proto.dtype}") from None
    if math.prod(dims) * itemsize > max_bytes:
        raise InvalidArgument(f"tensor of shape {dims} is larger than {max_bytes} bytes")
    if dims and dims[0] > max_rows:
        raise InvalidArgument(
            f"inputs: {dims[0]} rows in one request; the limit is {max_rows} (max_rows_per_request)"
        )
    try:
        return tf.make_ndarray(proto)
    except Exception as exc:  # noqa: BLE001  (any malformed TensorProto is the client's)
        raise InvalidArgument(f"malformed TensorProto: {exc}") from None


class Handlers:
    """The three RPCs over a ModelManager, for grpc.server and Ray Serve's gRPC proxy."""

    def __init__(self, manager: ModelManager, metrics: ServingMetrics) -> None:
        self.manager, self.metrics = manager, metrics

    def call(self, method: str, request: Any, context: grpc.ServicerContext, fn: Callable) -> Any:
        started = time.perf_counter()
        name, version_label = request.model_spec.name, ["", ""]  # version, arm (when split)
        code = "UNKNOWN"  # set before anything can raise: the finally reads it
        try:
            response = fn(request, version_label, context)
            code = "OK"
            return response
        except ServingError as exc:
            code = exc.grpc_code.name
            context.abort(exc.grpc_code, str(exc))
        except Exception as exc:  # a bug: INTERNAL with its name, counted, and logged
            code = "INTERNAL"
            log.exception("gRPC %s failed", method)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            model = name if self.manager.known(name) else "(unknown)"
            seconds = time.perf_counter() - started
            self.metrics.observe(
                model, version_label[0], "grpc", method, code, seconds, version_label[1]
            )

    def predict(self, request: predict_pb2.PredictRequest, version_out: list, context: Any) -> Any:
        name, version, label = _spec(request)
        key = _route_key(context)
        with self.manager.use_routed(name, version, label, key) as (servable, routed):
            version_out[0], version_out[1] = str(servable.version), routed.arm or ""
            sig = servable.signature(request.model_spec.signature_name or None)
            cfg = self.manager.cfg
            values = {
                k: _to_array(v, cfg.max_body_bytes, cfg.max_rows_per_request)
                for k, v in request.inputs.items()
            }
            arrays = sig.coerce(values, "inputs", exact=True)
            keys = list(sig.outputs)
            wanted = list(request.output_filter) or keys
            unknown = sorted(set(wanted) - set(keys))
            if unknown:
                raise InvalidArgument(f"output_filter: unknown output(s) {unknown}; has {keys}")
            outputs = dict(zip(keys, servable.predict_blocking(sig, arrays), strict=True))
            response = predict_pb2.PredictResponse()
            response.model_spec.name = name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = sig.name
            for k in wanted:
                response.outputs[k].CopyFrom(tf.make_tensor_proto(outputs[k]))
        shadow = routed.shadow_version
        if shadow is not None and shadow != servable.version:
            inputs = dict(zip(sig.inputs, arrays, strict=True))
            self._mirror(context, Copy(name, shadow, sig.name, inputs, outputs))
        return response

    def _mirror(self, context: Any, copy: Copy) -> None:
        """The shadow gets its copy once the RPC has completed (its answer sent); a context
        without callbacks (Ray Serve's) hands it over now: the shadow runs in its own thread."""
        submit = self.manager.shadow.submit
        add_callback = getattr(context, "add_callback", None)
        if add_callback is None or not add_callback(lambda: submit(copy)):
            submit(copy)

    def metadata(self, request: Any, version_out: list, _context: Any = None) -> Any:
        name, version, label = _spec(request)
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise InvalidArgument(f"metadata_field must be ['signature_def'], got {fields}")
        with self.manager.use(name, version, label) as servable:
            version_out[0] = str(servable.version)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(signature_def_map(servable))
            return response

    def status(self, request: Any, version_out: list, _context: Any = None) -> Any:
        name, version, label = _spec(request)
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, s in self.manager.status(name, version, label):
            item = response.model_version_status.add()
            item.version = v
            item.state = _STATE.Value(s.state)
            item.status.error_code = s.error_code_number
            item.status.error_message = s.error_message
        return response


def _route_key(context: Any) -> bytes | None:
    """The request's routing key (gRPC metadata x-rlplat-route), if any."""
    for key, value in context.invocation_metadata() or ():
        if key == ROUTE_METADATA:
            return value.encode() if isinstance(value, str) else value
    return None


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, handlers: Handlers) -> None:
        self.h = handlers

    def Predict(self, request, context):  # noqa: N802  (the proto's method name)
        return self.h.call("predict", request, context, self.h.predict)

    def GetModelMetadata(self, request, context):  # noqa: N802
        return self.h.call("metadata", request, context, self.h.metadata)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, handlers: Handlers) -> None:
        self.h = handlers

    def GetModelStatus(self, request, context):  # noqa: N802
        return self.h.call("status", request, context, self.h.status)


class _BearerToken(grpc.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

        self._deny = grpc.unary_unary_rpc_method_handler(deny)

    def intercept_service(self, continuation, details):
        given = [v.encode() if isinstance(v, str) else v
                 for k, v in details.invocation_metadata if k == "authorization"]  # fmt: skip
        if authorized(given, self._token):
            return continuation(details)
        return self._deny


MAX_CONCURRENT_RPCS = 1000


def make_server(
    manager: ModelManager,
    metrics: ServingMetrics,
    address: str,
    max_message_bytes: int,
    token: str | None = None,
    workers: int = 16,
    max_connections: int = 1000,
    idle_timeout: float = 30.0,
    reuse_port: bool = False,
) -> grpc.Server:
    """A started-on-demand gRPC server bound to `address` (raises if it cannot bind).
    Beyond `max_connections` gRPC itself refuses new connections; idle ones close.
    `reuse_port`: share the port with the other replicas on this host (ports.bind)."""
    handlers = Handlers(manager, metrics)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rlplat-grpc"),
        interceptors=[_BearerToken(token)] if token else [],
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.so_reuseport", int(reuse_port)),
            ("grpc.max_allowed_incoming_connections", max_connections),
            ("grpc.max_connection_idle_ms", int(idle_timeout * 1000)),
            ("grpc.max_concurrent_streams", MAX_CONCURRENT_RPCS),
        ],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(handlers), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(handlers), server)
    if server.add_insecure_port(address) == 0:
        raise OSError(f"cannot bind gRPC to {address}")
    return server
