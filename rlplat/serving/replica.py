"""One replica of `rlplat serve --ray`: a Ray actor that runs a plain `rlplat serve` process
on its node and keeps it running (rlplat/serving/replicas.py starts and watches these).

The serving process is the single-process server (rlplat/serving/server.py) with its ports
shared with the node's other replicas (SO_REUSEPORT), so requests never cross Ray: Ray
places replicas, and this actor restarts its process when it exits or stops answering.
The process dies with the actor (PR_SET_PDEATHSIG), so a killed actor leaves nothing.

    python -m rlplat.serving.replica READY_FILE   (the serving process; its settings come
                                                   in $RLPLAT_REPLICA as JSON, the token in
                                                   $RLPLAT_SERVE_TOKEN: never in argv)
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from rlplat.serving.auth import TOKEN_ENV

log = logging.getLogger("rlplat.serve")
SPEC_ENV = "RLPLAT_REPLICA"
START_TIMEOUT_S = 300.0  # loading and warming every model up
CHECK_TIMEOUT_S = 5.0  # an answer to the supervisor's check; 3 missed in a row: restart
MISSES_BEFORE_RESTART = 3


@dataclass(frozen=True)
class ReplicaSpec:
    """What every replica serves, and where (the token travels apart: see `environment`)."""

    model_base_path: str
    host: str
    port: int
    grpc_port: int | None
    config_path: str | None
    http: str = "lean"
    niceness: int = 0  # the `rlplat serve --ray` process's: replicas serve at its priority


class Replica:
    """Ray actor (rlplat/serving/replicas.py wraps it): one serving process on this node."""

    def __init__(self, index: int, spec: ReplicaSpec, token: str | None) -> None:
        import ray

        self.index, self.spec, self._token = index, spec, token
        self.node = ray.get_runtime_context().get_node_id()
        self.restarts = 0
        self._proc: subprocess.Popen | None = None
        self._admin: int | None = None
        self._misses = 0
        self._tail: collections.deque[str] = collections.deque(maxlen=20)
        self._dir = Path(tempfile.mkdtemp(prefix="rlplat-replica-"))

    def start(self) -> dict:
        """Start the serving process and wait until it serves; raises RuntimeError with its
        last lines if it cannot (a busy port, a model base path missing on this node)."""
        ready = self._dir / "ready.json"
        ready.unlink(missing_ok=True)
        env = environment(self.spec, self._token)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "rlplat.serving.replica", str(ready)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, errors="replace",
        )  # fmt: skip
        threading.Thread(target=self._forward, args=(self._proc,), daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self._kill()
                last = next((ln for ln in reversed(self._tail) if ln.strip()), "no output")
                raise RuntimeError(f"replica {self.index}: {last.strip().removeprefix('error: ')}")
            time.sleep(0.05)
        self._admin = json.loads(ready.read_text())["admin_port"]
        self._misses = 0
        return self.check()

    def check(self) -> dict:
        """Restart the process if it exited or missed MISSES_BEFORE_RESTART checks in a row;
        then where it runs and how often it was restarted."""
        assert self._proc is not None
        code = self._proc.poll()
        if code is None and not self._answers():
            self._misses += 1
            if self._misses >= MISSES_BEFORE_RESTART:
                log.warning("replica %d (pid %d) stopped answering: restarting it",
                            self.index, self._proc.pid)  # fmt: skip
                self._kill()
                code = self._proc.poll()
        if code is not None:
            log.warning("replica %d (pid %d) exited (%s): restarting it",
                        self.index, self._proc.pid, _exit_text(code))  # fmt: skip
            self.restarts += 1
            self.start()
        return {"index": self.index, "node": self.node, "pid": self._proc.pid,
                "restarts": self.restarts}  # fmt: skip

    def metrics(self) -> str:
        """The serving process's Prometheus text ("" when it does not answer)."""
        with contextlib.suppress(OSError):
            return self._get("/metrics").decode()
        return ""

    def roll(self) -> dict:
        """A new serving process in place of this one (a rolling restart: the driver rolls
        one replica at a time, so the node's others serve meanwhile); settings read only at
        start (batching, limits) and new code take effect."""
        self._drain()
        return self.start()

    def stop(self) -> None:
        self._drain()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _drain(self) -> None:
        """SIGINT (the server answers what it holds, then exits 0), SIGKILL after 10 s."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                log.warning("replica %d did not stop within 10 s of SIGINT: killed", self.index)
                self._kill()

    def _answers(self) -> bool:
        try:
            self._get("/metrics")
        except OSError:
            return False
        self._misses = 0
        return True

    def _get(self, path: str) -> bytes:
        request = urllib.request.Request(f"http://127.0.0.1:{self._admin}{path}")
        if self._token is not None:
            request.add_header("Authorization", f"Bearer {self._token}")
        with urllib.request.urlopen(request, timeout=CHECK_TIMEOUT_S) as answer:
            return answer.read()

    def _kill(self) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        self._proc.wait()

    def _forward(self, proc: subprocess.Popen) -> None:
        """The process's log lines to this actor's stderr (Ray shows them on the driver),
        the last ones kept for a start-up error."""
        assert proc.stderr is not None
        for line in proc.stderr:
            self._tail.append(line)
            sys.stderr.write(line)


def environment(spec: ReplicaSpec, token: str | None) -> dict[str, str]:
    """The serving process's environment: this one's (Ray's runtime_env, PYTHONPATH for a
    shipped rlplat: sys.path), the spec, the token, and this process's pid to die with."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env[SPEC_ENV] = json.dumps(asdict(spec))
    env["RLPLAT_REPLICA_PARENT"] = str(os.getpid())
    env.pop(TOKEN_ENV, None)
    if token is not None:
        env[TOKEN_ENV] = token
    return env


def _exit_text(code: int) -> str:
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def _die_with_parent() -> None:
    """SIGTERM this process when the actor that started it dies, however it dies (Linux)."""
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if str(os.getppid()) != os.environ.get("RLPLAT_REPLICA_PARENT"):  # died before prctl
        sys.exit(1)


def main() -> None:
    # A process inherits its starter's blocked signals, and Ray's worker threads block
    # SIGINT: unblocked, or the supervisor's SIGINT (drain and exit) would never arrive.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    _die_with_parent()
    import rlplat  # noqa: F401  (TF_USE_LEGACY_KERAS etc. before TensorFlow)
    from rlplat.errors import UserError
    from rlplat.niceness import take_priority
    from rlplat.serving import server

    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("rlplat.serve").setLevel(logging.INFO)
    spec = ReplicaSpec(**json.loads(os.environ[SPEC_ENV]))
    take_priority(spec.niceness, "this replica")
    try:
        server.serve(
            Path(spec.model_base_path), spec.host, spec.port, spec.grpc_port,
            Path(spec.config_path) if spec.config_path else None,
            os.environ.get(TOKEN_ENV) or None, spec.http,
            replica=server.ReplicaRole(Path(sys.argv[1])),
        )  # fmt: skip
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
