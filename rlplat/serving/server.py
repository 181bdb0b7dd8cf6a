"""`rlplat serve`: REST (rlplat.serving.http, or uvicorn) and gRPC over one ModelManager, in
one process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import socket
from dataclasses import dataclass
from pathlib import Path

from rlplat.errors import UserError
from rlplat.serving import config as serving_config
from rlplat.serving.heap import HeapFreezer
from rlplat.serving.http import Limits, serve_http
from rlplat.serving.metrics import ServingMetrics
from rlplat.serving.models import ModelManager
from rlplat.serving.ports import bind, hostport
from rlplat.serving.rest import RestApp

log = logging.getLogger("rlplat.serve")


def connection_cap(wanted: int, reserve: int = 256) -> int:
    """max_connections for each API, within the process's file descriptors: raise the soft
    limit towards the hard one if needed, else lower the cap (and say so), so connections
    can never use up the descriptors models and logs need."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * wanted + reserve  # REST and gRPC each, and the rest of the process
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    cap = max(1, (soft - reserve) // 2)
    log.warning("max_connections %d lowered to %d: only %d file descriptors (ulimit -n)",
                wanted, cap, soft)  # fmt: skip
    return cap


def build(
    model_base_path: Path, config_path: Path | None, token: str | None
) -> tuple[ModelManager, ServingMetrics, RestApp]:
    cfg = serving_config.check_inputs(model_base_path, config_path)
    metrics = ServingMetrics()
    manager = ModelManager(model_base_path, cfg, config_path, metrics)
    return manager, metrics, RestApp(manager, metrics, cfg.max_body_bytes, token)


@dataclass(frozen=True)
class ReplicaRole:
    """This server is one replica of `rlplat serve --ray` (rlplat/serving/replicas.py): it
    shares its ports with the other replicas on its host, and its supervisor reaches it on
    a loopback admin port that `ready_file` names once it serves."""

    ready_file: Path


def serve(
    model_base_path: Path,
    host: str = "127.0.0.1",
    port: int = 8501,
    grpc_port: int | None = 8500,
    config_path: Path | None = None,
    token: str | None = None,
    http: str = "lean",
    replica: ReplicaRole | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. `http`: "lean" (rlplat.serving.http) or "uvicorn"."""
    import uvloop

    manager, metrics, app = build(model_base_path, config_path, token)
    limits = Limits.of(manager.cfg, connection_cap(manager.cfg.max_connections))
    shared = replica is not None
    sock = bind(host, port, reuse_port=shared, listen=not shared)
    grpc_server = None
    # A replica binds gRPC once loaded, as it listens: connections reach only ready replicas.
    if not shared:
        grpc_server = _grpc(manager, metrics, host, grpc_port, limits, token, sock)

    async def main() -> None:
        nonlocal grpc_server
        manager.loop = asyncio.get_running_loop()
        await asyncio.to_thread(manager.start)
        _keep_heap_frozen(manager)
        summary = ", ".join(f"{n} {_versions(manager, n)}" for n in manager.names())
        log.info("serving from %s: %s", manager.base_path, summary or "no models yet")
        if shared:
            sock.listen(2048)
            grpc_server = _grpc(manager, metrics, host, grpc_port, limits, token, sock, True)
        if grpc_server is not None:
            grpc_server.start()
        log.info("REST on http://%s/v1/models/NAME, gRPC on %s, metrics at "
                 "/monitoring/prometheus/metrics", hostport(host, sock.getsockname()[1]),
                 hostport(host, grpc_port) if grpc_server else "off")  # fmt: skip
        await _front_ends(app, sock, limits, http, replica)

    try:
        uvloop.run(main())
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=1).wait()
        manager.stop()
        app.offload.close()
        sock.close()


def _grpc(manager, metrics, host, port, limits, token, rest_sock, reuse_port=False):
    """The gRPC server (None when `port` is None), or one line on why it cannot bind."""
    from rlplat.serving.grpc_api import make_server

    if port is None:
        return None
    try:
        return make_server(
            manager, metrics, hostport(host, port), manager.cfg.max_body_bytes, token,
            max_connections=limits.max_connections, idle_timeout=limits.idle_timeout,
            reuse_port=reuse_port,
        )  # fmt: skip
    except (OSError, RuntimeError):
        rest_sock.close()
        why = _bind_error(host, port)
        raise UserError(f"cannot listen on {hostport(host, port)} (gRPC): {why}") from None


async def _front_ends(
    app: RestApp, sock: socket.socket, limits: Limits, http: str, replica: ReplicaRole | None
) -> None:
    """REST until SIGINT/SIGTERM; a replica also answers its supervisor on loopback."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    fronts = []
    if replica is not None:
        admin = bind("127.0.0.1", 0)
        fronts.append(serve_http(app, admin, stop, limits))
        _write_ready(replica.ready_file, admin.getsockname()[1])
    if http == "uvicorn":  # (uvicorn takes the signals itself; its end ends the rest)

        async def uvicorn_then_stop() -> None:
            try:
                await _uvicorn(app, limits).serve(sockets=[sock])
            finally:
                stop.set()

        await asyncio.gather(uvicorn_then_stop(), *fronts)
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.gather(serve_http(app, sock, stop, limits), *fronts)


def _write_ready(path: Path, admin_port: int) -> None:
    """Atomically: the supervisor never reads half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"pid": os.getpid(), "admin_port": admin_port}))
    tmp.replace(path)


def _keep_heap_frozen(manager: ModelManager) -> None:
    """Freeze the heap now and after each model change (rlplat/serving/heap.py)."""
    freezer = HeapFreezer(manager)
    loop = asyncio.get_running_loop()

    def tick() -> None:
        freezer.check()
        loop.call_later(1.0, tick)

    tick()


def _bind_error(host: str, port: int) -> str:
    """Why gRPC could not bind (it does not say): the OS's answer to the same bind."""
    try:
        bind(host, port).close()
    except UserError as exc:
        return str(exc).rsplit(": ", 1)[-1]
    return "gRPC could not bind it"


def _uvicorn(app: RestApp, limits: Limits):
    import uvicorn

    return uvicorn.Server(
        uvicorn.Config(
            app,
            loop="none",
            http="httptools",
            lifespan="off",
            access_log=False,
            log_level="warning",
            timeout_keep_alive=int(limits.idle_timeout),
            limit_concurrency=limits.max_connections,
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
