"""The metrics of every replica of `rlplat serve --ray`, on one endpoint (--metrics-port).

Each replica's series keep their names and labels and gain `replica` (its index: stable
across restarts, so rate() sees a restart as a counter reset) and `node` (the Ray node id).
Two series of the fleet's own: `rlplat_serving_replica_up` (1 when the replica answered
this scrape) and `rlplat_serving_replica_restarts` (its serving process's restarts).
On the serving port itself, /metrics answers for the replica that took the connection.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from rlplat.errors import UserError
from rlplat.serving.auth import authorized
from rlplat.serving.metrics import CONTENT_TYPE, METRICS_PATHS


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
    """GET /metrics (or TF Serving's path) on `host:port` in a thread: `merge` of a fresh
    scrape of every replica; the serving token, when set, is required here too."""

    def __init__(self, replicas: Replicas, host: str, port: int, token: str | None) -> None:
        handler = _handler(replicas, token)
        try:
            self._server = http.server.ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise UserError(f"--metrics-port {port}: cannot listen: {exc.strerror}") from None
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(replicas: Replicas, token: str | None) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802  (http.server's name)
            given = [v.encode() for v in self.headers.get_all("Authorization") or []]
            if token is not None and not authorized(given, token):
                self._answer(401, b'{"error": "missing or wrong bearer token"}', "application/json")
            elif self.path.split("?")[0] not in METRICS_PATHS:
                self._answer(404, b'{"error": "metrics are at /metrics"}', "application/json")
            else:
                self._answer(200, merge(replicas.metrics()), CONTENT_TYPE)

        def _answer(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # no access log on stderr
            pass

    return Handler
