"""rlplat serve --ray: replicas of the single server placed and kept alive by Ray.

(The REST and gRPC conformance tests run against `--ray` too: test_rest.py, test_grpc.py.)
Here: the A/B split routes a key alike on every replica, a replica's serving process or its
actor killed under load fails no more requests than were on it and is replaced, SIGTERM
stops everything quietly, a busy port is refused. (Two nodes: tests/test_cluster.py.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
import requests
from conftest import RLPLAT, free_port, proc_stat, processes_of, user_env
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.helpers import OBS, RayServer, reference, series

pytestmark = pytest.mark.slow
PREDICT = "/v1/models/cartpole:predict"
TOKEN = "fleet-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def fleet(models, tmp_path_factory) -> RayServer:
    cfg = tmp_path_factory.mktemp("fleet") / "serving.yaml"
    cfg.write_text("models:\n  - name: cartpole\n    version_policy: {specific: [1, 2]}\n"
                   "    traffic: {1: 50, 2: 50}\n")  # fmt: skip
    s = RayServer(models, "--config", str(cfg), env={**user_env(), "RLPLAT_SERVE_TOKEN": TOKEN})
    s.config = cfg
    yield s
    s.stop()


def test_a_key_lands_on_the_same_arm_on_every_replica_and_api(fleet, models):
    import tensorflow as tf

    wants = {v: reference(models / "cartpole" / str(v), OBS) for v in (1, 2)}
    keyed: dict[str, int] = {}
    for i in range(60):  # a new connection each: the kernel spreads them over the replicas
        r = requests.post(fleet.base + PREDICT, data=json.dumps({"instances": OBS.tolist()}),
                          headers={"X-Rlplat-Route": f"ep-{i % 20}", **AUTH},
                          timeout=30)  # fmt: skip
        assert r.status_code == 200, r.text
        version = int(r.headers["X-Rlplat-Version"])
        assert keyed.setdefault(f"ep-{i % 20}", version) == version
        np.testing.assert_allclose([p["q_values"] for p in r.json()["predictions"]],
                                   wants[version]["q_values"], rtol=1e-5)  # fmt: skip
    assert set(keyed.values()) == {1, 2}
    for pid in fleet.replica_pids():  # not at Ray's worker niceness (15)
        nice = int(proc_stat(pid)[16])
        assert nice == os.nice(0)
    text = fleet.metrics()  # both replicas answered some of them
    for replica in ("0", "1"):
        assert series(text, "rlplat_serving_requests_total", replica=replica, code="200") > 0
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{fleet.grpc_port}")
    )
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "cartpole"
    req.inputs["observations"].CopyFrom(tf.make_tensor_proto(OBS))
    for key, version in list(keyed.items())[:10]:
        resp = stub.Predict(
            req,
            timeout=30,
            metadata=[("x-rlplat-route", key), ("authorization", AUTH["Authorization"])],
        )
        assert resp.model_spec.version.value == version


def test_an_edited_config_reaches_every_replica(fleet):
    """A rollback by edit (traffic all to version 1) is served by both replicas within a
    poll or so, then the split comes back."""
    body = json.dumps({"instances": OBS.tolist()})

    def versions() -> set[int]:
        seen = set()
        for i in range(24):  # a new connection each: both replicas
            r = requests.post(fleet.base + PREDICT, data=body, timeout=30,
                              headers={"X-Rlplat-Route": f"ep-{i}", **AUTH})  # fmt: skip
            assert r.status_code == 200
            seen.add(int(r.headers["X-Rlplat-Version"]))
        return seen

    original = fleet.config.read_text()
    fleet.config.write_text(original.replace("traffic: {1: 50, 2: 50}", "traffic: {1: 100}"))
    try:
        wait_for(lambda: versions() == {1}, timeout=60)
        for _ in range(3):  # and it stays so, whichever replica answers
            assert versions() == {1}
    finally:
        fleet.config.write_text(original)
    wait_for(lambda: versions() == {1, 2}, timeout=60)


def test_every_replica_and_the_metrics_endpoint_require_the_token(fleet):
    for _ in range(10):  # a new connection each: both replicas
        r = requests.post(fleet.base + PREDICT, data=json.dumps({"instances": OBS.tolist()}),
                          timeout=30)  # fmt: skip
        assert r.status_code == 401
    url = f"http://127.0.0.1:{fleet.metrics_port}/metrics"
    assert requests.get(url, timeout=30).status_code == 401
    assert requests.get(url, timeout=30, headers=AUTH).status_code == 200
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{fleet.grpc_port}")
    )
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(predict_pb2.PredictRequest(), timeout=30)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_metrics_endpoint_has_the_serving_ports_limits(fleet):
    """Idle connections cannot grow the supervisor (a thread and a descriptor each, with no
    cap, before): at most 64 stay open, the oldest idle closed for a new one; a header
    over the limit is a 431, before the token is asked for; two Authorization values
    are refused."""
    import socket

    from serving.helpers import raw_http

    def fds() -> int:
        return len(os.listdir(f"/proc/{fleet.proc.pid}/fd"))

    def threads() -> int:
        return len(os.listdir(f"/proc/{fleet.proc.pid}/task"))

    before_fds, before_threads = fds(), threads()
    idle = [socket.create_connection(("127.0.0.1", fleet.metrics_port)) for _ in range(300)]
    try:
        time.sleep(1.0)
        assert fds() < before_fds + 64 + 16, (before_fds, fds())
        assert threads() < before_threads + 8, (before_threads, threads())
        assert requests.get(f"http://127.0.0.1:{fleet.metrics_port}/metrics", headers=AUTH,
                            timeout=30).status_code == 200  # fmt: skip
    finally:
        for sock in idle:
            sock.close()
    head = b"GET /metrics HTTP/1.1\r\nX-Big: %s\r\n\r\n" % (b"y" * 70_000)
    assert raw_http(fleet.metrics_port, head).startswith(b"HTTP/1.1 431")
    auth = b"Authorization: Bearer %s\r\n" % TOKEN.encode()
    two = b"GET /metrics HTTP/1.1\r\nConnection: close\r\n" + auth + auth
    assert raw_http(fleet.metrics_port, two + b"\r\n").startswith(b"HTTP/1.1 401")


class Load(threading.Thread):
    """`clients` keep-alive connections posting back to back; a failed request is counted
    and its client reconnects."""

    def __init__(self, base: str, clients: int = 8) -> None:
        super().__init__(daemon=True)
        self.base, self.clients = base, clients
        self.stop = threading.Event()
        self.ok, self.failed, self.failures = 0, 0, []
        self._lock = threading.Lock()

    def run(self) -> None:
        workers = [threading.Thread(target=self._client, daemon=True) for _ in range(self.clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def _client(self) -> None:
        session, body = requests.Session(), json.dumps({"instances": OBS.tolist()})
        session.headers.update(AUTH)
        while not self.stop.is_set():
            try:
                r = session.post(self.base + PREDICT, data=body, timeout=30)
                good = r.status_code == 200
            except requests.RequestException as exc:
                good, r = False, exc
            with self._lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.failures.append(repr(r)[:200])
            if not good:
                session = requests.Session()  # a new connection: to a live replica
                session.headers.update(AUTH)

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.ok, self.failed


def wait_for(what, timeout: float = 240.0, step: float = 0.2):
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(step)
    return value


def killed_under_load(fleet: RayServer, victim: int, replaced) -> Load:
    """SIGKILL `victim` while 8 clients post; wait until `replaced()`; a little more load."""
    load = Load(fleet.base)
    load.start()
    try:
        wait_for(lambda: load.counts()[0] > 200)
        os.kill(victim, signal.SIGKILL)
        wait_for(replaced)
        after = load.counts()[0]
        wait_for(lambda: load.counts()[0] > after + 200)
    finally:
        load.stop.set()
        load.join(timeout=60)
    return load


def test_a_killed_serving_process_is_restarted_and_fails_only_what_was_on_it(fleet):
    before = fleet.replica_pids()
    assert len(before) == 2
    load = killed_under_load(fleet, before[0], lambda: len(set(fleet.replica_pids())) == 2
                             and set(fleet.replica_pids()) != set(before))  # fmt: skip
    # What was on the killed process's connections fails (at most one request each); a
    # client that reconnects at once can still land in the dying listener's queue (the
    # kernel closes a killed process's files after its memory), so allow a second failure.
    assert load.failed <= 2 * load.clients, load.failures
    wait_for(lambda: series(fleet.metrics(), "rlplat_serving_replica_restarts_total") == 1)
    text = fleet.metrics()
    restarts = [series(text, "rlplat_serving_replica_restarts_total", replica=r)
                for r in ("0", "1")]  # fmt: skip
    assert sorted(restarts) == [0, 1], text


def test_a_killed_replica_actor_is_replaced_and_its_process_goes_with_it(fleet):
    before = set(fleet.replica_pids())
    victim = next(iter(before))
    actor = int(proc_stat(victim)[1])
    load = killed_under_load(fleet, actor, lambda: len(set(fleet.replica_pids()) - before) == 1
                             and len(fleet.replica_pids()) == 2)  # fmt: skip
    assert victim not in fleet.replica_pids()  # it died with its actor (PR_SET_PDEATHSIG)
    assert load.failed <= load.clients, load.failures
    assert "its actor died" in fleet.log.read_text()


def test_sighup_rolls_the_replicas_one_at_a_time_under_load(fleet):
    before = set(fleet.replica_pids())
    load = Load(fleet.base)
    load.start()
    try:
        wait_for(lambda: load.counts()[0] > 200)
        fleet.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "rolling restart done" in fleet.log.read_text())
        after = load.counts()[0]
        wait_for(lambda: load.counts()[0] > after + 200)
    finally:
        load.stop.set()
        load.join(timeout=60)
    now = set(fleet.replica_pids())
    assert len(now) == 2 and not now & before  # both replaced
    # A draining server answers what it holds and closes its idle keep-alive connections:
    # a client's next request on one fails, at most once per connection.
    assert load.failed <= load.clients, load.failures


def test_sigterm_stops_every_process_quietly(fleet):
    time.sleep(1.0)  # (let the log settle: what follows SIGTERM is what is judged)
    before = len(fleet.log.read_text())
    fleet.proc.send_signal(signal.SIGTERM)  # the driver only, as `kill PID` does
    assert fleet.proc.wait(timeout=120) == 0, fleet.log.read_text()[-3000:]
    tail = fleet.log.read_text()[before:]
    # Each replica drained on its supervisor's SIGINT (a replica that ignored it would be
    # killed after 10 s, and say so).
    for noise in ("Traceback", "SIGTERM received", "Failed to push", "ERROR", "did not stop"):
        assert noise not in tail, tail[-3000:]
    assert not fleet.replica_pids()
    assert not processes_of(f"_{fleet.proc.pid}/logs")  # the driver's embedded Ray


@pytest.mark.parametrize("shared", [False, True], ids=["a server", "another fleet"])
def test_a_busy_port_is_one_line_and_exit_2_before_ray_starts(models, tmp_path, shared):
    import socket

    with socket.socket() as taken:  # another fleet's replicas listen with SO_REUSEPORT
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(shared))
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = subprocess.run(
            [RLPLAT, "serve", "--ray", "--replicas", "1", "--model-base-path", str(models),
             "--port", str(port), "--grpc-port", "0", "--metrics-port", str(free_port())],
            capture_output=True, text=True, env=user_env(), timeout=300, cwd=tmp_path,
        )  # fmt: skip
    assert out.returncode == 2, out.stderr[-3000:]
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and str(port) in last, out.stderr[-3000:]
    assert "Ray" not in out.stderr  # refused before Ray started


def test_a_replica_started_niced_serves_at_the_drivers_priority_or_says_why():
    """Nodes started without RAY_worker_niceness=0 run replicas at nice 15: the replica raises
    itself back where the OS lets it (root; tests/test_cluster.py starts its nodes at 0), and
    otherwise says so in one warning line."""
    code = (
        "import logging, os, sys; logging.basicConfig(level=logging.WARNING)\n"
        "from rlplat.niceness import take_priority\n"
        "os.nice(15); take_priority(0, 'this replica'); print('NICE', os.nice(0))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True, text=True, env=user_env(), timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    nice = int(out.stdout.split("NICE")[1])
    if nice == 0:
        assert "RAY_worker_niceness" not in out.stderr
    else:  # no privilege to raise one's priority
        assert nice > 0 and "RAY_worker_niceness=0" in out.stderr, out.stderr


def test_a_fleets_ports_are_claimed_before_any_replica_listens(models):
    """Two fleets started at once would both find the port free and share it through
    SO_REUSEPORT: a lock per port, taken first, lets exactly one go on. The other is one
    line and exit 2 before Ray starts; a holder killed with SIGKILL leaves no lock."""
    from rlplat.errors import UserError
    from rlplat.serving import ports

    port, grpc_port = free_port(), free_port()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom rlplat.serving import ports\n"
         f"with ports.claimed({{'REST': {port}}}):\n"
         "    print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True, env=user_env(),
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        out = subprocess.run(
            [RLPLAT, "serve", "--ray", "--replicas", "1", "--model-base-path", str(models),
             "--port", str(port), "--grpc-port", str(grpc_port), "--metrics-port", "0"],
            capture_output=True, text=True, env=user_env(), timeout=120,
        )  # fmt: skip
        assert out.returncode == 2, out.stderr[-2000:]
        assert out.stderr.strip() == (
            f"error: port {port} (REST): another `rlplat serve --ray` on this machine holds "
            f"it (pid {holder.pid}); stop it or choose other ports"
        )
        with pytest.raises(UserError, match=f"pid {holder.pid}"), ports.claimed({"REST": port}):
            pass
    finally:
        holder.kill()
        holder.wait()
    with ports.claimed({"REST": port, "gRPC": grpc_port}):  # the kernel let go of it
        pass
