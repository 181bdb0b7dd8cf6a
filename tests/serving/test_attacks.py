"""`rlplat serve` under protocol attacks (issue 13): each reproduction, with raw sockets on
loopback, bounded in bytes and time. The server runs with small limits (serving.yaml) so
every limit is reached in a fraction of a second."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import select
import socket
import subprocess
import time
from pathlib import Path

import grpc
import pytest
import requests
from conftest import RLPLAT, free_port, user_env

from serving.helpers import Server, export_tiny

LIMITS = {
    "max_request_line_bytes": 1024,
    "max_header_bytes": 4096,
    "header_timeout_seconds": 1.0,
    "max_connections": 24,
    "max_pending_per_connection": 4,
}
BODY = json.dumps({"instances": [[0.0] * 4]}).encode()
PREDICT = (b"POST /v1/models/cartpole:predict HTTP/1.1\r\nHost: x\r\n"
           b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("attacks") / "models"
    export_tiny(base, "cartpole", seed=1)
    return base


@pytest.fixture(scope="module")
def server(models):
    cfg = models.parent / "serving.yaml"
    cfg.write_text(json.dumps(LIMITS))
    s = Server(models, "--config", str(cfg))
    yield s
    s.stop()


def connect(server: Server, timeout: float = 10) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_answer(s: socket.socket) -> bytes:
    """What the server sent before it closed (a reset after its answer counts as a close)."""
    chunks = []
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def send_until_closed(s: socket.socket, chunk: bytes, max_bytes: int, pause: float = 0) -> int:
    """Sends `chunk` again and again until the server closes (or `max_bytes`); bytes sent."""
    sent = 0
    try:
        while sent < max_bytes:
            s.sendall(chunk)
            sent += len(chunk)
            time.sleep(pause)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return sent


def serves(server: Server, seconds: float = 10) -> bool:
    """Whether a new client is served within `seconds` (connections an attack test just
    closed may hold the cap for a moment)."""
    return get_ok(server, seconds, "post") is not None


def get_ok(server: Server, seconds: float, method: str = "get") -> requests.Response | None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if method == "post":
                r = server.post("/v1/models/cartpole:predict", BODY)
            else:
                r = server.get("/metrics")
            if r.status_code == 200:
                return r
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            return None
        time.sleep(0.2)


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status)[1]) / 1024


# ---------------------------------------------------------------------- item 1: the head


def test_a_long_url_is_414_and_an_endless_one_is_cut_off(server):
    with connect(server) as s:
        s.sendall(b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_answer(s).startswith(b"HTTP/1.1 414")
    # `GET /` then endless 64 KiB of `a`: closed after about a read, not after megabytes.
    with connect(server) as s:
        s.sendall(b"GET /")
        assert send_until_closed(s, b"a" * 65536, max_bytes=64 << 20) < 8 << 20
    assert serves(server)


def test_a_flood_of_endless_urls_does_not_grow_the_server(server):
    """Each connection's parser and what it read go with the connection, not at the next
    full garbage collection: thousands of connections sending an endless URL one after
    another left ~190 MB behind."""
    before = rss_mb(server.proc.pid)
    for _ in range(8000):
        with contextlib.suppress(OSError), connect(server) as s:
            s.sendall(b"GET /" + b"a" * 65536)
    assert rss_mb(server.proc.pid) - before < 50
    assert serves(server)


def test_an_endless_header_is_431_even_before_it_ends(server):
    with connect(server) as s:
        s.sendall(b"GET /v1/models/cartpole HTTP/1.1\r\nX-Long: ")
        assert send_until_closed(s, b"y" * 65536, max_bytes=64 << 20) < 8 << 20


def test_an_error_answer_reaches_a_client_still_sending(server):
    # The server refuses after its first read while the rest is still arriving: closing
    # with input unread would reset the connection, which can destroy the 431 in flight.
    head = b"GET /v1/models/cartpole HTTP/1.1\r\n"
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"y" * 1000) for i in range(200)) + b"\r\n"
    answers = []
    for _ in range(20):
        with connect(server) as s:
            send_until_closed(s, head + headers, max_bytes=len(head + headers))
            chunks = []
            while chunk := s.recv(65536):  # a reset here fails the test
                chunks.append(chunk)
            answers.append(b"".join(chunks))
    assert all(a.startswith(b"HTTP/1.1 431") for a in answers), [a[:40] for a in answers]
    assert serves(server)


def test_slow_headers_are_closed_after_the_header_timeout(server):
    with connect(server, timeout=30) as s:
        s.sendall(b"GET /v1/models/cartpole HTTP/1.1\r\n")
        t0 = time.monotonic()
        # One header byte every 0.1 s: before, each byte restarted the 30 s idle timeout.
        send_until_closed(s, b"X", max_bytes=150, pause=0.1)
        closed_after = time.monotonic() - t0
        answer = read_answer(s)
    assert answer.startswith(b"HTTP/1.1 408") or answer == b"", answer[:100]
    assert closed_after < 14  # header_timeout_seconds 1; 15 s of trickling was allowed


# ---------------------------------------------------------------------- item 2: pipelining


def test_pipelined_requests_without_reading_are_not_read_without_bound(server):
    before = rss_mb(server.proc.pid)
    batch = PREDICT * 500
    sent, stalled = 0, False
    with connect(server, timeout=2) as s:
        deadline = time.monotonic() + 30
        while sent < 256 << 20 and time.monotonic() < deadline:
            try:
                s.sendall(batch)
            except TimeoutError:  # the server stopped reading: backpressure
                stalled = True
                break
            sent += len(batch)
    assert stalled, f"the server read {sent >> 20} MiB of pipelined requests unanswered"
    assert sent < 64 << 20  # socket buffers and max_pending_per_connection, not everything
    assert rss_mb(server.proc.pid) - before < 200
    assert serves(server)


def test_pipelined_requests_are_all_answered_in_order_past_the_queue_bound(server):
    n = 400  # past max_pending_per_connection, and past one parsed slice (FEED_BYTES)
    status = b"GET /v1/models/cartpole HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    with connect(server, timeout=30) as s:
        s.sendall(PREDICT * n + status)
        out = read_answer(s)
    assert out.count(b"HTTP/1.1 200 OK") == n + 1
    assert out.count(b'"predictions"') == n and out.rindex(b'"predictions"') < out.index(
        b"AVAILABLE"
    )


# ---------------------------------------------------------------------- item 3: connections


def closed_by_server(socks: list[socket.socket], seconds: float) -> list[socket.socket]:
    """Those the server closed within `seconds`."""
    closed: list[socket.socket] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([s for s in socks if s not in closed], [], [], 0.2)
        for s in ready:
            assert read_answer(s) == b""  # an idle connection is closed without a word
            closed.append(s)
    return closed


def over_cap(server: Server, action: str) -> float:
    text = get_ok(server, 10).text  # (a connection of its own: wait for room)
    name = "rlplat_serving_connections_over_cap_total"
    m = re.search(rf'{name}\{{action="{action}",api="rest"\}} (\S+)', text)
    return float(m[1]) if m else 0.0


def test_at_the_connection_cap_the_longest_idle_connection_makes_room(server):
    cap = LIMITS["max_connections"]
    before = over_cap(server, "closed_idle")
    idle = [connect(server) for _ in range(cap + 6)]  # nothing sent: all idle
    try:
        closed = closed_by_server(idle, 2)
        assert len(closed) >= 3 and idle[-1] not in closed
        assert serves(server)  # a new client gets in
    finally:
        for s in idle:
            s.close()
    assert over_cap(server, "closed_idle") >= before + 6


def test_at_the_connection_cap_with_none_idle_new_connections_are_refused(server):
    cap = LIMITS["max_connections"]
    before = over_cap(server, "refused")
    # A status request, then a request cut in the middle of its body: once the status is
    # answered, the connection is busy (not closed to make room), until the idle timeout.
    busy = (b"GET /v1/models/cartpole HTTP/1.1\r\n\r\n"
            b"POST /v1/models/x:predict HTTP/1.1\r\nContent-Length: 100\r\n\r\n{")  # fmt: skip
    socks, answer = [], b""
    try:
        for _ in range(cap + 10):
            s = connect(server)
            socks.append(s)
            try:
                s.sendall(busy)
                answer = s.recv(65536)
            except ConnectionResetError:
                answer = b""
            if not answer.startswith(b"HTTP/1.1 200"):
                break
        assert answer.startswith(b"HTTP/1.1 503") or answer == b"", answer[:100]
        assert len(socks) > cap  # refused only once the cap was reached
    finally:
        for s in socks:
            s.close()
    assert over_cap(server, "refused") >= before + 1
    assert serves(server)


# ---------------------------------------------------------------------- item 7: gRPC errors


def test_a_tensor_with_an_unknown_dtype_is_invalid_argument_and_counted(server):
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    req = predict_pb2.PredictRequest()
    req.model_spec.name = "cartpole"
    tensor = req.inputs["observations"]
    tensor.dtype = 999
    tensor.tensor_shape.dim.add().size = 1
    tensor.float_val.append(0.0)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.Predict(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value.details()
    assert "dtype" in e.value.details()
    metrics = server.get("/metrics").text
    assert re.search(r'rlplat_serving_requests_total\{api="grpc",arm="",code="INVALID_ARGUMENT",'
                     r'method="predict",model="cartpole"', metrics)  # fmt: skip


# ---------------------------------------------------------------------- item 8: IPv6


def test_serves_rest_and_grpc_on_ipv6_loopback(models, tmp_path):
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    port, grpc_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    proc = subprocess.Popen(
        [RLPLAT, "serve", "--model-base-path", str(models), "--host", "::1",
         "--port", str(port), "--grpc-port", str(grpc_port)],
        stdout=subprocess.DEVNULL, stderr=log.open("w"), env=user_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            try:
                r = requests.get(f"http://[::1]:{port}/v1/models/cartpole", timeout=2)
                if r.status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = "cartpole"
        with grpc.insecure_channel(f"[::1]:{grpc_port}") as channel:
            stub = model_service_pb2_grpc.ModelServiceStub(channel)
            assert stub.GetModelStatus(req, timeout=10).model_version_status[0].version == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_busy_grpc_port_names_host_port_and_the_os_reason(models):
    from rlplat.errors import UserError
    from rlplat.serving import server

    with socket.socket(socket.AF_INET6) as busy:
        busy.bind(("::1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        with pytest.raises(UserError) as e:
            server.serve(models, host="::1", port=free_port(), grpc_port=taken)
    message = str(e.value)
    assert f"[::1]:{taken}" in message and "in use" in message.lower(), message
    assert "\n" not in message


# ---------------------------------------------------------------------- item 11 (parts)


def test_no_100_continue_before_a_413(server):
    with connect(server) as s:
        s.sendall(b"POST /v1/models/cartpole:predict HTTP/1.1\r\nHost: x\r\n"
                  b"Expect: 100-continue\r\nContent-Length: 999999999\r\n\r\n")  # fmt: skip
        answer = read_answer(s)
    assert answer.startswith(b"HTTP/1.1 413") and b"100 Continue" not in answer


@pytest.mark.parametrize("header", ["bearer s3cret", "BEARER s3cret", "Bearer  s3cret"])
def test_the_bearer_scheme_is_case_insensitive(header):
    from rlplat.serving.grpc_api import _BearerToken
    from rlplat.serving.metrics import ServingMetrics
    from rlplat.serving.rest import RestApp

    app = RestApp(None, ServingMetrics(), 1024, "s3cret")  # /metrics needs no manager

    async def no_body() -> bytes:
        return b""

    def get(value: str) -> int:
        headers = [(b"authorization", value.encode())]
        return asyncio.run(app.respond("GET", "/metrics", headers, no_body))[0]

    assert get(header) == 200
    assert get(header.replace("s3cret", "s3creT")) == 401
    assert get("Basic s3cret") == 401

    class Details:
        invocation_metadata = (("authorization", header),)

    interceptor = _BearerToken("s3cret")
    assert interceptor.intercept_service(lambda d: "served", Details()) == "served"
