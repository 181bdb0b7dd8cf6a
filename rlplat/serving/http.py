"""A lean HTTP/1.1 front end for RestApp: asyncio (uvloop) + httptools, the parser uvicorn
itself runs on.

Why not uvicorn on this path: at 64 clients the server is CPU-bound and uvicorn's per-request
machinery (ASGI message dicts, header validation, headers and body as two socket writes) was
most of its time; `benchmarks/serve_load.py --http uvicorn` measures the difference.
`rlplat serve --http uvicorn` keeps uvicorn available, and Ray Serve runs the same RestApp
through ASGI. What this front end does: keep-alive and HTTP/1.0, pipelined requests answered
in order, `Expect: 100-continue`, chunked request bodies (httptools decodes them), a body
limit enforced while reading (413, then the connection closes), a header-size limit, an
idle timeout, and backpressure (stop reading while the client is not reading).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections import deque
from http import HTTPStatus

import httptools
import orjson

from rlplat.serving.rest import RestApp

MAX_HEADER_BYTES = 64 * 1024
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


def _head(status: int, headers: list[tuple[bytes, bytes]], length: int, close: bool) -> bytes:
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))]
    lines += [b"%s: %s\r\n" % kv for kv in headers]
    lines.append(b"content-length: %d\r\n" % length)
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


class _Request:
    __slots__ = ("method", "path", "headers", "body", "keep_alive", "error")

    def __init__(self, method, path, headers, body, keep_alive, error) -> None:
        self.method, self.path, self.headers = method, path, headers
        self.body, self.keep_alive, self.error = body, keep_alive, error


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, app: RestApp, idle_timeout: float, connections: set) -> None:
        self.app = app
        self.idle_timeout = idle_timeout
        self.connections = connections
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[_Request] = deque()
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0
        self.body: list[bytes] = []
        self.size = 0
        self.error: tuple[int, str] | None = None

    # -------------------------------------------------------------- connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        self.pending.clear()
        # The parser and this object form a cycle, freed only by a full collection: drop
        # a body now (kept, four clients posting 4 MiB bodies grew RSS by ~450 MB).
        self.body = []
        if self.timer is not None:
            self.timer.cancel()

    def pause_writing(self) -> None:  # the client is not reading: stop reading from it
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")
        else:
            self._arm_idle()  # a request still arriving gets the idle timeout from its last byte

    def _arm_idle(self) -> None:
        if self.timer is None and not self.busy:
            self.timer = self.loop.call_later(self.idle_timeout, self.close)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _reject(self, status: int, message: str) -> None:
        """Answer now and close: the stream cannot be trusted (or is not worth reading)."""
        if self.transport.is_closing():
            return
        body = orjson.dumps({"error": message})
        self.transport.write(_head(status, [(b"content-type", b"application/json")],
                                   len(body), True) + body)  # fmt: skip
        self.transport.close()

    # -------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            self._reject(431, f"request headers larger than {MAX_HEADER_BYTES} bytes")
            return
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        limit = self.app.max_body_bytes
        for name, value in self.headers:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                self._reject(413, f"request body larger than {limit} bytes")
                return
            if name == b"expect" and value.lower() == b"100-continue":
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.app.max_body_bytes:  # chunked, or lying about its length
            self._reject(413, f"request body larger than {self.app.max_body_bytes} bytes")
            return
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        if self.transport.is_closing():
            return
        method = self.parser.get_method().decode("ascii", "replace")
        try:
            raw_path = httptools.parse_url(self.url).path.decode("ascii")
            path, error = urllib.parse.unquote(raw_path), None
        except (httptools.HttpParserInvalidURLError, UnicodeDecodeError):
            path, error = "", "malformed request URL"
        request = _Request(method, path, self.headers, b"".join(self.body),
                           self.parser.should_keep_alive(), error)  # fmt: skip
        self.body = []  # (not kept until the next request: see connection_lost)
        if self.busy:
            self.pending.append(request)  # pipelined: answered in order
        else:
            self.busy = True
            self.loop.create_task(self._serve(request))

    # -------------------------------------------------------------- requests

    async def _serve(self, request: _Request) -> None:
        while True:
            if request.error is not None:
                status, headers = 400, [(b"content-type", b"application/json")]
                body = orjson.dumps({"error": request.error})
            else:
                status, headers, body = await self.app.respond(
                    request.method, request.path, request.headers, _Body(request.body)
                )
            if self.transport.is_closing():
                return
            close = not request.keep_alive
            head = _head(status, headers, len(body), close)
            self.transport.write(head if request.method == "HEAD" else head + body)
            if close:
                self.transport.close()
                return
            if not self.pending:
                break
            request = self.pending.popleft()
        self.busy = False
        self._arm_idle()


class _Body:
    """The read_body callable RestApp expects, over a body already read."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __call__(self) -> bytes:
        return self.data


async def serve_http(app: RestApp, sock, stop: asyncio.Event, idle_timeout: float = 30.0) -> None:
    """Serve on a bound, listening socket until `stop` is set."""
    loop = asyncio.get_running_loop()
    connections: set[HttpProtocol] = set()
    server = await loop.create_server(
        lambda: HttpProtocol(app, idle_timeout, connections), sock=sock, backlog=2048
    )
    try:
        await stop.wait()
    finally:
        server.close()
        for conn in list(connections):
            conn.close()
