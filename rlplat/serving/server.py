"""`rlplat serve`: REST (uvicorn) and gRPC over one ModelManager, in one process."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path

from rlplat.errors import UserError
from rlplat.serving import config as serving_config
from rlplat.serving.heap import HeapFreezer
from rlplat.serving.metrics import ServingMetrics
from rlplat.serving.models import ModelManager
from rlplat.serving.rest import RestApp

log = logging.getLogger("rlplat.serve")


def bind(host: str, port: int) -> socket.socket:
    """Bind before loading anything, so a busy port is one line, not a traceback."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def build(
    model_base_path: Path, config_path: Path | None, token: str | None
) -> tuple[ModelManager, ServingMetrics, RestApp]:
    cfg = serving_config.load(config_path)
    if not Path(model_base_path).is_dir():
        raise UserError(f"--model-base-path {model_base_path}: not a directory")
    metrics = ServingMetrics()
    manager = ModelManager(model_base_path, cfg, config_path, metrics)
    return manager, metrics, RestApp(manager, metrics, cfg.max_body_bytes, token)


def serve(
    model_base_path: Path,
    host: str = "127.0.0.1",
    port: int = 8501,
    grpc_port: int | None = 8500,
    config_path: Path | None = None,
    token: str | None = None,
    http: str = "lean",
) -> None:
    """Serve until SIGINT/SIGTERM. `http`: "lean" (rlplat.serving.http) or "uvicorn"."""
    import uvloop

    from rlplat.serving.grpc_api import make_server

    manager, metrics, app = build(model_base_path, config_path, token)
    sock = bind(host, port)
    grpc_server = None
    if grpc_port is not None:
        try:
            grpc_server = make_server(
                manager, metrics, f"{host}:{grpc_port}", manager.cfg.max_body_bytes, token
            )
        except (OSError, RuntimeError):
            sock.close()
            raise UserError(f"cannot listen on {host}:{grpc_port} (gRPC): in use?") from None

    async def main() -> None:
        manager.loop = asyncio.get_running_loop()
        await asyncio.to_thread(manager.start)
        _keep_heap_frozen(manager)
        summary = ", ".join(f"{n} {_versions(manager, n)}" for n in manager.names())
        log.info("serving from %s: %s", manager.base_path, summary or "no models yet")
        if grpc_server is not None:
            grpc_server.start()
        rest_port = sock.getsockname()[1]
        log.info("REST on http://%s:%d/v1/models/NAME, gRPC on %s, metrics at "
                 "/monitoring/prometheus/metrics", host, rest_port,
                 f"{host}:{grpc_port}" if grpc_server else "off")  # fmt: skip
        if http == "uvicorn":
            await _uvicorn(app).serve(sockets=[sock])
        else:
            from rlplat.serving.http import serve_http

            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await serve_http(app, sock, stop)

    try:
        uvloop.run(main())
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=1).wait()
        manager.stop()
        app.offload.close()
        sock.close()


def _keep_heap_frozen(manager: ModelManager) -> None:
    """Freeze the heap now and after each model change (rlplat/serving/heap.py)."""
    freezer = HeapFreezer(manager)
    loop = asyncio.get_running_loop()

    def tick() -> None:
        freezer.check()
        loop.call_later(1.0, tick)

    tick()


def _uvicorn(app: RestApp):
    import uvicorn

    return uvicorn.Server(
        uvicorn.Config(
            app,
            loop="none",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_keep_alive=30,
            server_header=False,
            proxy_headers=False,  # no X-Forwarded-* rewriting on the hot path
        )
    )


def _versions(manager: ModelManager, name: str) -> str:
    try:
        items = manager.status(name)
    except Exception:  # noqa: BLE001
        return ""
    return "(" + ", ".join(f"v{v} {s.state}" for v, s in items) + ")"
