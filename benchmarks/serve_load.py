"""Load test of `rlplat serve` on loopback: batch-1 REST :predict at 1, 16 and 64 concurrent
clients (p50/p99 latency, requests/s, errors; 3 rounds of 5 s per level, interleaved, as
this machine's speed drifts), by two clients, next to the in-process SavedModel call time
measured in the same run; one JSON line.

    .venv/bin/python benchmarks/serve_load.py --model-base-path models --model lunarlander_pg

The server is the real `rlplat serve` in its own process. The load generator is a lean
asyncio HTTP/1.1 keep-alive client (one connection per simulated client, each sending its
next request as soon as the previous answer is in, as wrk does): a Python HTTP library adds
more client time per request than the server spends. Each answer is checked: HTTP 200 and
a `predictions` body; anything else, a timeout or a dropped connection is an error.
A level with one client beside four connections posting 4 MiB bodies (`big_bodies`)
measures what a big request costs everyone else (p99, the server's RSS growth).
The second client is wrk (C, one thread: `wrk_levels`), which sends requests faster than
this client can and so shows the server's tail at saturation; without wrk on the PATH the
JSON line says so and only the Python client runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import uvloop
from _server import latest_version, running_server

import rlplat  # noqa: F401  (environment set-up before TensorFlow)

TARGETS = {
    "c1_p50_ms": 1.0, "c1_p99_ms": 5.0, "c64_rps": 3000.0, "errors": 0, "c64_wrk_p99_ms": 50.0,
    "big_body_client_p99_ms": 50.0, "big_body_rss_growth_mb": 100.0,
}  # fmt: skip

# wrk posts the body and reports, from its `done` hook, one JSON object (latencies in us).
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = os.getenv("RLPLAT_WRK_BODY")
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK {"requests": %d, "us": %d, "p50": %d, "p90": %d, "p99": %d, "max": %d, ' ..
    '"errors": %d}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(90), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.status + e.timeout))
end
"""


def in_process_us(version_dir: Path, obs: np.ndarray, calls: int) -> dict[str, float]:
    """Batch-1 call time of the SavedModel in this process: the TF2 signature call a user
    would write, and the TF1 session callable the server runs (the floor under a request)."""
    import tensorflow as tf

    def median_us(fn) -> float:
        for i in range(50):
            fn(obs[i % len(obs)])
        times = []
        for i in range(calls):
            t = time.perf_counter()
            fn(obs[i % len(obs)])
            times.append(time.perf_counter() - t)
        return float(np.median(times) * 1e6)

    sig = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    from rlplat.serving.config import ServingConfig
    from rlplat.serving.servable import Servable, session_callable

    out = {"saved_model_signature_call_us": round(median_us(lambda o: sig(observations=o)), 1)}
    # The server's session callable (its default config: ops in the calling thread), the
    # same on TF's inter-op thread pool, and Session.make_callable's generic path.
    for key, cfg in (
        ("session_callable_us", ServingConfig()),
        ("session_callable_tf_pools_us", ServingConfig(session_inter_op_threads=0)),
    ):
        run = Servable("bench", 1, version_dir, cfg).signature("serving_default").run
        out[key] = round(median_us(lambda o, run=run: run(o)), 1)
    servable = Servable("bench", 1, version_dir, ServingConfig())
    sig = servable.signature("serving_default")
    generic = session_callable(
        servable._session,  # noqa: SLF001  (the same session, the other call path)
        [s.tensor_name for s in sig.inputs.values()],
        [s.tensor_name for s in sig.outputs.values()],
        generic=True,
    )
    out["session_make_callable_us"] = round(median_us(lambda o: generic(o)), 1)
    return out


class _Conn(asyncio.Protocol):
    """One keep-alive connection: send, wait for the whole answer, record, repeat."""

    def __init__(self, bodies: list[bytes], stats: dict, deadline: float, done: asyncio.Future,
                 stop: threading.Event | None = None):  # fmt: skip
        self.bodies, self.stats, self.deadline, self.done = bodies, stats, deadline, done
        self.stop = stop
        self.buf = b""
        self.i = 0

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._send()

    def _send(self) -> None:
        if time.perf_counter() >= self.deadline or (self.stop and self.stop.is_set()):
            self.transport.close()
            return
        self.i += 1
        self.sent = time.perf_counter()
        self.transport.write(self.bodies[self.i % len(self.bodies)])

    def data_received(self, data: bytes) -> None:
        self.buf += data
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buf[:head_end]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if len(self.buf) < head_end + 4 + length:
            return
        body = self.buf[head_end + 4 : head_end + 4 + length]
        self.buf = self.buf[head_end + 4 + length :]
        ok = head.startswith(b"HTTP/1.1 200") and body.startswith(b'{"predictions":')
        if ok:
            self.stats["lat"].append(time.perf_counter() - self.sent)
        else:
            self.stats["errors"] += 1
            self.stats.setdefault("first_error", (head + b" " + body)[:200].decode("latin-1"))
        self._send()

    def connection_lost(self, exc) -> None:
        if exc is not None:
            self.stats["errors"] += 1
        if not self.done.done():
            self.done.set_result(None)


def summarize(concurrency: int, rounds: list[dict]) -> dict:
    """All rounds' requests pooled for the percentiles; each round's figures kept."""
    lat = np.concatenate([r.pop("lat_ms") for r in rounds])
    seconds = sum(r["seconds"] for r in rounds)
    if not len(lat):
        lat = np.array([np.nan])  # every request failed: the errors count says so
    out = {
        "concurrency": concurrency,
        "requests": int(len(lat)),
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(lat) / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p90_ms": round(float(np.percentile(lat, 90)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "max_ms": round(float(lat.max()), 3),
        "errors": sum(r["errors"] for r in rounds),
        "rounds": rounds,
    }
    first_error = next((r.pop("first_error") for r in rounds if "first_error" in r), None)
    if first_error:
        out["first_error"] = first_error
    return out


async def load(
    port: int, path: str | list[str], concurrency: int, seconds: float, obs: np.ndarray,
    stop: threading.Event | None = None, keyed: bool = False,
) -> dict:  # fmt: skip
    """`keyed`: each body carries its own routing key (X-Rlplat-Route, benchmarks/serve_ab.py).
    `path` may be a list: body i goes to path i mod its length (a client-side split)."""
    paths = [path] if isinstance(path, str) else list(path)
    bodies = []
    for i, o in enumerate(obs):
        payload = json.dumps({"instances": [o.tolist()]}).encode()
        route = f"X-Rlplat-Route: episode-{i}\r\n" if keyed else ""
        bodies.append(
            f"POST {paths[i % len(paths)]} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\n"
            f"{route}Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
    loop = asyncio.get_running_loop()
    stats = {"lat": [], "errors": 0}
    start = time.perf_counter()
    deadline = start + seconds
    dones = []
    for _ in range(concurrency):
        done = loop.create_future()
        dones.append(done)
        await loop.create_connection(
            lambda done=done: _Conn(bodies, stats, deadline, done, stop), "127.0.0.1", port
        )
    try:
        await asyncio.wait_for(asyncio.gather(*dones), seconds + 30)
    except TimeoutError:
        stats["errors"] += sum(not d.done() for d in dones)
    elapsed = time.perf_counter() - start
    lat = np.array(stats["lat"]) * 1e3
    out = {
        "seconds": round(elapsed, 2),
        "requests_per_s": round(len(lat) / elapsed, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 3) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 3) if len(lat) else None,
        "errors": stats["errors"],
        "lat_ms": lat,
    }
    if "first_error" in stats:
        out["first_error"] = stats["first_error"]
    return out


@contextlib.contextmanager
def wrk_script(text: str = WRK_SCRIPT) -> Iterator[str]:
    """A wrk script (WRK_SCRIPT unless given) in a temporary .lua file, for wrk_round."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(text)
        script.flush()
        yield script.name


def wrk_round(wrk: str, script: str, url: str, concurrency: int, seconds: float,
              body: bytes, env: dict[str, str] | None = None) -> dict:  # fmt: skip
    """One wrk run (one thread, `concurrency` keep-alive connections): the round's figures.
    `env`: more variables for the script."""
    cmd = [wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(seconds))}s", "--latency",
           "-s", script, url]  # fmt: skip
    env = {**os.environ, **(env or {}), "RLPLAT_WRK_BODY": body.decode()}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRK ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
    r = json.loads(line[4:])
    return {
        "seconds": round(r["us"] / 1e6, 2),
        "requests": r["requests"],
        "requests_per_s": round(r["requests"] / (r["us"] / 1e6), 1),
        **{f"{k}_ms": round(r[k] / 1e3, 3) for k in ("p50", "p90", "p99", "max")},
        "errors": r["errors"],
    }


def summarize_big(rounds: list[dict]) -> dict:
    statuses: dict[str, int] = {}
    for r in rounds:
        for k, n in r.pop("big_statuses").items():
            statuses[k] = statuses.get(k, 0) + n
    growth = max(r.pop("rss_growth_mb") for r in rounds)
    return {**summarize(1, rounds), "big_statuses": statuses, "rss_growth_mb_max": growth}


def summarize_wrk(concurrency: int, rounds: list[dict]) -> dict:
    """wrk gives percentiles per run, not latencies: the median round's, and the worst p99."""
    seconds = sum(r["seconds"] for r in rounds)
    mid = sorted(rounds, key=lambda r: r["p99_ms"])[len(rounds) // 2]
    return {
        "concurrency": concurrency,
        "requests": sum(r["requests"] for r in rounds),
        "seconds": round(seconds, 2),
        "requests_per_s": round(sum(r["requests"] for r in rounds) / seconds, 1),
        **{k: mid[k] for k in ("p50_ms", "p90_ms", "p99_ms")},
        "worst_p99_ms": max(r["p99_ms"] for r in rounds),
        "max_ms": max(r["max_ms"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "rounds": rounds,
    }


def server_pid(port: int) -> int:
    """The `rlplat serve` child listening on `port` (for its RSS)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if (
                    b"serve" in argv
                    and b"--port" in argv
                    and (argv[argv.index(b"--port") + 1] == str(port).encode())
                ):
                    return int(proc.name)
    raise RuntimeError(f"no rlplat serve process on port {port}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


async def big_body_round(
    port: int, path: str, seconds: float, obs: np.ndarray, attackers: int = 4
) -> dict:
    """One well-behaved client (batch 1, as in `load`) while `attackers` connections post
    bodies just under the 4 MiB limit back to back (~230k rows: over the rows cap, but all
    of it must be parsed to know); the client's latency and the server's peak RSS growth."""
    row = b"[" + b",".join([b"0"] * obs.shape[-1]) + b"],"
    body = b'{"instances":[' + row * ((4 * 1024 * 1024 - 64) // len(row)) + row[:-1] + b"]}"
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
    pid = server_pid(port)
    before = peak = rss_mb(pid)
    deadline = time.perf_counter() + seconds
    statuses: dict[str, int] = {}

    async def attack() -> None:
        while time.perf_counter() < deadline:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            answer = await reader.read()  # (the server closes: Connection: close)
            writer.close()
            status = answer[9:12].decode() or "dropped"
            statuses[status] = statuses.get(status, 0) + 1

    async def sample() -> None:
        nonlocal peak
        while time.perf_counter() < deadline:
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.01)

    client, *_ = await asyncio.gather(
        load(port, path, 1, seconds, obs), sample(), *(attack() for _ in range(attackers))
    )
    client["big_statuses"] = statuses
    client["rss_growth_mb"] = round(peak - before, 1)
    return client


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-base-path", type=Path, default=Path("models"))
    ap.add_argument("--model", default="lunarlander_pg")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--seconds", type=float, default=5.0, help="per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per concurrency level")
    ap.add_argument("--warmup-seconds", type=float, default=2.0)
    ap.add_argument("--config", type=Path, help="serving.yaml for the server")
    ap.add_argument(
        "--http",
        nargs="+",
        default=["lean"],
        choices=["lean", "uvicorn"],
        help="front end(s); the first is judged against the targets",
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        help="also serve from this checkout (e.g. the main branch), interleaved: before/after",
    )
    ap.add_argument(
        "--no-big-body",
        dest="big_body",
        action="store_false",
        help="skip the level with 4 connections posting 4 MiB bodies beside one client",
    )
    args = ap.parse_args()

    version_dir, meta = latest_version(args.model_base_path, args.model)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(256, *meta["observation_shape"])).astype(np.float32)

    extra = ["--config", str(args.config)] if args.config else []
    path = f"/v1/models/{args.model}:predict"
    wrk = shutil.which("wrk")
    wrk_body = json.dumps({"instances": [obs[0].tolist()]}).encode()
    with contextlib.ExitStack() as stack:
        ports = {}  # one server per front end, all up at once: rounds interleave across them
        for http in args.http:
            url = stack.enter_context(
                running_server(args.model_base_path, args.model, "--http", http, *extra)
            )
            ports[http] = int(url.rsplit(":", 1)[1])
        if args.baseline:
            with _pythonpath(args.baseline):
                url = stack.enter_context(running_server(args.model_base_path, args.model, *extra))
            ports["baseline"] = int(url.rsplit(":", 1)[1])
        script = stack.enter_context(wrk_script())
        in_proc = in_process_us(version_dir, obs[:, None], 2000)
        for port in ports.values():
            for c in args.concurrency:
                uvloop.run(load(port, path, c, args.warmup_seconds, obs))  # warm, not counted
        rounds = {(h, c): [] for h in ports for c in args.concurrency}
        wrk_rounds = {(h, c): [] for h in ports for c in args.concurrency}
        big_rounds = {h: [] for h in ports}
        for _ in range(args.rounds):  # interleaved: this machine's speed drifts
            for http, port in ports.items():
                if args.big_body:
                    big_rounds[http].append(
                        uvloop.run(big_body_round(port, path, args.seconds, obs))
                    )
            for c in args.concurrency:
                for http, port in ports.items():
                    rounds[http, c].append(uvloop.run(load(port, path, c, args.seconds, obs)))
                    if wrk:
                        url = f"http://127.0.0.1:{port}{path}"
                        wrk_rounds[http, c].append(
                            wrk_round(wrk, script, url, c, args.seconds, wrk_body)
                        )
    by_http = {h: [summarize(c, rounds[h, c]) for c in args.concurrency] for h in ports}
    by_big = {h: summarize_big(big_rounds[h]) if args.big_body else None for h in ports}
    by_wrk = {
        h: [summarize_wrk(c, wrk_rounds[h, c]) for c in args.concurrency] if wrk else None
        for h in ports
    }
    first = args.http[0]
    levels = by_http[first]
    print(json.dumps({
        "benchmark": "serve_load",
        "model": f"{args.model} v{version_dir.name}",
        "cpus": os.cpu_count(),
        "in_process_batch1": in_proc,
        "http": first,
        "levels": levels,
        "wrk_levels": by_wrk[first] if wrk else "wrk is not installed: Python client only",
        "big_bodies": by_big[first],
        **({"other_front_ends": {h: {"levels": by_http[h], "wrk_levels": by_wrk[h],
                                     "big_bodies": by_big[h]}
                                 for h in ports if h != first}}
           if len(ports) > 1 else {}),
        **({"baseline": str(args.baseline)} if args.baseline else {}),
        "targets": TARGETS,
        "met": judge(levels, by_wrk[first], by_big[first]),
    }))  # fmt: skip


def judge(levels: list[dict], wrk_levels: list[dict] | None, big: dict | None) -> dict:
    by_c = {lv["concurrency"]: lv for lv in levels}
    met = {}
    if 1 in by_c:
        met["c1_p50_ms"] = by_c[1]["p50_ms"] is not None and by_c[1]["p50_ms"] <= 1.0
        met["c1_p99_ms"] = by_c[1]["p99_ms"] is not None and by_c[1]["p99_ms"] <= 5.0
    if 64 in by_c:
        met["c64_rps"] = by_c[64]["requests_per_s"] >= 3000
    met["errors"] = all(lv["errors"] == 0 for lv in [*levels, *(wrk_levels or [])])
    if big is not None:
        met["big_body_client_p99_ms"] = big["p99_ms"] <= TARGETS["big_body_client_p99_ms"]
        met["big_body_rss_growth_mb"] = (
            big["rss_growth_mb_max"] <= TARGETS["big_body_rss_growth_mb"]
        )
    wrk_64 = [lv for lv in wrk_levels or [] if lv["concurrency"] == 64]
    if wrk_64:
        met["c64_wrk_p99_ms"] = wrk_64[0]["p99_ms"] <= TARGETS["c64_wrk_p99_ms"]
    return met


@contextlib.contextmanager
def _pythonpath(checkout: Path):
    """Start a server on another checkout's code (the baseline of a before/after run)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(checkout.resolve())
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


if __name__ == "__main__":
    main()
