"""A lean HTTP/1.1 front end for RestApp: asyncio (uvloop) + httptools, the parser uvicorn
itself runs on.

Why not uvicorn on this path: at 64 clients the server is CPU-bound and uvicorn's per-request
machinery (ASGI message dicts, header validation, headers and body as two socket writes) was
most of its time; `benchmarks/serve_load.py --http uvicorn` measures the difference.
`rlplat serve --http uvicorn` keeps uvicorn available (the same RestApp through ASGI).
What this front end does: keep-alive and HTTP/1.0, pipelined requests answered
in order, `Expect: 100-continue`, chunked request bodies (httptools decodes them), a body
limit enforced while reading (413, then the connection closes), limits on the URL, the
headers, the time to finish them and the open connections, an idle timeout, and
backpressure (stop reading while the client does not read its replies or has too many
pipelined requests waiting).
"""

from __future__ import annotations

import asyncio
import dataclasses
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any, Protocol

import httptools
import orjson

from rlplat.serving.config import ServingConfig

FEED_BYTES = 16 * 1024  # parsed per step (see HttpProtocol._feed)
# After an error answer the connection is half-closed and what still arrives is read and
# dropped for a while (nginx's "lingering close"): closing a socket with unread input sends
# a reset, which can destroy the answer before the client has read it.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
DRAIN_SECONDS = 5.0  # on stop: how long answers in progress may take before their close
IDLE_GRACE_SECONDS = 1.0  # on stop: how long an idle keep-alive connection may still ask
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}


class HttpApp(Protocol):
    """What this front end serves: rlplat.serving.rest.RestApp, or the fleet's metrics
    endpoint (rlplat.serving.fleet_metrics). Imports no TensorFlow: the fleet's
    supervisor serves its metrics with it."""

    max_body_bytes: int
    metrics: Any  # a ServingMetrics: its connections_over_cap counter

    async def respond(
        self, method: str, path: str, headers: list[tuple[bytes, bytes]],
        read_body: Callable[[], Awaitable[bytes]],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]: ...  # fmt: skip


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


class Connections:
    """The open connections, and which of them are idle (oldest first): at max_connections
    a new connection closes the longest-idle one, as nginx reuses keep-alive connections,
    so idle connections cannot lock new clients out; with none idle it is refused."""

    def __init__(self, limit: int, metrics) -> None:
        self.limit, self.metrics = limit, metrics
        self.open: set[HttpProtocol] = set()
        self.idle: dict[HttpProtocol, None] = {}  # insertion order: the oldest idle first
        self.draining = False  # stopping: answer what was asked, then close

    def admit(self, conn: HttpProtocol) -> bool:
        if len(self.open) >= self.limit:
            if not self.idle:
                self.metrics.over_cap.labels("rest", "refused").inc()
                return False
            oldest = next(iter(self.idle))
            self.drop(oldest)
            oldest.close()
            self.metrics.over_cap.labels("rest", "closed_idle").inc()
        self.open.add(conn)
        return True

    def now_idle(self, conn: HttpProtocol) -> None:
        self.idle.pop(conn, None)
        self.idle[conn] = None

    def now_busy(self, conn: HttpProtocol) -> None:
        self.idle.pop(conn, None)

    def drop(self, conn: HttpProtocol) -> None:
        self.open.discard(conn)
        self.idle.pop(conn, None)


class _Refused(Exception):
    """Raised from a parser callback after answering: stops parsing the rest of the read."""


class HttpProtocol(asyncio.Protocol):
    """One client connection.

    Every limit holds before the request reaches RestApp (so before the token is checked):
    the URL, the headers (per read: a header that never ends is refused by its size), the
    time to finish the headers, the number of open connections and of pipelined requests.
    """

    def __init__(self, app: HttpApp, limits: Limits, connections: Connections) -> None:
        self.app = app
        self.limits = limits
        self.connections = connections
        self.loop = asyncio.get_running_loop()
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[_Request] = deque()
        self.busy = False
        self.timer: asyncio.TimerHandle | None = None  # idle (or reply unread) timeout
        self.head_timer: asyncio.TimerHandle | None = None  # time to finish the headers
        self.in_head = False  # between a request's first byte and the end of its headers
        self.in_message = False  # between a request's first byte and its last
        self.messages = 0
        self.paused: set[str] = set()  # why reading is paused: "write" and/or "queue"
        self.reading_paused = False  # the transport's state
        self.backlog = b""  # read while the queue was full, not parsed yet
        self.drained: asyncio.Future | None = None  # set when the client reads again
        self.lingering = False  # answered an error and half-closed: input is dropped
        self.dropped = 0
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.header_bytes = 0  # the finished headers of this request
        self.partial_bytes = 0  # bytes of a header httptools holds unfinished (see _feed_slice)
        self.slice_bytes = 0  # finished-header bytes of the slice being parsed
        self.body: list[bytes] = []
        self.size = 0

    # -------------------------------------------------------------- connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if not self.connections.admit(self):
            self._reject(
                503, f"too many open connections ({self.limits.max_connections})", linger=False
            )  # (nothing read yet; no fd held for an attacker)
            return
        self._arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.drop(self)
        self.pending.clear()
        self.backlog = b""
        # The parser and this object form a cycle, freed only by a full collection: drop
        # a body now (kept, four clients posting 4 MiB bodies grew RSS by ~450 MB), and
        # break the cycle, so that the parser's buffer and a URL or headers read so far
        # go at once too (a flood of endless URLs grew RSS by ~190 MB before a collection).
        self.body = []
        self.url, self.headers = b"", []
        self.parser = None
        for timer in (self.timer, self.head_timer):
            if timer is not None:
                timer.cancel()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)  # _serve wakes up, sees the close and stops

    def pause_writing(self) -> None:  # the client is not reading: stop reading from it
        self._pause("write")
        self.drained = self.loop.create_future()

    def resume_writing(self) -> None:
        self._resume("write")
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def _pause(self, reason: str) -> None:
        self.paused.add(reason)
        self._sync_reading()

    def _resume(self, reason: str) -> None:
        self.paused.discard(reason)
        if reason == "queue" and self.backlog:  # first what was read and not yet parsed
            data, self.backlog = self.backlog, b""
            self._feed(data)
        self._sync_reading()

    def _sync_reading(self) -> None:
        if self.transport.is_closing() or self.reading_paused == bool(self.paused):
            return
        self.reading_paused = bool(self.paused)
        if self.reading_paused:
            self.transport.pause_reading()
        else:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self.dropped += len(data)
            if self.dropped > LINGER_BYTES:
                self.transport.abort()
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._feed(data)
        self._arm_idle()  # a body still arriving gets the idle timeout from its last byte

    def _feed(self, data: bytes) -> None:
        """Parses `data` a slice at a time, keeping the rest once too many requests wait:
        one read of small pipelined requests is thousands of them."""
        for start in range(0, len(data), FEED_BYTES):
            if "queue" in self.paused or self._closing():
                self.backlog = data[start:]  # at most one read, parsed when the queue drains
                return
            self._feed_slice(data[start : start + FEED_BYTES])

    def _feed_slice(self, data: bytes) -> None:
        if self.parser is None:  # the connection is gone
            return
        in_head, messages = self.in_head, self.messages
        self.slice_bytes = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._reject(400, f"malformed HTTP request: {exc}")
        else:
            if in_head and self.in_head and messages == self.messages:
                # The slice is inside one unfinished head: what on_header did not count is
                # part of a header httptools holds unfinished. Count it until that header
                # is done (on_header then counts it once), so a header without end is
                # refused too.
                self.partial_bytes += max(0, len(data) - self.slice_bytes)
                self._head_too_big()

    def _arm_idle(self) -> None:
        if self.timer is None and not self.busy and not self._closing():
            self.timer = self.loop.call_later(self.limits.idle_timeout, self.close)
            if not self.in_message:
                self.connections.now_idle(self)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _closing(self) -> bool:
        return self.lingering or self.transport.is_closing()

    def _reject(self, status: int, message: str, linger: bool = True) -> None:
        """Answer now and close: the stream cannot be trusted (or is not worth reading)."""
        if self._closing():
            return
        if self.busy:  # an earlier pipelined request's answer is owed first: just close
            self.transport.close()
            return
        body = orjson.dumps({"error": message})
        self.transport.write(_head(status, [(b"content-type", b"application/json")],
                                   len(body), True) + body)  # fmt: skip
        if not linger or not self.transport.can_write_eof():
            self.transport.close()
            return
        self.lingering = True
        for timer in (self.timer, self.head_timer):
            if timer is not None:
                timer.cancel()
        self.transport.write_eof()  # the answer, then FIN; the client's close ends it sooner
        self.loop.call_later(LINGER_SECONDS, self.close)

    def _head_timeout(self) -> None:
        limit = self.limits.header_timeout
        self._reject(408, f"request headers not complete within {limit:g} s")

    def _head_too_big(self) -> bool:
        if self.header_bytes + self.partial_bytes <= self.limits.max_header_bytes:
            return False
        self._reject(431, f"request headers larger than {self.limits.max_header_bytes} bytes")
        return True

    # -------------------------------------------------------------- parser callbacks

    def on_message_begin(self) -> None:
        self._reset()
        self.connections.now_busy(self)
        self.messages += 1
        self.in_head = self.in_message = True
        self.head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timeout)

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self.limits.max_request_line_bytes:
            self._reject(414, f"request URL longer than {self.limits.max_request_line_bytes} "
                              "bytes")  # fmt: skip
            raise _Refused

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 4  # ": " and CRLF
        self.header_bytes += size
        self.slice_bytes += size
        self.partial_bytes = 0  # that header, counted whole now
        if self._head_too_big():
            raise _Refused
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        limit = self.app.max_body_bytes
        expect = False
        for name, value in self.headers:  # all of them first: no 100 Continue before a 413
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                self._reject(413, f"request body larger than {limit} bytes")
                raise _Refused
            if name == b"expect" and value.lower() == b"100-continue":
                expect = True
        if expect:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.app.max_body_bytes:  # chunked, or lying about its length
            self._reject(413, f"request body larger than {self.app.max_body_bytes} bytes")
            raise _Refused
        self.body.append(chunk)

    def on_message_complete(self) -> None:
        self.in_message = False
        if self._closing():
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
            if len(self.pending) >= self.limits.max_pending:
                self._pause("queue")  # read no more until the queue is half empty
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
            if self._closing():
                return
            # Stopping: the last answer this connection owes says `Connection: close`.
            close = not request.keep_alive or (self.connections.draining and not self.pending)
            head = _head(status, headers, len(body), close)
            self.transport.write(head if request.method == "HEAD" else head + body)
            if close:
                self.transport.close()
                return
            if not await self._drain():
                return
            if not self.pending:
                break
            request = self.pending.popleft()
            if len(self.pending) <= self.limits.max_pending // 2:
                self._resume("queue")
        self.busy = False
        self._arm_idle()

    async def _drain(self) -> bool:
        """Waits while the client is not reading its replies (so at most one reply beyond the
        transport's high-water mark is held); closes it after the idle timeout. False once
        the connection is closed."""
        if "write" in self.paused and not self.transport.is_closing():
            timer = self.loop.call_later(self.limits.idle_timeout, self.close)
            try:
                await self.drained
            finally:
                timer.cancel()
        return not self.transport.is_closing()


class _Body:
    """The read_body callable RestApp expects, over a body already read."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __call__(self) -> bytes:
        return self.data


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one HTTP connection may hold; ServingConfig's settings of the same meaning."""

    max_request_line_bytes: int = 8 * 1024
    max_header_bytes: int = 64 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 30.0
    max_connections: int = 1000
    max_pending: int = 32

    @classmethod
    def of(cls, cfg: ServingConfig, max_connections: int | None = None) -> Limits:
        return cls(
            cfg.max_request_line_bytes,
            cfg.max_header_bytes,
            cfg.header_timeout_seconds,
            cfg.idle_timeout_seconds,
            max_connections or cfg.max_connections,
            cfg.max_pending_per_connection,
        )


async def serve_http(app: HttpApp, sock, stop: asyncio.Event, limits: Limits = Limits()) -> None:
    """Serve on a bound, listening socket until `stop` is set."""
    loop = asyncio.get_running_loop()
    connections = Connections(limits.max_connections, app.metrics)
    server = await loop.create_server(
        lambda: HttpProtocol(app, limits, connections), sock=sock, backlog=2048
    )
    try:
        await stop.wait()
    finally:
        await _drain(server, sock, connections)


async def _drain(server: asyncio.AbstractServer, sock, connections: Connections) -> None:
    """Stop listening; every connection's next answer says `Connection: close` and closes
    it. A keep-alive client that sends within IDLE_GRACE_SECONDS gets that answer instead
    of a connection closed under its request (the race a rolling restart would otherwise
    lose a request to); idle ones are then closed, busy ones after DRAIN_SECONDS. The
    socket is closed here, first: under SO_REUSEPORT (rlplat serve --ray) a listener left
    open but no longer accepted from would take, and then reset, its share of connections."""
    server.close()
    sock.close()
    connections.draining = True
    loop = asyncio.get_running_loop()
    start = loop.time()
    while connections.open and loop.time() < start + DRAIN_SECONDS:
        if loop.time() > start + IDLE_GRACE_SECONDS:
            for conn in list(connections.open):
                if not conn.busy:
                    conn.close()
        await asyncio.sleep(0.01)
    for conn in list(connections.open):
        conn.close()
