"""Binding the server's ports (no TensorFlow here: `rlplat serve --ray` checks its ports with
it before starting Ray)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from rlplat.errors import UserError


def hostport(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets (as URLs and gRPC want it)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(
    host: str, port: int, reuse_port: bool = False, listen: bool = True, what: str = ""
) -> socket.socket:
    """Bind before loading anything, so a busy port is one line, not a traceback.
    `reuse_port`: share the port with the other replicas on this host (SO_REUSEPORT: the
    kernel spreads new connections over the listening sockets); such a socket only takes
    connections once it listens, so a replica listens after its models are loaded. `what`
    names the port in the error ("gRPC")."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UserError(f"--host {host}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        where = hostport(host, port) + (f" ({what})" if what else "")
        raise UserError(f"cannot listen on {where}: {exc.strerror}") from None
    if listen:
        sock.listen(2048)
    sock.setblocking(False)
    return sock


def check_free(host: str, named: dict[str, int | None]) -> None:
    """Each of the server's ports free on `host` now (bound, then let go): a taken one is
    one line naming it, before TensorFlow or Ray load (seconds) and before gRPC's own
    bind, which logs a raw C++ error line first."""
    for what, port in named.items():
        if port:
            bind(host, port, listen=False, what=what).close()


def _lock_dir() -> Path:
    """This user's port locks (SO_REUSEPORT shares a port only between one user's sockets,
    so another user's fleet cannot join ours)."""
    path = Path(tempfile.gettempdir()) / f"rlplat-{os.getuid()}" / "ports"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def claimed(named: dict[str, int | None]) -> Iterator[None]:
    """Hold "this port belongs to this fleet" on this machine for the block: an exclusive
    lock per port, taken before any replica listens. Two `rlplat serve --ray` started at
    the same moment both find the port free (their replicas bind with SO_REUSEPORT and
    would share it); with the lock exactly one goes on, the other gets one line. The
    kernel drops a lock with its process, so a crashed fleet leaves none behind."""
    held: list[int] = []
    try:
        for what, port in named.items():
            if port:
                held.append(_lock(_lock_dir() / f"port-{port}.lock", port, what))
        yield
    finally:
        for fd in held:
            os.close(fd)  # releases the lock


def _lock(path: Path, port: int, what: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise UserError(
            f"port {port} ({what}): another `rlplat serve --ray` on this machine holds it "
            f"(pid {owner}); stop it or choose other ports"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
