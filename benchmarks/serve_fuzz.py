"""Bounded fuzz of `rlplat serve`'s REST API with malformed requests (hypothesis), then
protocol attacks. The fuzz: random methods, paths and bodies (broken JSON, wrong types,
ragged or mis-shaped tensors, both or neither of instances/inputs, NaN, huge numbers, junk
bytes); counts answers by status; a 5xx, a non-JSON error body or a server that stops
answering correctly afterwards is a failure. The attacks (long URL, slow headers, pipelining
without reading, oversized rows, a huge gRPC shape, many idle connections) each run while a
well-behaved client measures its latency and the server's RSS is watched. Then fixed probes
with the answer each must get (benchmarks/_serve_probes.py). One JSON line.

    .venv/bin/python benchmarks/serve_fuzz.py --model-base-path models --model lunarlander_pg

tests/serving/test_rest.py runs the same fuzz with fewer examples.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing
import resource
import select
import socket
import threading
import time
import urllib.parse
from pathlib import Path

import requests
from _serve_probes import probes
from _server import running_server_process
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

SUFFIXES = ["", ":predict", "/metadata", ":classify", ":regress", ":", ":predict/x", "/"]
KEYS = ["instances", "inputs", "signature_name", "observations"]


def mostly(common: st.SearchStrategy, rare: st.SearchStrategy, k: int = 6) -> st.SearchStrategy:
    """`common` k times out of k + 1 (st.one_of would draw each branch equally often)."""
    return st.integers(0, k).flatmap(lambda i: rare if i == 0 else common)


def requests_strategy(model: str, obs_dim: int) -> st.SearchStrategy:
    leaf = (
        st.none() | st.booleans() | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    )  # fmt: skip
    value = st.recursive(
        leaf,
        lambda c: st.lists(c, max_size=5)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), c, max_size=4),
        max_leaves=30,
    )  # fmt: skip
    number = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.integers(-9, 9)
    row = st.lists(number | leaf, min_size=obs_dim - 1, max_size=obs_dim + 1)
    rows = st.lists(row, max_size=4) | st.lists(
        st.fixed_dictionaries({"observations": row}), max_size=3
    )
    tensor = rows | value | st.dictionaries(st.sampled_from(["observations", "x"]), rows)
    body = st.fixed_dictionaries(
        {},
        optional={
            "signature_name": st.sampled_from(["serving_default", "sample", "nope", ""]) | value,
            "instances": tensor,
            "inputs": tensor,
        },
    ).map(lambda d: json.dumps(d).encode())
    raw = st.binary(max_size=120) | value.map(lambda v: json.dumps(v).encode())
    # Mostly the real model's predict URL, so most bodies reach the request parser.
    segment = mostly(
        st.just(model), st.sampled_from(["nope", "..", "%2e%2e", "a/b"]) | st.text(max_size=8)
    )
    version = mostly(st.just(""), st.sampled_from(["/versions/1", "/versions/999", "/versions/-1",
                     "/versions/x", "/labels/stable", "/labels/"]))  # fmt: skip
    path = mostly(st.builds(
        lambda name, ver, suf: f"/v1/models/{urllib.parse.quote(name, safe='')}{ver}{suf}",
        segment, version, mostly(st.just(":predict"), st.sampled_from(SUFFIXES)),
    ), st.sampled_from(["/", "/v1/models", "/v1/models/", "/metrics", "/v2/models/x"]))  # fmt: skip
    method = mostly(st.just("POST"), st.sampled_from(["GET", "PUT", "DELETE"]))
    return st.tuples(method, path, mostly(body, raw, 3))


def fuzz(base_url: str, model: str, obs_dim: int, examples: int, seed: int = 0) -> dict:
    """Runs `examples` random requests; returns counts (raises nothing: the caller judges)."""
    counts: collections.Counter = collections.Counter()
    bad: list[str] = []
    session = requests.Session()

    @settings(max_examples=examples, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck), derandomize=False)  # fmt: skip
    @given(requests_strategy(model, obs_dim))
    def one(req: tuple[str, str, bytes]) -> None:
        method, path, body = req
        try:
            r = session.request(method, base_url + path, data=body, timeout=10)
        except requests.RequestException as exc:
            counts["no answer"] += 1
            bad.append(f"{method} {path}: {type(exc).__name__}")
            return
        counts[r.status_code] += 1
        if r.status_code >= 500:
            bad.append(f"{method} {path} {body[:80]!r} -> {r.status_code} {r.text[:120]}")
        elif r.status_code >= 400:
            try:
                ok = isinstance(r.json().get("error"), str)
            except ValueError:
                ok = False
            if not ok:
                bad.append(f"{method} {path} -> {r.status_code} without a JSON error")

    import random

    random.seed(seed)
    one()
    check = session.post(
        f"{base_url}/v1/models/{model}:predict",
        data=json.dumps({"instances": [[0.0] * obs_dim]}),
        timeout=10,
    )
    return {
        "requests": sum(counts.values()),
        "by_status": {str(k): v for k, v in sorted(counts.items(), key=str)},
        "5xx": sum(v for k, v in counts.items() if isinstance(k, int) and k >= 500),
        "no_answer": counts["no answer"],
        "bad": bad[:5],
        "serves_correctly_after": check.status_code == 200 and "predictions" in check.json(),
    }


# ---------------------------------------------------------------------- protocol attacks
# Each runs for `seconds` against the server while a well-behaved client (its own process,
# so the attackers' Python does not slow it) posts one predict every 20 ms on a keep-alive
# connection; the server's RSS is sampled meanwhile. Figures per attack, and whether the
# client's p99 stayed <= 50 ms and the RSS grew <= 100 MB.

P99_MS, RSS_MB = 50.0, 100.0


def predict_request(model: str, obs_dim: int, rows: int = 1) -> bytes:
    body = json.dumps({"instances": [[0.0] * obs_dim] * rows}).encode()
    return (b"POST /v1/models/%s:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nContent-Length: %d\r\n\r\n%s" % (model.encode(), len(body), body))  # fmt: skip


def good_client(port: int, request: bytes, seconds: float, out) -> None:
    """Spawned process: one request every 20 ms on one connection (reconnects on error);
    sends back (latency of every attempt in s, errors)."""
    import socket as socket_

    latencies, errors, sock = [], 0, None
    out.send("ready")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            if sock is None:
                sock = socket_.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(request)
            if not _read_reply(sock).startswith(b"HTTP/1.1 200"):
                errors += 1
        except OSError:
            errors += 1
            sock = sock.close() if sock else None
        latencies.append(time.perf_counter() - t0)
        time.sleep(0.02)
    out.send((latencies, errors))


def _read_reply(sock) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    return head


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmRSS")).split()[1]) / 1024


def connect(port: int, timeout: float = 2.0) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def attack_long_url(port: int, stop: threading.Event, ctx: dict) -> dict:
    """`GET /` then endless 64 KiB chunks of `a`, on one connection after another (what
    is sent per connection is mostly what the socket buffers take before the close)."""
    sent, per_conn, conns = 0, [], 0
    while not stop.is_set():
        conns, n = conns + 1, 0
        try:
            with connect(port) as s:
                s.sendall(b"GET /")
                while not stop.is_set() and n < 1 << 30:
                    s.sendall(b"a" * 65536)
                    n += 65536
        except OSError:
            pass
        sent, per_conn = sent + n, [*per_conn, n]
    return {"connections": conns, "mib_sent": round(sent / 2**20, 1),
            "max_kib_per_connection": max(per_conn, default=0) // 1024}  # fmt: skip


def attack_slow_headers(port: int, stop: threading.Event, ctx: dict, n: int = 50) -> dict:
    """n connections each sending one header byte every 0.5 s, for ever."""
    socks, opened = [], {}
    for _ in range(n):
        s = connect(port)
        s.sendall(b"GET /v1/models HTTP/1.1\r\nX-Slow: ")
        socks.append(s)
        opened[s] = time.monotonic()
    held = {}
    while not stop.is_set() and len(held) < n:
        for s in socks:
            if s in held:
                continue
            try:
                s.sendall(b"x")
            except OSError:
                held[s] = time.monotonic() - opened[s]
        stop.wait(0.5)
    for s in socks:
        s.close()
    return {"connections": n, "closed_by_server": len(held),
            "held_max_s": round(max(held.values(), default=float("nan")), 1)}  # fmt: skip


def attack_pipelining(port: int, stop: threading.Event, ctx: dict) -> dict:
    """Pipelined predicts on one socket, never reading a reply. What was sent is what the
    socket buffers took before the server stopped reading (each read answered or queued)."""
    batch, sent = ctx["predict"] * 500, 0
    with connect(port, timeout=1.0) as s:
        while not stop.is_set():
            try:
                s.sendall(batch)
                sent += len(batch)
            except TimeoutError:
                continue  # the server stopped reading: try again until the end
            except OSError:
                break
    return {"requests_sent": sent // len(ctx["predict"]), "mib_sent": sent >> 20}


def attack_oversized_rows(port: int, stop: threading.Event, ctx: dict) -> dict:
    """Predicts with as many rows as the body limit allows, one after another."""
    request = ctx["big_rows"]
    codes: collections.Counter = collections.Counter()
    while not stop.is_set():
        try:
            with connect(port, timeout=30) as s:
                s.sendall(request)
                codes[_read_reply(s).split(b" ")[1].decode()] += 1
        except OSError as exc:
            codes[type(exc).__name__] += 1
    return {"rows": ctx["rows"], "by_status": dict(codes)}


def attack_grpc_huge_shape(port: int, stop: threading.Event, ctx: dict) -> dict:
    """A 50-byte PredictRequest of shape [262144, obs_dim] with one float_val."""
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    req = ctx["grpc_huge"]
    codes: collections.Counter = collections.Counter()
    with grpc.insecure_channel(f"127.0.0.1:{ctx['grpc_port']}", options=[
        ("grpc.max_receive_message_length", 64 << 20)]) as channel:  # fmt: skip
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        while not stop.is_set():
            try:
                stub.Predict(req, timeout=30)
                codes["OK"] += 1
            except grpc.RpcError as exc:
                codes[exc.code().name] += 1
    return {"request_bytes": req.ByteSize(), "by_code": dict(codes)}


def grpc_huge_request(model: str, obs_dim: int):
    """Built before the attacks: importing the stubs takes seconds (TensorFlow)."""
    from tensorflow_serving.apis import predict_pb2

    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    tensor = req.inputs["observations"]
    tensor.dtype = 1  # DT_FLOAT
    for size in (262144, obs_dim):
        tensor.tensor_shape.dim.add().size = size
    tensor.float_val.append(0.0)
    return req


def attack_idle_connections(port: int, stop: threading.Event, ctx: dict) -> dict:
    """As many idle connections as this process may open (up to 3,000)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    socks = []
    try:
        while len(socks) < 3000 and not stop.is_set():
            try:
                socks.append(connect(port))
            except OSError:
                break
        stop.wait(1.0)
        poll = select.poll()  # (select() cannot take descriptors past 1024)
        for s in socks:
            poll.register(s, select.POLLIN)
        closed = len(poll.poll(0))  # closed by the server (to make room, or refused)
        try:  # a new client, while the attacker holds its connections
            with connect(port, timeout=5) as s:
                s.sendall(ctx["predict"])
                new_served = _read_reply(s).startswith(b"HTTP/1.1 200")
        except OSError:
            new_served = False
        stop.wait()
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return {"opened": len(socks), "closed_by_server": closed,
            "new_connection_served": new_served}  # fmt: skip


ATTACKS = {
    "long_url": attack_long_url,
    "slow_headers": attack_slow_headers,
    "pipelining_without_reading": attack_pipelining,
    "oversized_rows": attack_oversized_rows,
    "grpc_huge_shape": attack_grpc_huge_shape,
    "idle_connections": attack_idle_connections,
}


def under_attack(port: int, pid: int, attack, ctx: dict, seconds: float) -> dict:
    """Runs `attack` (None: no attack) while the well-behaved client measures; one entry."""
    parent, child = multiprocessing.get_context("spawn").Pipe()
    client = multiprocessing.get_context("spawn").Process(
        target=good_client, args=(port, ctx["predict"], seconds, child), daemon=True
    )
    client.start()
    assert parent.recv() == "ready"
    before, peak, stop, figures = rss_mb(pid), [0.0], threading.Event(), {}

    def run() -> None:
        figures.update(attack(port, stop, ctx) if attack else {})

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    while not parent.poll(0.1):
        peak[0] = max(peak[0], rss_mb(pid))
    latencies, errors = parent.recv()
    stop.set()
    worker.join(timeout=60)
    client.join(timeout=10)
    ms = sorted(x * 1000 for x in latencies) or [float("nan")]
    p50, p99 = ms[len(ms) // 2], ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    growth = max(peak[0], rss_mb(pid)) - before
    return {**figures, "client_requests": len(ms), "client_errors": errors,
            "client_p50_ms": round(p50, 2), "client_p99_ms": round(p99, 2),
            "rss_growth_mb": round(growth, 1),
            "held": p99 <= P99_MS and growth <= RSS_MB and errors == 0}  # fmt: skip


def attacks(port: int, pid: int, ctx: dict, seconds: float) -> dict:
    out = {"none": under_attack(port, pid, None, ctx, seconds)}
    for name, attack in ATTACKS.items():
        out[name] = under_attack(port, pid, attack, ctx, seconds)
        time.sleep(2)  # let the server settle (closed connections, freed buffers)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-base-path", type=Path, default=Path("models"))
    ap.add_argument("--model", default="lunarlander_pg")
    ap.add_argument("--examples", type=int, default=5000, help="fuzzed requests (0: none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--attack-seconds", type=float, default=15.0, help="per attack (0: none)")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        grpc_port = s.getsockname()[1]
    extra = ("--grpc-port", str(grpc_port))
    with running_server_process(args.model_base_path, args.model, *extra) as (base, proc):
        meta = requests.get(f"{base}/v1/models/{args.model}/metadata", timeout=10)
        sig = meta.json()["metadata"]["signature_def"]["signature_def"]["serving_default"]
        obs_dim = int(sig["inputs"]["observations"]["tensor_shape"]["dim"][-1]["size"])
        t0 = time.perf_counter()
        result = fuzz(base, args.model, obs_dim, args.examples, args.seed) if args.examples else {}
        wall = time.perf_counter() - t0
        out = {}
        if args.attack_seconds > 0:
            rows = (4 * 1024 * 1024 - 200) // len(json.dumps([0.0] * obs_dim) + ", ")
            ctx = {"model": args.model, "obs_dim": obs_dim, "grpc_port": grpc_port,
                   "predict": predict_request(args.model, obs_dim), "rows": rows,
                   "big_rows": predict_request(args.model, obs_dim, rows),
                   "grpc_huge": grpc_huge_request(args.model, obs_dim)}  # fmt: skip
            port = int(base.rsplit(":", 1)[1])
            held = attacks(port, proc.pid, ctx, args.attack_seconds)
            out |= {"attacks": held, "all_held": all(a["held"] for a in held.values())}
        # last: 5,000 gRPC calls at once leave the server bigger for a while
        out["probes"] = probes(int(base.rsplit(":", 1)[1]), grpc_port, args.model, obs_dim)
    print(json.dumps({"benchmark": "serve_fuzz", "model": args.model, "examples": args.examples,
                      "seed": args.seed, "wall_s": round(wall, 1), **result,
                      "attack_seconds": args.attack_seconds, "p99_limit_ms": P99_MS,
                      "rss_growth_limit_mb": RSS_MB, **out}))  # fmt: skip


if __name__ == "__main__":
    main()
