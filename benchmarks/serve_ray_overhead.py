"""Where `rlplat serve --ray`'s old Ray Serve path spent its time: Ray Serve's own cost per
request, with no model at all; one JSON line.

    .venv/bin/python benchmarks/serve_ray_overhead.py

A trivial ASGI app (it answers every request with the same 40-byte JSON, no TensorFlow) is
served three ways and loaded with wrk (one thread, keep-alive, the docs' batch-1 body):
1. by rlplat's own HTTP front end (rlplat/serving/http.py) in this process's child: the
   floor a Python front end sets on this machine;
2. by Ray Serve with 1 replica, 3. with 2 replicas (`max_ongoing_requests` 256, access log
   off, log level WARNING: as the old `--ray` deployed rlplat): every request crosses Ray
   Serve's HTTP proxy (a uvicorn ASGI server in its own actor) and a handle call to a
   replica actor (routing, gRPC between the processes, pickled request and answer).
Whatever 2 and 3 lose against 1 is Ray Serve's path, since the app does nothing. The model
adds its own cost on top (benchmarks/serve_load.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import time

import requests
from _server import free_port
from serve_load import wrk_round, wrk_script

import rlplat  # noqa: F401  (environment set-up before Ray)

ANSWER = b'{"predictions": [{"actions": 0}]}'
BODY = b'{"instances": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]]}'


class Trivial:
    """ASGI: read the body, answer ANSWER."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        more = True
        while more:
            more = (await receive()).get("more_body", False)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(ANSWER)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": ANSWER})


def _lean(port: int) -> None:
    import asyncio

    import uvloop

    from rlplat.serving.http import serve_http
    from rlplat.serving.ports import bind

    class App(Trivial):  # what serve_http calls: respond(), as RestApp has
        async def respond(self, method, path, headers, read_body):
            await read_body()
            return 200, [(b"content-type", b"application/json")], ANSWER

        metrics = None  # (only read when connections go over the cap: not here)
        max_body_bytes = 1 << 20

    async def main() -> None:
        await serve_http(App(), bind("127.0.0.1", port), asyncio.Event())

    uvloop.run(main())


def wait_up(url: str, seconds: float = 120) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        with contextlib.suppress(requests.RequestException):
            if requests.post(url, data=BODY, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def measure(url: str, levels: list[int], seconds: float, script: str) -> list[dict]:
    wrk = shutil.which("wrk")
    out = []
    for c in levels:
        wrk_round(wrk, script, url, c, 1, BODY)  # warm-up
        r = wrk_round(wrk, script, url, c, seconds, BODY)
        out.append({"connections": c, **{k: r[k] for k in
                    ("requests_per_s", "p50_ms", "p99_ms", "errors")}})  # fmt: skip
    return out


def ray_serve(replicas: int, port: int) -> None:
    from ray import serve

    serve.start(http_options={"host": "127.0.0.1", "port": port},
                logging_config={"log_level": "WARNING", "enable_access_log": False})  # fmt: skip
    dep = serve.deployment(
        serve.ingress(Trivial())(type("App", (), {})),
        num_replicas=replicas,
        ray_actor_options={"num_cpus": 0.5},
        max_ongoing_requests=256,
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )
    serve.run(dep.bind(), name="trivial", route_prefix="/", blocking=False)


class Echo:
    """A Ray actor, and a Serve deployment, answering ANSWER."""

    def __call__(self, body: bytes) -> bytes:
        return ANSWER


def call_latency(call, n: int = 1000) -> dict:
    """Sequential calls: p50/p99 round trip in ms."""
    for _ in range(50):
        call()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        times.append((time.perf_counter() - t) * 1e3)
    times.sort()
    return {"calls": n, "p50_ms": round(times[n // 2], 3), "p99_ms": round(times[n * 99 // 100], 3)}


def breakdown(port: int) -> dict:
    """Where a request's time goes inside Ray, one hop at a time, from this process: a plain
    actor call (Ray's RPC and pickling), a Serve handle call (plus Serve's router), HTTP
    through Serve's proxy (plus the proxy's ASGI server and its own handle call)."""
    import ray
    from ray import serve

    actor = ray.remote(num_cpus=0)(Echo).remote()
    out = {"actor_call": call_latency(lambda: ray.get(actor.__call__.remote(BODY)))}
    handle = serve.run(serve.deployment(Echo, num_replicas=1,
                                        ray_actor_options={"num_cpus": 0.5}).bind(),
                       name="echo", route_prefix="/echo")  # fmt: skip
    out["serve_handle_call"] = call_latency(lambda: handle.remote(BODY).result())
    session = requests.Session()
    url = f"http://127.0.0.1:{port}/echo"
    out["serve_http_via_proxy"] = call_latency(lambda: session.post(url, data=BODY))
    serve.delete("echo")
    ray.kill(actor)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("error: wrk is not on the PATH (apt install wrk)")
    results = {}
    with wrk_script() as script:
        port = free_port()
        proc = multiprocessing.get_context("spawn").Process(target=_lean, args=(port,))
        proc.start()
        try:
            wait_up(f"http://127.0.0.1:{port}/")
            results["rlplat_http_1_process"] = measure(
                f"http://127.0.0.1:{port}/", args.levels, args.seconds, script
            )
        finally:
            proc.terminate()
            proc.join()
        import ray
        from ray import serve

        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
        try:
            for replicas in (1, 2):
                port = free_port()
                ray_serve(replicas, port)
                wait_up(f"http://127.0.0.1:{port}/")
                results[f"ray_serve_{replicas}_replicas"] = measure(
                    f"http://127.0.0.1:{port}/", args.levels, args.seconds, script
                )
                if replicas == 1:
                    results["sequential_round_trips"] = breakdown(port)
                serve.shutdown()
        finally:
            ray.shutdown()
    print(json.dumps({"benchmark": "serve_ray_overhead", "cpus": os.cpu_count(),
                      "loadavg": [round(x, 2) for x in os.getloadavg()],
                      "seconds": args.seconds, "results": results}))  # fmt: skip


if __name__ == "__main__":
    main()
