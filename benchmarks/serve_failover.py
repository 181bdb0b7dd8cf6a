"""What `rlplat serve --ray --replicas 2` loses under load when a replica goes: requests
failed while 8 keep-alive clients post back to back (batch-1 REST :predict), through
three events in turn: a rolling restart (SIGHUP), a replica's actor killed (SIGKILL: its
server drains on the way out), a replica's server killed (SIGKILL: what was on its
connections fails); one JSON line.

    .venv/bin/python benchmarks/serve_failover.py --model-base-path models --model lunarlander_pg

A client whose request fails counts it and reconnects (to a live replica). Each event
waits until both replicas serve again, then 2 s more of load.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import requests
from _server import RLPLAT, free_port, latest_version

EVENTS = ("rolling_restart", "actor_killed", "server_killed")


class Clients:
    def __init__(self, url: str, body: str, n: int = 8) -> None:
        self.url, self.body, self.n = url, body, n
        self.ok, self.failed, self.errors = 0, 0, {}
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]

    def _run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            try:
                good = session.post(self.url, data=self.body, timeout=30).status_code == 200
                why = "status"
            except requests.RequestException as exc:
                good, why = False, type(exc).__name__
            with self._lock:
                self.ok += good
                self.failed += not good
                if not good:
                    self.errors[why] = self.errors.get(why, 0) + 1
            if not good:
                session = requests.Session()

    def snapshot(self) -> tuple[int, int, dict]:
        with self._lock:
            return self.ok, self.failed, dict(self.errors)


def replica_pids(port: int) -> list[int]:
    """The serving processes of the fleet on `port` (their spec is in their environment)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            text = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if b"rlplat.serving.replica" in text and f'"port": {port},'.encode() in text:
            found.append(int(proc.name))
    return found


def wait(cond, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit("error: timed out waiting for the fleet")
        time.sleep(0.1)


def both_up(metrics_port: int) -> bool:
    """Both replicas answered the fleet's metrics scrape (so both serve)."""
    try:
        text = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30).text
    except requests.RequestException:
        return False
    up = [ln for ln in text.splitlines() if ln.startswith("rlplat_serving_replica_up{")]
    return len(up) == 2 and all(ln.endswith(" 1.0") for ln in up)


def event(name: str, driver: subprocess.Popen, log: Path, port: int, metrics_port: int) -> None:
    """Cause `name` and return once two replicas, not the ones before, serve again."""
    before = set(replica_pids(port))
    if name == "rolling_restart":
        rolled = log.read_text().count("rolling restart done")
        driver.send_signal(signal.SIGHUP)
        wait(lambda: log.read_text().count("rolling restart done") > rolled)
        return
    victim = sorted(before)[0]
    stat = Path(f"/proc/{victim}/stat").read_text().rsplit(")", 1)[1].split()
    os.kill(int(stat[1]) if name == "actor_killed" else victim, signal.SIGKILL)
    wait(lambda: len(set(replica_pids(port))) == 2 and victim not in replica_pids(port))
    wait(lambda: both_up(metrics_port))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-base-path", type=Path, default=Path("models"))
    ap.add_argument("--model", default="lunarlander_pg")
    args = ap.parse_args()
    _, meta = latest_version(args.model_base_path, args.model)
    body = json.dumps({"instances": [[0.0] * meta["observation_shape"][0]]})
    port, metrics_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        driver = subprocess.Popen(
            [RLPLAT, "serve", "--ray", "--replicas", "2", "--model-base-path",
             str(args.model_base_path), "--port", str(port), "--grpc-port", "0",
             "--metrics-port", str(metrics_port)],
            stderr=log.open("w"), stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            wait(lambda: "replica(s) on" in log.read_text())
            results = run_events(driver, log, (port, metrics_port), args.model, body)
        finally:
            driver.send_signal(signal.SIGTERM)
            driver.wait(timeout=120)
    print(json.dumps({"benchmark": "serve_failover", "model": args.model, "clients": 8,
                      "cpus": os.cpu_count(), "loadavg": [round(x, 2) for x in os.getloadavg()],
                      "events": results}))  # fmt: skip


def run_events(driver, log: Path, ports: tuple[int, int], model: str, body: str) -> dict:
    clients = Clients(f"http://127.0.0.1:{ports[0]}/v1/models/{model}:predict", body)
    for t in clients.threads:
        t.start()
    results = {}
    try:
        time.sleep(2)
        for name in EVENTS:
            ok0, failed0, _ = clients.snapshot()
            event(name, driver, log, *ports)
            time.sleep(2)
            ok, failed, errors = clients.snapshot()
            results[name] = {"ok": ok - ok0, "failed": failed - failed0, "errors_so_far": errors}
    finally:
        clients.stop.set()
        for t in clients.threads:
            t.join(timeout=60)
    return results


if __name__ == "__main__":
    main()
