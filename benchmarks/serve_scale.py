"""Scale-out serving: one `rlplat serve` process against `rlplat serve --ray` with 1 and 2
replicas, batch-1 REST :predict loaded by wrk at 1, 16 and 64 connections; one JSON line.

    .venv/bin/python benchmarks/serve_scale.py --model-base-path models --model lunarlander_pg

wrk (C, one thread, keep-alive, the README's batch-1 body) is the client, as in the issue
that asked for this; each server runs alone (a `--ray` one brings its own Ray), in
`--passes` passes over the three (A B C A B C: a drift of the machine's speed hits all
alike), 5 s per level after a 1 s warm-up. The figures judged are the issue's: at 64
connections `--ray --replicas 2` reaches >= 0.8x the one process's requests/s, and at 1
connection its p50 is <= 2x the one process's. On a 2-core machine the client and the
servers share the cores: absolute figures do not travel, the ratios are the result.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import requests
from _server import RLPLAT, latest_version
from serve_load import WRK_SCRIPT, summarize_wrk, wrk_round

SERVERS = {"one_process": [], "ray_1_replica": ["--ray", "--replicas", "1"],
           "ray_2_replicas": ["--ray", "--replicas", "2"]}  # fmt: skip
TARGETS = {"c64_rps_ratio_min": 0.8, "c1_p50_ratio_max": 2.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(base: Path, model: str, extra: list[str]) -> Iterator[int]:
    """The server up (every replica serving), its REST port; SIGTERM at the end."""
    port = free_port()
    cmd = [RLPLAT, "serve", "--model-base-path", str(base), "--port", str(port),
           "--grpc-port", "0", *extra]  # fmt: skip
    if "--ray" in extra:
        cmd += ["--metrics-port", str(free_port())]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stderr=log, stdout=subprocess.DEVNULL, text=True,
                                start_new_session=True)  # fmt: skip
        try:
            _wait(proc, log, port, model, "--ray" in extra)
            yield port
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=120)


def _wait(proc: subprocess.Popen, log, port: int, model: str, fleet: bool) -> None:
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        log.seek(0)
        up = "replica(s) on" in log.read() if fleet else _answers(port, model)
        if up:
            return
        time.sleep(0.2)
    log.seek(0)
    sys.exit(f"error: the server did not serve {model}: {log.read()[-2000:]}")


def _answers(port: int, model: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(f"http://127.0.0.1:{port}/v1/models/{model}", timeout=1).ok
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-base-path", type=Path, default=Path("models"))
    ap.add_argument("--model", default="lunarlander_pg")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--passes", type=int, default=2)
    args = ap.parse_args()
    wrk = shutil.which("wrk") or sys.exit("error: wrk is not on the PATH (apt install wrk)")
    _, meta = latest_version(args.model_base_path, args.model)
    obs = np.random.default_rng(0).normal(size=(1, *meta["observation_shape"]))
    body = json.dumps({"instances": obs.astype(np.float32).tolist()}).encode()
    load_before = os.getloadavg()
    rounds: dict[tuple[str, int], list[dict]] = {(n, c): [] for n in SERVERS for c in args.levels}
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        for _ in range(args.passes):
            for name, extra in SERVERS.items():
                with server(args.model_base_path, args.model, extra) as port:
                    url = f"http://127.0.0.1:{port}/v1/models/{args.model}:predict"
                    for c in args.levels:
                        wrk_round(wrk, script.name, url, c, 1, body)  # warm-up
                        rounds[name, c].append(wrk_round(wrk, script.name, url, c,
                                                         args.seconds, body))  # fmt: skip
    levels = {n: [summarize_wrk(c, rounds[n, c]) for c in args.levels] for n in SERVERS}
    print(json.dumps(report(args, levels, load_before)))


def report(args, levels: dict, load_before) -> dict:
    def at(name: str, c: int) -> dict:
        return levels[name][args.levels.index(c)]

    ratios = {}
    for name in ("ray_1_replica", "ray_2_replicas"):
        for c in args.levels:
            ratios[f"{name}_rps_c{c}"] = round(
                at(name, c)["requests_per_s"] / at("one_process", c)["requests_per_s"], 3
            )
        ratios[f"{name}_p50_c1"] = round(at(name, 1)["p50_ms"] / at("one_process", 1)["p50_ms"], 3)
    for lv in levels.values():
        for level in lv:
            level["rounds_rps"] = [r["requests_per_s"] for r in level.pop("rounds")]
    rps, p50 = ratios.get("ray_2_replicas_rps_c64", 0), ratios.get("ray_2_replicas_p50_c1", 99)
    met = {
        "c64_rps_ratio_min": rps >= TARGETS["c64_rps_ratio_min"],
        "c1_p50_ratio_max": p50 <= TARGETS["c1_p50_ratio_max"],
    }
    return {
        "benchmark": "serve_scale",
        "model": args.model,
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "seconds_per_level": args.seconds,
        "passes": args.passes,
        "ratios_vs_one_process": ratios,
        "targets": TARGETS,
        "targets_met": met,
        "levels": levels,
    }


if __name__ == "__main__":
    main()
