"""`rlplat serve --ray`: the same REST and gRPC APIs as a Ray Serve deployment, N replicas.

Each replica runs the whole single-process stack (ModelManager with its own watcher, request
batching, RestApp, the gRPC handlers) behind Ray Serve's HTTP and gRPC proxies, so versions,
hot reload, labels, errors and the token behave as in `rlplat serve`. The gRPC proxy is
given the tensorflow-serving-api servicers, so stock TF Serving stubs are the client (with a
single Serve application, the proxy needs no `application` metadata). On a cluster the
model base path must be readable at the same path on every node.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import grpc

from rlplat.errors import UserError
from rlplat.serving.auth import bearer_matches

log = logging.getLogger("rlplat.serve")
APP_NAME = "rlplat"


class ModelServer:
    """One replica: the ASGI app over its own ModelManager (built in the replica)."""

    def __init__(self, model_base_path: str, config_path: str | None, token: str | None):
        import rlplat  # noqa: F401  (TF_USE_LEGACY_KERAS etc. before TensorFlow)
        from rlplat.serving.grpc_api import Handlers
        from rlplat.serving.server import build

        self.manager, metrics, self._rest = build(
            Path(model_base_path), Path(config_path) if config_path else None, token
        )
        self._grpc = Handlers(self.manager, metrics)
        self._token = token
        self.manager.start()

    def __serve_build_asgi_app__(self):  # noqa: N807  (Ray Serve's hook name)
        return self._rest

    # gRPC: Ray Serve's proxy calls the method named like the RPC. The handlers block on the
    # batch queue (which runs on this replica's loop), so they run in a thread.

    async def Predict(self, request, grpc_context):  # noqa: N802  (the proto's names)
        return await asyncio.to_thread(self._rpc, "predict", request, grpc_context)

    async def GetModelMetadata(self, request, grpc_context):  # noqa: N802
        return await asyncio.to_thread(self._rpc, "metadata", request, grpc_context)

    async def GetModelStatus(self, request, grpc_context):  # noqa: N802
        return await asyncio.to_thread(self._rpc, "status", request, grpc_context)

    def _rpc(self, method: str, request, grpc_context):
        context = _RayContext(grpc_context)
        if self._token is not None:
            given = dict(grpc_context.invocation_metadata()).get("authorization", "")
            if not bearer_matches(given.encode(), self._token):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")
        return self._grpc.call(method, request, context, getattr(self._grpc, method))


class RpcAborted(Exception):
    """Raised after the status is set on Ray Serve's gRPC context (its proxy sends it)."""


class _RayContext:
    """`context.abort` for the shared handlers, on Ray Serve's gRPC context."""

    def __init__(self, grpc_context) -> None:
        self._context = grpc_context

    def invocation_metadata(self):
        return self._context.invocation_metadata()

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._context.set_code(code)
        self._context.set_details(details)
        raise RpcAborted(details)


GRPC_SERVICERS = [
    "tensorflow_serving.apis.prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server",
    "tensorflow_serving.apis.model_service_pb2_grpc.add_ModelServiceServicer_to_server",
]


def deployment(replicas: int):
    from ray import serve

    return serve.deployment(
        serve.ingress()(ModelServer),
        name="ModelServer",
        num_replicas=replicas,
        ray_actor_options={"num_cpus": 1},
        max_ongoing_requests=256,  # batching needs many requests in flight per replica
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )


def serve(
    model_base_path: Path,
    host: str,
    port: int,
    grpc_port: int | None,
    config_path: Path | None,
    token: str | None,
    replicas: int,
    address: str | None,
    stop: threading.Event | None = None,
) -> None:
    """Run until Ctrl-C (or `stop` is set); Ray Serve and an embedded Ray end with it."""
    from ray import serve as ray_serve

    from rlplat import cluster
    from rlplat.serving import config as serving_config

    serving_config.load(config_path)  # a bad file fails here, in one line, not in replicas
    base = Path(model_base_path).resolve()
    if not base.is_dir():
        raise UserError(f"--model-base-path {model_base_path}: not a directory")
    cluster.start(address, num_actors=replicas, what="--replicas")
    try:
        from ray.serve.config import gRPCOptions

        grpc_options = (
            gRPCOptions(port=grpc_port, grpc_servicer_functions=GRPC_SERVICERS)
            if grpc_port
            else None
        )
        ray_serve.start(
            http_options={"host": host, "port": port},
            grpc_options=grpc_options,
            logging_config={"log_level": "WARNING", "enable_access_log": False},
        )
        app = deployment(replicas).bind(
            str(base), str(Path(config_path).resolve()) if config_path else None, token
        )
        try:
            ray_serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as exc:  # the replicas' tracebacks are in the log above
            raise UserError(f"Ray Serve could not start the replicas: {exc}") from None
        log.info("Ray Serve: %d replica(s), REST on http://%s:%d/v1/models/NAME, gRPC on %s",
                 replicas, host, port, f"{host}:{grpc_port}" if grpc_port else "off")  # fmt: skip
        (stop or threading.Event()).wait()
    finally:
        try:
            ray_serve.shutdown()
        finally:
            cluster.stop()
