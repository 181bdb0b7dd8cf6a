"""`rlplat serve --ray`: the same REST API as a Ray Serve deployment with N replicas.

Each replica runs the whole single-process stack (ModelManager with its own watcher, request
batching, RestApp) behind Ray Serve's HTTP proxy, so versions, hot reload, labels, errors and
the token behave as in `rlplat serve`. gRPC stays with the single-process server (Ray Serve's
gRPC proxy routes by its own application metadata, which stock TF Serving clients do not
send). On a cluster the model base path must be readable at the same path on every node.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from rlplat.errors import UserError

log = logging.getLogger("rlplat.serve")
APP_NAME = "rlplat"


class ModelServer:
    """One replica: the ASGI app over its own ModelManager (built in the replica)."""

    def __init__(self, model_base_path: str, config_path: str | None, token: str | None):
        import rlplat  # noqa: F401  (TF_USE_LEGACY_KERAS etc. before TensorFlow)
        from rlplat.serving.server import build

        self.manager, _, self._rest = build(
            Path(model_base_path), Path(config_path) if config_path else None, token
        )
        self.manager.start()

    def __serve_build_asgi_app__(self):  # noqa: N807  (Ray Serve's hook name)
        return self._rest


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
    cluster.start(address, num_actors=replicas)
    try:
        ray_serve.start(http_options={"host": host, "port": port}, logging_config={
            "log_level": "WARNING", "enable_access_log": False})  # fmt: skip
        app = deployment(replicas).bind(
            str(base), str(Path(config_path).resolve()) if config_path else None, token
        )
        try:
            ray_serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        except RuntimeError as exc:  # the replicas' tracebacks are in the log above
            raise UserError(f"Ray Serve could not start the replicas: {exc}") from None
        log.info("Ray Serve: %d replica(s), REST on http://%s:%d/v1/models/NAME",
                 replicas, host, port)  # fmt: skip
        (stop or threading.Event()).wait()
    finally:
        try:
            ray_serve.shutdown()
        finally:
            cluster.stop()
