"""Prometheus metrics for the model server (its own registry: one per server)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # the *_created series only add noise to every scrape

# Where a server's metrics are answered: TF Serving's path, and Prometheus' default.
METRICS_PATHS = ("/monitoring/prometheus/metrics", "/metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class ServingMetrics:
    content_type = CONTENT_TYPE

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rlplat_serving_requests",
            "Requests by model, version, API (rest|grpc), method, response code and arm of an "
            "A/B split (empty when the request was not routed by a split).",
            ["model", "version", "api", "method", "code", "arm"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "rlplat_serving_request_latency_seconds",
            "Request latency inside the server, from the parsed request to the response, by "
            "model, version, API, method and arm of an A/B split (empty: not split).",
            ["model", "version", "api", "method", "arm"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "rlplat_serving_batch_size",
            "Rows per session call after request batching.",
            ["model", "version", "signature"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.loads = Counter(
            "rlplat_serving_model_loads",
            "Model version loads by result (ok|error).",
            ["model", "result"],
            registry=self.registry,
        )
        self.available = Gauge(
            "rlplat_serving_model_version_available",
            "1 while a version is AVAILABLE (serving), 0 while it is starting, loading or "
            "unloading; no series once it is END (failed, unloaded or gone).",
            ["model", "version"],
            registry=self.registry,
        )
        self.over_cap = Counter(
            "rlplat_serving_connections_over_cap",
            "New connections at max_connections: the longest-idle one closed for it "
            "(closed_idle), or, with none idle, the new one refused (refused).",
            ["api", "action"],
            registry=self.registry,
        )
        self._children: dict[tuple, tuple] = {}
        self._declare_split_metrics()

    def _declare_split_metrics(self) -> None:
        """A/B splits (rlplat/serving/traffic.py). Split requests are counted in `requests` and
        `latency` under their arm label: no series of their own, so a split adds no metric
        update to a request (measured by benchmarks/serve_ab.py)."""
        self.shadow_requests = Counter(
            "rlplat_serving_shadow_requests",
            "Copies of split requests sent to the shadow arm, by result: ok, error (the "
            "shadow failed, or would refuse the copy as a request), dropped (its queue was "
            "full, by copies or bytes).",
            ["model", "version", "result"],
            registry=self.registry,
        )
        self.shadow_latency = Histogram(
            "rlplat_serving_shadow_latency_seconds",
            "Time the shadow version took per copy (answered requests never wait for it).",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.shadow_agreement = Counter(
            "rlplat_serving_shadow_agreement",
            "Shadow answers by whether they chose the same actions as the answer sent "
            "(agree=true|false).",
            ["model", "version", "agree"],
            registry=self.registry,
        )

    def state(self, model: str, version: int, state: str) -> None:
        """Follow a version's state (a TF Serving ModelVersionStatus.State name)."""
        if state != "END":
            self.available.labels(model, str(version)).set(1 if state == "AVAILABLE" else 0)
            return
        with contextlib.suppress(KeyError):  # (never had a series: ended before starting)
            self.available.remove(model, str(version))

    def observe(
        self,
        model: str,
        version: str,
        api: str,
        method: str,
        code: int | str,
        seconds: float,
        arm: str = "",
    ) -> None:
        # The labelled children are cached: two `labels()` lookups cost more than the rest of
        # the bookkeeping. The keys are bounded as the series are (model names are the served
        # ones or "(unknown)", versions the loaded ones).
        key = (model, version, api, method, code, arm)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (
                self.requests.labels(model, version, api, method, str(code), arm),
                self.latency.labels(model, version, api, method, arm),
            )
        children[0].inc()
        children[1].observe(seconds)

    def shadow(
        self, model: str, version: int, result: str, seconds: float | None, agreed: bool | None
    ) -> None:
        self.shadow_requests.labels(model, str(version), result).inc()
        if seconds is not None:
            self.shadow_latency.labels(model, str(version)).observe(seconds)
        if agreed is not None:
            self.shadow_agreement.labels(model, str(version), str(agreed).lower()).inc()

    def batch_hook(self, model: str, version: int, signature: str) -> Callable[[int], None]:
        return self.batch_size.labels(model, str(version), signature).observe

    def load(self, model: str, result: str) -> None:
        self.loads.labels(model, result).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
