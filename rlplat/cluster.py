"""Starting and stopping Ray: an embedded local instance, or a cluster given its address.

Quiet and light by default: no dashboard, Ray's own logging at WARNING, usage stats off.
Collector processes get the same bootstrap environment as this one (TF_USE_LEGACY_KERAS,
SDL_VIDEODRIVER, ...) and no GPU.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from rlplat import _bootstrap
from rlplat.errors import UserError

COLLECTOR_ENV = {**_bootstrap.ENV_VARS, "CUDA_VISIBLE_DEVICES": ""}


def start(address: str | None, num_actors: int, dashboard: bool = False) -> dict[str, Any]:
    """`ray.init` for this run; returns what it connected to (for run.json/logs).

    address None: a local Ray inside this command, sized so every collector gets a CPU
    slot even when there are more collectors than cores. "auto" or "HOST:PORT": join a
    running cluster (`ray start --head`); "ray://HOST:10001": Ray Client. On a cluster
    the rlplat packages travel with the job (runtime_env py_modules).
    """
    import ray

    if ray.is_initialized():  # a caller (tests, notebooks) already chose the Ray to use
        return {"address": "existing", "local": False, "session_dir": session_dir()}
    # A local Ray turns token authentication on and says so at WARNING on every start:
    # secure, and not news to a user who did not ask for a cluster.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )
    kwargs: dict[str, Any] = dict(
        include_dashboard=dashboard,
        logging_level=logging.WARNING,
        log_to_driver=True,
        namespace="rlplat",
    )
    local = address is None
    if local:
        kwargs["num_cpus"] = max(os.cpu_count() or 1, num_actors + 1)
        kwargs["num_gpus"] = 0  # the learner is this process; collectors never take a GPU
        kwargs["runtime_env"] = {"env_vars": dict(_bootstrap.ENV_VARS)}
    else:
        import agents
        import envs
        import rlplat

        _check_reachable(address)
        kwargs["address"] = address
        kwargs["runtime_env"] = {
            "env_vars": dict(_bootstrap.ENV_VARS),
            "py_modules": [agents, envs, rlplat],
        }
    try:
        context = ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        if local:
            raise
        raise UserError(f"--address {address}: cannot join the Ray cluster ({exc})") from None
    return {
        "address": address or "local",
        "local": local,
        "dashboard": context.dashboard_url,
        "session_dir": session_dir(),
    }


def session_dir() -> str | None:
    """This Ray session's directory (its processes carry it on their command lines)."""
    try:
        from ray._private import worker

        return worker._global_node.get_session_dir_path()
    except Exception:  # Ray Client, or a private API that moved
        return None


def _check_reachable(address: str) -> None:
    """Fail in a second with a clear line, not after minutes of Ray's connection retries."""
    if address == "auto":
        return  # Ray finds the local head itself and says so at once when there is none
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        raise UserError(
            f"--address {address}: nothing answers there ({exc.strerror or exc}); start a "
            "cluster with `ray start --head` or leave --address out for a local Ray"
        ) from None


def stop() -> None:
    """Shut Ray down; for an embedded instance this also ends its processes."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
