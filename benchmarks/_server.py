"""`rlplat serve` in a subprocess on a free loopback port, for the serving benchmarks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

RLPLAT = str(Path(sys.executable).with_name("rlplat"))


def latest_version(model_base_path: Path, model: str) -> tuple[Path, dict]:
    """The model's newest version directory and its assets.extra/rlplat.json."""
    model_dir = Path(model_base_path) / model
    versions = sorted(int(p.name) for p in model_dir.glob("*") if p.name.isdigit())
    if not versions:
        sys.exit(f"error: no versions under {model_dir} (train and export one first)")
    version_dir = model_dir / str(versions[-1])
    return version_dir, json.loads((version_dir / "assets.extra" / "rlplat.json").read_text())


def free_port() -> int:
    """A loopback port free now (the benchmarks' servers bind it next)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(
    model_base_path: Path, model: str, *args: str, ready_text: str | None = None
) -> Iterator[str]:
    """Yields the base URL once `model` answers its status endpoint (or, with `ready_text`,
    once the server's log says it: `rlplat serve --ray` is up when every replica serves);
    SIGINT to its process group at the end."""
    with running_server_process(model_base_path, model, *args, ready_text=ready_text) as (
        url,
        _,
    ):
        yield url


@contextlib.contextmanager
def running_server_process(
    model_base_path: Path, model: str, *args: str, ready_text: str | None = None
) -> Iterator[tuple[str, subprocess.Popen]]:
    """running_server, also yielding the server's process (for its memory)."""
    port = free_port()
    cmd = [RLPLAT, "serve", "--model-base-path", str(model_base_path), "--port", str(port),
           "--grpc-port", "0", *args]  # fmt: skip
    # The log goes to a file: a pipe nobody reads could fill and stall the server.
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(cmd, stderr=log, text=True, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait(url, model, server, log, ready_text)
            yield url, server
        finally:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=30)


def _wait(url: str, model: str, server: subprocess.Popen, log, ready_text: str | None) -> None:
    deadline = time.time() + (120 if ready_text is None else 300)
    while True:
        if ready_text is None:
            with contextlib.suppress(requests.ConnectionError, requests.Timeout):  # loading
                if requests.get(f"{url}/v1/models/{model}", timeout=1).status_code == 200:
                    return
        else:
            log.seek(0)
            if ready_text in log.read():
                return
        if server.poll() is not None or time.time() > deadline:
            log.seek(0)
            sys.exit(f"error: the server did not serve {model}: {log.read()[-2000:]}")
        time.sleep(0.1)
