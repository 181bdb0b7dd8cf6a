"""The TensorFlow Serving REST API (api_rest.md) as a plain ASGI app.

One regex routes every TF Serving URL (`/v1/models/NAME[/versions/V|/labels/L][/metadata]`
and `...:predict`): the `:verb` suffix does not fit a framework's path templates, and the
predict path stays lean (no per-request validation layer; orjson turns the outputs' numpy
arrays into bytes). `rlplat serve` runs it on its own front end (serving/http.py), or on
uvicorn with `--http uvicorn`; `--ray` replicas run the same app (serving/replicas.py).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2

from rlplat.export import parse_version
from rlplat.serving.auth import authorized
from rlplat.serving.decode import Offload, Split, decode, encode_predict
from rlplat.serving.errors import InvalidArgument, NotFound, ServingError
from rlplat.serving.metrics import METRICS_PATHS, ServingMetrics
from rlplat.serving.models import ModelManager
from rlplat.serving.servable import Servable, Signature
from rlplat.serving.shadow import Copy
from rlplat.serving.traffic import ROUTE_HEADER, VERSION_HEADER, Routed

ROUTE = re.compile(
    r"/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:(?P<metadata>/metadata)|:(?P<verb>[^/:]*))?/?"
)
# What the REST API answers, for the docs (scripts/docs_reference.py) and a test that every
# row is routed as it says (tests/serving/test_rest.py): (method, path, what).
ENDPOINTS = (
    ("GET", "/v1/models/NAME", "status of the model's versions (TF Serving's GetModelStatus)"),
    ("GET", "/v1/models/NAME/versions/V", "status of one version"),
    ("GET", "/v1/models/NAME/labels/L", "status of the version a label names"),
    ("GET", "/v1/models/NAME/metadata", "signature definitions (also under /versions/V, "
     "/labels/L)"),
    ("POST", "/v1/models/NAME:predict", "predict, row (`instances`) or columnar (`inputs`) "
     "format; with a traffic split, header X-Rlplat-Route picks an arm by key"),
    ("POST", "/v1/models/NAME/versions/V:predict", "predict with one version (bypasses a split)"),
    ("POST", "/v1/models/NAME/labels/L:predict", "predict with a label's version (bypasses a "
     "split)"),
    ("GET", "/monitoring/prometheus/metrics", "Prometheus metrics (also at /metrics)"),
)  # fmt: skip
JSON_HEADERS = [(b"content-type", b"application/json")]
# Bodies above OFFLOAD_BYTES are decoded, and answers of more than OFFLOAD_VALUES numbers
# encoded, in worker processes (rlplat/serving/decode.py): inline they would hold the event
# loop for milliseconds; below them a worker's round trip costs more than the work.
OFFLOAD_BYTES = 64 * 1024
OFFLOAD_VALUES = 16384


class HttpError(ServingError):
    def __init__(self, status: int, message: str, headers: list | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.headers = headers or []


# ---------------------------------------------------------------------- JSON <-> tensors


def bind_predict(split: Split, sig: Signature) -> list[np.ndarray]:
    """A decoded body's values as `sig`'s inputs (the part that needs the model)."""
    names = list(sig.inputs)
    what = "instances" if split.rows else "inputs"
    if split.mixed or (None in split.values and len(names) != 1):
        hint = "; give each instance as an object" if split.rows else ""
        raise InvalidArgument(f"{what}: signature '{sig.name}' takes named inputs {names}{hint}")
    values = {names[0] if k is None else k: v for k, v in split.values.items()}
    return sig.coerce(values, what)


def status_json(items: list) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": str(v),
                "state": s.state,
                "status": {"error_code": s.error_code, "error_message": s.error_message},
            }
            for v, s in items
        ]
    }


def signature_def_map(servable: Servable) -> get_model_metadata_pb2.SignatureDefMap:
    sdm = get_model_metadata_pb2.SignatureDefMap()
    for key in servable.signatures:
        sd = servable.meta_graph.signature_def[key]
        sdm.signature_def[key].CopyFrom(sd)
    return sdm


def metadata_json(servable: Servable) -> dict[str, Any]:
    sdm = json_format.MessageToDict(signature_def_map(servable), preserving_proto_field_name=True)
    return {
        "model_spec": {
            "name": servable.name,
            "signature_name": "",
            "version": str(servable.version),
        },
        "metadata": {"signature_def": sdm},
    }


# ---------------------------------------------------------------------- the app


class RestApp:
    """ASGI app over a ModelManager; errors are `{"error": "..."}` with TF Serving's codes."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: ServingMetrics,
        max_body_bytes: int,
        token: str | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self._token = token
        self.offload = Offload()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """ASGI: how uvicorn (`--http uvicorn`) calls it."""
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return

        async def read_body() -> bytes:
            return await self._asgi_body(scope["headers"], receive)

        status, headers, body = await self.respond(
            scope["method"], scope["path"], scope["headers"], read_body
        )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def respond(
        self,
        method: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        read_body: Callable[[], Awaitable[bytes]],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One request, whatever the HTTP front end: (status, headers, body)."""
        started = time.perf_counter()
        labels = ["", "", "other", ""]  # model, version, method, arm: filled in when known
        try:
            body, out_headers = await self._handle(method, path, headers, read_body, labels)
            status = 200
        except ServingError as exc:
            status = exc.http_status
            body = orjson.dumps({"error": str(exc)})
            out_headers = [*JSON_HEADERS, *getattr(exc, "headers", [])]
        except Exception as exc:  # noqa: BLE001  (a bug: still a JSON error, never a hang)
            status, out_headers = 500, JSON_HEADERS
            body = orjson.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"})
        if labels[0]:
            seconds = time.perf_counter() - started
            self.metrics.observe(
                labels[0], labels[1], "rest", labels[2], status, seconds, labels[3]
            )
        return status, out_headers, body

    async def _handle(
        self, method: str, path: str, headers: list, read_body: Any, labels: list
    ) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        if self._token is not None:
            given = [v for k, v in headers if k == b"authorization"]
            if not authorized(given, self._token):
                raise HttpError(
                    401, "missing or wrong bearer token", [(b"www-authenticate", b"Bearer")]
                )
        if path in METRICS_PATHS:
            _allow(method, "GET")
            return self.metrics.render(), [(b"content-type", self.metrics.content_type.encode())]
        m = ROUTE.fullmatch(path)
        if m is None:
            raise HttpError(404, f"Malformed request: {method} {path}")
        name, label, verb = m["name"], m["label"], m["verb"]
        version = None
        if m["version"] is not None:
            version = parse_version(m["version"])  # ASCII digits: "²".isdigit() is True
            if version is None:
                raise InvalidArgument(f"version must be a non-negative integer: {m['version']!r}")
        labels[0] = name if self.manager.known(name) else "(unknown)"
        if verb is None:
            _allow(method, "GET")
            if m["metadata"]:
                labels[2] = "metadata"
                with self.manager.use(name, version, label) as servable:
                    labels[1] = str(servable.version)
                    return orjson.dumps(metadata_json(servable)), answer_headers(servable)
            labels[2] = "status"
            items = self.manager.status(name, version, label)
            return orjson.dumps(status_json(items)), JSON_HEADERS
        if verb in ("classify", "regress"):  # (the route never has both metadata and a verb)
            _allow(method, "POST")
            raise InvalidArgument(f"rlplat serves predict signatures only; :{verb} is not served")
        if verb != "predict":
            raise HttpError(404, f"Malformed request: {method} {path}")
        _allow(method, "POST")
        labels[2] = "predict"
        raw = await read_body()
        cap = self.manager.cfg.max_rows_per_request
        big = len(raw) > OFFLOAD_BYTES
        split = await self.offload.decode(raw, cap) if big else decode(raw, cap)
        # (header names arrive lower-cased: http.py lowers them, ASGI servers must)
        key = next((v for k, v in headers if k == ROUTE_HEADER), None)
        with self.manager.use_routed(name, version, label, key) as (servable, routed):
            labels[1], labels[3] = str(servable.version), routed.arm or ""
            sig_name = split.signature_name
            if sig_name is not None and not isinstance(sig_name, str):
                raise InvalidArgument("'signature_name' must be a string")
            sig = servable.signature(sig_name)
            arrays = bind_predict(split, sig)
            outputs = await servable.predict(sig, arrays)
        keys = list(sig.outputs)
        self._mirror(name, servable, routed, sig, arrays, outputs)
        out_headers = answer_headers(servable, routed)
        if max(out.size for out in outputs) > OFFLOAD_VALUES:
            return await self.offload.encode(outputs, keys, split.rows), out_headers
        return encode_predict(outputs, keys, split.rows), out_headers

    def _mirror(
        self, name: str, servable: Servable, routed: Routed, sig: Signature, arrays, outputs
    ) -> None:
        """Hand a copy to the shadow arm once this answer is written (the loop's next turn
        comes after the front end writes it), unless the shadow is what answered."""
        shadow = routed.shadow_version
        if shadow is None or shadow == servable.version:
            return
        inputs = dict(zip(sig.inputs, arrays, strict=True))
        copy = Copy(name, shadow, sig.name, inputs, dict(zip(sig.outputs, outputs, strict=True)))
        asyncio.get_running_loop().call_soon(self.manager.shadow.submit, copy)

    async def _asgi_body(self, headers: list, receive: Any) -> bytes:
        limit = self.max_body_bytes
        for k, v in headers:
            if k == b"content-length" and v.isdigit() and int(v) > limit:
                raise HttpError(413, f"request body larger than {limit} bytes")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HttpError(413, f"request body larger than {limit} bytes")
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)


def answer_headers(servable: Servable, routed: Routed | None = None) -> list:
    """JSON, and which version (and arm of a split) answered."""
    headers = [*JSON_HEADERS, (VERSION_HEADER, str(servable.version).encode())]
    if routed is not None and routed.arm_header is not None:
        headers.append(routed.arm_header)
    return headers


def _allow(method: str, allowed: str) -> None:
    if method != allowed:
        raise HttpError(
            405, f"method {method} not allowed here (use {allowed})", [(b"allow", allowed.encode())]
        )


__all__ = ["RestApp", "NotFound", "bind_predict", "metadata_json", "status_json"]
