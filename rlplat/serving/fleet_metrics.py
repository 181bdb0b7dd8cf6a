"""The metrics of every replica of `rlplat serve --ray`, on one endpoint (--metrics-port).

Each replica's series keep their names and labels and gain `replica` (its index: stable
across restarts, so rate() sees a restart as a counter reset) and `node` (the Ray node id).
Two series of the fleet's own: `rlplat_serving_replica_up` (1 when the replica answered
this scrape) and `rlplat_serving_replica_restarts` (its serving process's restarts).
On the serving port itself, /metrics answers for the replica that took the connection.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from rlplat.errors import UserError
from rlplat.serving.auth import authorized
from rlplat.serving.http import Limits, serve_http
from rlplat.serving.metrics import CONTENT_TYPE, METRICS_PATHS, ServingMetrics
from rlplat.serving.ports import bind


class Replicas(Protocol):
    def metrics(self) -> list[tuple[dict, str]]:
        """(state with index, node and restarts; Prometheus text or "" if it did not answer)
        for each replica."""
        ...


def merge(scraped: list[tuple[dict, str]]) -> bytes:
    """Every replica's families as one exposition, labelled by replica and node."""
    families: dict[str, Metric] = {}
    up = Metric("rlplat_serving_replica_up", "1 if the replica answered this scrape.", "gauge")
    restarts = Metric(
        "rlplat_serving_replica_restarts",
        "Restarts of the replica's serving process (it exited or stopped answering).",
        "counter",
    )
    for state, text in scraped:
        extra = {"replica": str(state["index"]), "node": state.get("node", "")}
        up.add_sample("rlplat_serving_replica_up", extra, 1.0 if text else 0.0)
        restarts.add_sample("rlplat_serving_replica_restarts_total", extra,
                            float(state.get("restarts", 0)))  # fmt: skip
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(
                family.name, Metric(family.name, family.documentation, family.type)
            )
            merged.samples.extend(s._replace(labels={**s.labels, **extra}) for s in family.samples)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed([up, restarts, *families.values()]))
    return generate_latest(registry)


class _Fixed:
    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


class MetricsEndpoint:
    """GET /metrics (or TF Serving's path) on `host:port`: `merge` of a fresh scrape of
    every replica; the serving token, when set, is required here too. Served by the same
    front end as the serving port (rlplat/serving/http.py), in a thread of its own, so it
    has the same limits: connections (64 here), header size and time, idle timeout."""

    LIMITS = Limits(max_connections=64)

    def __init__(self, replicas: Replicas, host: str, port: int, token: str | None) -> None:
        try:
            sock = bind(host, port, what="metrics")
        except UserError as exc:
            raise UserError(f"--metrics-port {port}: {exc}") from None
        self.port = sock.getsockname()[1]
        self._app = MetricsApp(replicas, token)
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete,
            args=(serve_http(self._app, sock, self._stop, self.LIMITS),),
            name="rlplat-fleet-metrics", daemon=True,
        )  # fmt: skip
        self._thread.start()

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)


class MetricsApp:
    """The endpoint's answers (http.HttpApp): the token first, then GET of the metrics
    path only; the scrape runs in a worker thread, off the event loop."""

    max_body_bytes = 1024  # a GET has none

    def __init__(self, replicas: Replicas, token: str | None) -> None:
        self.replicas, self.token = replicas, token
        self.metrics = ServingMetrics()  # the front end counts connections over its cap

    async def respond(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]],
        read_body: Callable[[], Awaitable[bytes]],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:  # fmt: skip
        json = [(b"content-type", b"application/json")]
        given = [v for k, v in headers if k == b"authorization"]
        if self.token is not None and not authorized(given, self.token):
            body = b'{"error": "missing or wrong bearer token"}'
            return 401, [*json, (b"www-authenticate", b"Bearer")], body
        if path.split("?")[0] not in METRICS_PATHS:
            return 404, json, b'{"error": "metrics are at /metrics"}'
        if method not in ("GET", "HEAD"):
            return 405, [*json, (b"allow", b"GET")], b'{"error": "GET only"}'
        scraped = await asyncio.get_running_loop().run_in_executor(None, self.replicas.metrics)
        return 200, [(b"content-type", CONTENT_TYPE.encode())], merge(scraped)
