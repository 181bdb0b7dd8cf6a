"""`rlplat serve --ray --replicas N`: N single-process servers placed and kept alive by Ray.

Each replica is a Ray actor (rlplat/serving/replica.py) that runs a plain `rlplat serve`
process on its node, on the shared REST and gRPC ports (SO_REUSEPORT: the kernel spreads
new connections over a node's replicas). Requests never pass through Ray, so a replica
serves as fast as one `rlplat serve` and has all its behaviour (hot reload, labels, A/B
traffic, auth, limits); across nodes, a load balancer or DNS spreads clients over the
nodes (docs/how-to/scale-out-serving.md). This process (the driver) places the
replicas one per CPU slot, SPREAD over the nodes, checks them every second, replaces an
actor that died, and serves every replica's metrics, labelled by replica, on
--metrics-port. SIGINT or SIGTERM stop every replica (each drains, then exits) and Ray;
SIGHUP restarts the replicas one at a time (a rolling restart).

Why not Ray Serve, as before: with no model at all, Ray Serve's proxy and handle call cost
more per request than rlplat's whole request path (benchmarks/serve_ray_overhead.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from rlplat.errors import UserError
from rlplat.serving import replica
from rlplat.serving.replica import Replica, ReplicaSpec

log = logging.getLogger("rlplat.serve")
CHECK_EVERY_S = 1.0
START_TIMEOUT_S = replica.START_TIMEOUT_S + 60  # its server's start, and the actor's own


class Fleet:
    """The replica actors: started, checked, replaced when one dies, stopped."""

    def __init__(self, spec: ReplicaSpec, token: str | None, replicas: int) -> None:
        import ray

        self._actor_class = ray.remote(num_cpus=1, max_restarts=0, scheduling_strategy="SPREAD")(
            Replica
        )
        self.spec, self.token, self.size = spec, token, replicas
        self.actors: list[Any] = [None] * replicas
        self.states: list[dict | None] = [None] * replicas
        self.roll_requested = threading.Event()  # SIGHUP: a rolling restart
        self._lock = threading.Lock()

    def start(self, stop: threading.Event) -> None:
        """Every replica up, or one line on the first that could not start (then none)."""
        import ray

        for i in range(self.size):
            self.actors[i] = self._actor_class.remote(i, self.spec, self.token)
        refs = [a.start.remote() for a in self.actors]
        deadline = time.monotonic() + START_TIMEOUT_S
        while not stop.is_set():
            done, _ = ray.wait(refs, num_returns=len(refs), timeout=0.5)
            try:
                for ref in done:
                    ray.get(ref)  # the first error, as soon as it is known
            except ray.exceptions.RayError as exc:
                raise UserError(_cause(exc)) from None
            if len(done) == len(refs):
                self.states = ray.get(refs)
                return
            if time.monotonic() > deadline:
                raise UserError(f"the replicas did not serve within {START_TIMEOUT_S:.0f} s")

    def supervise(self, stop: threading.Event) -> None:
        """Until `stop`: check each replica every second (it restarts its own process when
        that exits or hangs); an actor that died (killed, or its node went away) is replaced
        by a new one. A slow check or start never holds the others up."""
        import ray

        pending: dict[int, Any] = {}
        while not stop.wait(CHECK_EVERY_S):
            # A roll waits for every replica to serve: rolling one while another is still
            # starting (replaced, or restarting) would leave the port without a listener.
            if self.roll_requested.is_set() and all(self.states):
                self.roll_requested.clear()
                self._roll(stop)
            for i, actor in enumerate(self.actors):
                pending.setdefault(i, actor.check.remote())
            done, _ = ray.wait(list(pending.values()), num_returns=len(pending), timeout=0.5)
            for i, ref in list(pending.items()):
                if ref not in done:
                    continue
                del pending[i]
                try:
                    self.states[i] = ray.get(ref)
                except ray.exceptions.RayActorError:
                    log.warning("replica %d: its actor died: starting a new one", i)
                    pending[i] = self._replace(i)
                except ray.exceptions.RayTaskError as exc:  # its process could not restart
                    log.warning("replica %d: %s (retrying)", i, _cause(exc))

    def _roll(self, stop: threading.Event) -> None:
        """Restart every replica's serving process, one at a time (SIGHUP)."""
        import ray

        for i, actor in enumerate(self.actors):
            if stop.is_set():
                return
            log.info("replica %d: rolling restart", i)
            others = [a.check.remote() for j, a in enumerate(self.actors) if j != i]
            try:
                # The others serve first (a check returns once a restart it began is done).
                ray.get(others, timeout=START_TIMEOUT_S)
                self.states[i] = ray.get(actor.roll.remote(), timeout=START_TIMEOUT_S)
            except (ray.exceptions.RayError, TimeoutError) as exc:
                log.warning("replica %d: %s (the checks take it from here)", i, _cause(exc))
        log.info("rolling restart done: %d replica(s)", len(self.actors))

    def _replace(self, i: int) -> Any:
        """A new actor for replica i; the ref of its start (checked as a check's is)."""
        self.states[i] = None
        with self._lock:
            self.actors[i] = self._actor_class.remote(i, self.spec, self.token)
        return self.actors[i].start.remote()

    def metrics(self) -> list[tuple[dict, str]]:
        """Each replica's state and Prometheus text ("" when it did not answer)."""
        import ray

        with self._lock:
            actors = list(self.actors)
        refs = [a.metrics.remote() for a in actors]
        out = []
        for i, ref in enumerate(refs):
            try:
                text = ray.get(ref, timeout=5)
            except ray.exceptions.RayError:
                text = ""
            out.append((self.states[i] or {"index": i, "node": "", "restarts": 0}, text))
        return out

    def stop(self) -> None:
        """Each replica drains and exits (in parallel), then its actor goes."""
        import ray

        live = [a for a in self.actors if a is not None]
        with contextlib.suppress(ray.exceptions.RayError):
            ray.get([a.stop.remote() for a in live], timeout=30)
        for a in live:
            with contextlib.suppress(Exception):
                ray.kill(a)


def _cause(exc: Exception) -> str:
    """The one line a replica raised, without Ray's traceback around it."""
    cause = getattr(exc, "cause", None) or exc
    return str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__


def serve(
    model_base_path: Path,
    host: str,
    port: int,
    grpc_port: int | None,
    config_path: Path | None,
    token: str | None,
    replicas: int,
    address: str | None,
    metrics_port: int,
    http: str = "lean",
) -> None:
    """Run until SIGINT or SIGTERM; the replicas, the metrics endpoint and an embedded Ray
    end with it."""
    from rlplat.serving import config as serving_config
    from rlplat.serving import ports

    serving_config.check_inputs(model_base_path, config_path)  # here, not in the replicas
    base = Path(model_base_path).resolve()
    config = str(Path(config_path).resolve()) if config_path else None
    spec = ReplicaSpec(str(base), host, port, grpc_port, config, http, os.nice(0))
    named = {"REST": port, "gRPC": grpc_port, "metrics": metrics_port}
    with ports.claimed(named):  # this host's ports are this fleet's (see ports.claimed)
        # Held by anything (a server, a fleet started before): one line now, before Ray
        # starts. (Other nodes' ports are their replicas' to find.)
        ports.check_free(host, named)
        _serve_fleet(spec, token, replicas, address, metrics_port)


def _serve_fleet(
    spec: ReplicaSpec, token: str | None, replicas: int, address: str | None, metrics_port: int
) -> None:
    from rlplat import cluster
    from rlplat.serving.fleet_metrics import MetricsEndpoint

    host, port, grpc_port = spec.host, spec.port, spec.grpc_port
    stop = threading.Event()
    _stop_on_signals(stop)
    # Ray starts its workers at nice 15 (fine for batch work); a server must not yield to
    # everything else on the node. A local Ray starts them un-niced; on a joined cluster
    # the replica process raises its own priority where it may (rlplat/serving/replica.py).
    os.environ.setdefault("RAY_worker_niceness", "0")
    cluster.start(address, num_actors=replicas, what="--replicas")
    _stop_on_signals(stop)  # again: ray.init may have taken SIGTERM
    fleet, endpoint = Fleet(spec, token, replicas), None
    signal.signal(signal.SIGHUP, lambda *_: fleet.roll_requested.set())
    try:
        fleet.start(stop)
        if stop.is_set():  # a signal while the replicas started
            return
        endpoint = MetricsEndpoint(fleet, host, metrics_port, token)
        nodes = len({s["node"] for s in fleet.states if s})
        log.info("%d replica(s) on %d node(s): REST on http://%s:%d/v1/models/NAME, gRPC on %s, "
                 "metrics of every replica on http://%s:%d/metrics", replicas, nodes, host, port,
                 f"{host}:{grpc_port}" if grpc_port else "off", host, endpoint.port)  # fmt: skip
        fleet.supervise(stop)
    finally:
        fleet.stop()
        if endpoint is not None:
            endpoint.close()
        cluster.stop()


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGINT and SIGTERM set `stop` (the supervisor loop then stops everything)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
