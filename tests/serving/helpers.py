"""What the serving tests share: a tiny exported model, a server in a subprocess, a load
generator, reference answers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import requests
from conftest import RLPLAT, free_port, processes_of, tiny_config, user_env

from rlplat import agents, config, envs
from rlplat.export import export_saved_model
from rlplat.run_export import export_metadata

PPO = {"type": "ppo", "network": {"hidden": [16]}}


def export_tiny(base: Path, name: str, seed: int, agent: dict | None = None) -> Path:
    raw = tiny_config(name=name, seed=seed)
    if agent is not None:
        raw["agent"] = agent
        raw.pop("replay")
    cfg = config.parse(raw)
    spaces = envs.spaces(cfg.env)
    ag = agents.build(cfg.agent, spaces, seed=seed)
    meta = export_metadata(cfg, spaces, base, {"env_steps": 0})
    return export_saved_model(ag.serving_module(), base, name, meta)


def reference(version_dir: Path, obs: np.ndarray, signature: str = "serving_default") -> dict:
    """What the SavedModel computes in-process (the server must answer the same)."""
    import tensorflow as tf

    out = tf.saved_model.load(str(version_dir)).signatures[signature](observations=obs)
    return {k: v.numpy() for k, v in out.items()}


class Server:
    """`rlplat serve` in a subprocess on free ports."""

    START_TIMEOUT = 120

    def __init__(self, base: Path, *args: str, env: dict | None = None) -> None:
        self.env = env
        self.port, self.grpc_port = free_port(), free_port()
        self.log = base.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [RLPLAT, "serve", "--model-base-path", str(base), "--port", str(self.port),
             "--grpc-port", str(self.grpc_port), *self.extra_args(), *args],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"), env=env or user_env(),
            start_new_session=True,
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + self.START_TIMEOUT
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            if self.ready():
                return
            time.sleep(0.2)  # (a busy machine: slow start)
        raise AssertionError("server did not start: " + self.log.read_text()[-2000:])

    def extra_args(self) -> list[str]:
        return []

    def ready(self) -> bool:
        try:
            requests.get(self.base + "/v1/models/x", timeout=2)
            return True
        except (requests.ConnectionError, requests.Timeout):
            return False

    def metrics(self) -> str:
        """The server's Prometheus text (of every replica, for RayServer)."""
        return self.get("/monitoring/prometheus/metrics").text

    def get(self, path: str, **kw) -> requests.Response:
        return requests.get(self.base + path, timeout=10, **kw)

    def post(self, path: str, body, **kw) -> requests.Response:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return requests.post(self.base + path, data=data, timeout=10, **kw)

    # Generous: a poll sees a new version in well under a second on an idle machine, but
    # tests must pass on a busy one too.
    def wait_status(self, path: str, want, timeout: float = 60.0) -> tuple[dict, float]:
        t0 = time.perf_counter()
        while True:
            r = self.get(path)
            if r.status_code == 200 and want(r.json()):
                return r.json(), time.perf_counter() - t0
            assert time.perf_counter() - t0 < timeout, r.text
            time.sleep(0.05)

    def wait_log(self, words: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while words not in self.log.read_text():
            assert time.monotonic() < deadline, self.log.read_text()[-2000:]
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


class RayServer(Server):
    """`rlplat serve --ray --replicas 2`: ready once the driver says every replica serves."""

    START_TIMEOUT = 300

    def extra_args(self) -> list[str]:
        self.metrics_port = free_port()
        return ["--ray", "--replicas", "2", "--metrics-port", str(self.metrics_port)]

    def ready(self) -> bool:
        return "replica(s) on" in self.log.read_text()

    def metrics(self) -> str:
        token = (self.env or {}).get("RLPLAT_SERVE_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        return requests.get(url, timeout=30, headers=headers).text

    def replica_pids(self) -> list[int]:
        """The serving processes (children of the replica actors)."""
        return processes_of("rlplat.serving.replica", f'"port": {self.port}', environ=True)


def series(metrics: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels` (0 if none)."""
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def states(status: dict) -> dict[str, str]:
    return {s["version"]: s["state"] for s in status["model_version_status"]}


OBS = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)


class Hammer(threading.Thread):
    """Clients predicting without pause; every answer must be a 200."""

    def __init__(self, server: Server, path: str = "/v1/models/cartpole:predict") -> None:
        super().__init__(daemon=True)
        self.server, self.path = server, path
        self.ok, self.failures = 0, []
        self.stopping = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        body = json.dumps({"instances": OBS.tolist()})
        while not self.stopping.is_set():
            try:
                r = session.post(self.server.base + self.path, data=body, timeout=10)
                if r.status_code == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))

    def wait_ok(self, n: int, timeout: float = 120.0) -> None:
        """Until n answers came back: how long that takes depends on the machine's load."""
        deadline = time.monotonic() + timeout
        while self.ok < n and not self.failures and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=20)


def q_values(server: Server, path: str = "/v1/models/cartpole:predict") -> np.ndarray:
    r = server.post(path, {"inputs": OBS.tolist()})
    assert r.status_code == 200, r.text
    return np.array(r.json()["outputs"]["q_values"])


def serves(server: Server, want: dict, path: str = "/v1/models/cartpole:predict") -> bool:
    return np.allclose(q_values(server, path), want["q_values"], rtol=1e-5)


def raw_http(port: int, data: bytes, read_until_close: bool = True, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if not read_until_close:
            return s.recv(65536)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)
