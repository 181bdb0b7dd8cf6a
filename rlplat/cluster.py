"""Starting and stopping Ray: an embedded local instance, or a cluster given its address.

Quiet and light by default: no dashboard, Ray's own logging at WARNING, usage stats off.
Collector processes get the same bootstrap environment as this one (TF_USE_LEGACY_KERAS,
SDL_VIDEODRIVER, ...) and no GPU.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from rlplat import _bootstrap, envs
from rlplat.errors import UserError

if TYPE_CHECKING:
    from rlplat.config import ExperimentConfig

COLLECTOR_ENV = {**_bootstrap.ENV_VARS, "CUDA_VISIBLE_DEVICES": ""}
log = logging.getLogger(__name__)


def start(
    address: str | None, num_actors: int, dashboard: bool = False, what: str = "collect.num_actors"
) -> dict[str, Any]:
    """`ray.init` for this run; returns what it connected to (for run.json/logs).

    address None: a local Ray inside this command, sized so every collector gets a CPU
    slot even when there are more collectors than cores. "auto" or "HOST:PORT": join a
    running cluster (`ray start --head`), in the cluster's authentication mode;
    "ray://HOST:10001": Ray Client. On a cluster the rlplat package travels with the job
    (runtime_env py_modules), and so, everywhere, do the modules of `module:Class` envs
    that are not installed packages. `num_actors` Ray actors of 1 CPU each (`what` says
    which setting asks for them) must fit in the cluster, or this says what is missing.
    """
    import ray

    if ray.is_initialized():  # a caller (tests, notebooks) already chose the Ray to use
        require_cpus(num_actors, what, "this process's Ray")
        return {"address": "existing", "local": False, "session_dir": session_dir()}
    kwargs, where = _init_kwargs(address, num_actors, dashboard)
    local = address is None
    try:
        context = ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        if local:
            raise
        raise UserError(f"--address {address}: cannot join the Ray cluster ({exc})") from None
    try:
        require_cpus(num_actors, what, where)
    except UserError:
        ray.shutdown()
        raise
    return {
        "address": address or "local",
        "local": local,
        "auth": os.environ.get("RAY_AUTH_MODE"),
        "dashboard": context.dashboard_url,
        "session_dir": session_dir(),
    }


def _init_kwargs(
    address: str | None, num_actors: int, dashboard: bool
) -> tuple[dict[str, Any], str]:
    """ray.init's arguments, and the cluster in words; joining sets the auth mode."""
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
    runtime_env: dict[str, Any] = {"env_vars": dict(_bootstrap.ENV_VARS)}
    shipped: list[Any] = list(envs.user_modules())
    where = f"the Ray cluster at {address}"
    if address is None:
        where = "the local Ray"
        kwargs["num_cpus"] = max(os.cpu_count() or 1, num_actors + 1)
        kwargs["num_gpus"] = 0  # the learner is this process; collectors never take a GPU
    else:
        shipped = [str(_package_tree()), *shipped]
        if not address.startswith("ray://"):  # Ray Client has its own handshake
            gcs = _gcs_address(address)
            _join_auth_mode(address, gcs)
            where = f"the Ray cluster at {gcs}"
        kwargs["address"] = address
    if shipped:
        runtime_env["py_modules"] = shipped
    kwargs["runtime_env"] = runtime_env
    return kwargs, where


def _package_tree() -> Path:
    """The rlplat package laid out as a wheel installs it (agents/ and envs/ inside rlplat/),
    for a cluster job's py_modules: installed, its own folder; from a source checkout or an
    editable install, a temporary copy with the two folders moved in (rlplat/__init__.py)."""
    import atexit
    import importlib.util
    import shutil
    import tempfile

    import rlplat

    here = Path(rlplat.__file__).parent
    if (here / "agents").is_dir():
        return here
    tree = Path(tempfile.mkdtemp(prefix="rlplat-ship-")) / "rlplat"
    atexit.register(shutil.rmtree, tree.parent, ignore_errors=True)
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(here, tree, ignore=skip)
    for name in ("agents", "envs"):  # found, not imported (`rlplat serve` needs neither)
        spec = importlib.util.find_spec(f"rlplat.{name}")
        assert spec is not None and spec.submodule_search_locations
        shutil.copytree(spec.submodule_search_locations[0], tree / name, ignore=skip)
    return tree


def require_cpus(num_actors: int, what: str, where: str) -> None:
    """Actors that can never all be placed would wait forever, silently: say so now.

    Fewer CPUs free than needed (other jobs hold them) is a wait, not an error: said once.
    """
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    if num_actors > total:
        raise UserError(
            f"{what}={num_actors}: each takes 1 CPU, and {where} has {total:g} CPUs in all: "
            f"lower {what}, or add nodes (`ray start --address HEAD:PORT --num-cpus N`)"
        )
    free = ray.available_resources().get("CPU", 0.0)
    if num_actors > free:
        log.warning(
            "%s: %g of %g CPUs are free now; %s=%d waits for %g more (Ray places the "
            "rest when other jobs release them)", where, free, total, what, num_actors,
            num_actors - free,
        )  # fmt: skip


def _gcs_address(address: str) -> str:
    """HOST:PORT of the cluster's head; "auto" as Ray resolves it (RAY_ADDRESS, or the
    last `ray start --head` on this machine)."""
    if address != "auto":
        _check_reachable(address, address)
        return address
    from ray._private import services

    try:
        gcs = services.canonicalize_bootstrap_address_or_die("auto")
    except ConnectionError as exc:
        raise UserError(f"--address auto: {str(exc).splitlines()[0]}") from None
    _check_reachable(address, gcs)
    return gcs


def _join_auth_mode(address: str, gcs: str) -> str | None:
    """Set this process's RAY_AUTH_MODE to what the cluster asks ("token" or "disabled").

    Ray 2.60 does not find out itself: with an explicit HOST:PORT it keeps the mode of
    the environment (unset: disabled), so a token cluster refuses the connection after
    20 s of retries; with "auto" it turns token mode on whenever ~/.ray/auth_token exists,
    and collectors on a cluster without tokens then cannot call back into this process
    ("Missing authorization header"). One unauthenticated call to the head tells.
    """
    import grpc

    with grpc.insecure_channel(gcs) as channel:
        return _set_auth_mode(address, channel.unary_unary(_PROBE_METHOD))


def _set_auth_mode(address: str, probe: Any) -> str | None:
    """The head's answers to `probe` without and with this machine's token decide."""
    import grpc
    from ray._raylet import AuthenticationTokenLoader, Config

    try:
        mode = "disabled" if _answers(probe, ()) else "token"
        if mode == "token":
            loader = AuthenticationTokenLoader.instance()
            if not loader.has_token(ignore_auth_mode=True):
                raise UserError(
                    f"--address {address}: the Ray cluster requires a token and this machine "
                    f"has none: {_TOKEN_HELP}"
                )
            header = loader.get_token_for_http_header(ignore_auth_mode=True)
            if not _answers(probe, tuple(header.items())):
                raise UserError(
                    f"--address {address}: the Ray cluster rejected the token from "
                    f"{_token_source()}: {_TOKEN_HELP}"
                )
    except grpc.RpcError:  # not a Ray 2.60 head as we know it: let ray.init decide
        return None
    os.environ["RAY_AUTH_MODE"] = mode
    Config.initialize("")  # Ray caches its config: re-read RAY_AUTH_MODE (as Ray does)
    return mode


_PROBE_METHOD = "/ray.rpc.NodeInfoGcsService/GetClusterId"  # no arguments, any node may ask
_TOKEN_HELP = (
    "put the head's token (`ray get-auth-token` there) in ~/.ray/auth_token, or set "
    "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH"
)


def _answers(probe: Any, metadata: tuple) -> bool:
    """True if the head answers, False if it refuses for authentication."""
    import grpc

    try:
        probe(b"", metadata=metadata, timeout=10)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
            return False
        raise
    return True


def _token_source() -> str:
    """Where Ray reads this machine's token from (its loader's order)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH ({os.environ['RAY_AUTH_TOKEN_PATH']})"
    return str(Path.home() / ".ray" / "auth_token")


def session_dir() -> str | None:
    """This Ray session's directory (its processes carry it on their command lines)."""
    try:
        from ray._private import worker

        return worker._global_node.get_session_dir_path()
    except Exception:  # Ray Client, or a private API that moved
        return None


def _check_reachable(address: str, gcs: str) -> None:
    """Fail in a second with a clear line, not after minutes of Ray's connection retries."""
    host, _, port = gcs.rpartition(":")
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


@dataclass
class Cluster:
    """The Ray a run uses; `info` (for ray.json and logs) is None when it needs none."""

    info: dict[str, Any] | None = None

    def close(self) -> None:
        """Stop Ray if this run started it (a joined cluster lives on)."""
        if self.info is not None and self.info["local"]:
            stop()


def start_cluster(
    cfg: ExperimentConfig,
    address: str | None = None,
    dashboard: bool = False,
    console: Console | None = None,
    always: bool = False,
) -> Cluster:
    """Start or join Ray when Ray collectors or replay shards need it, or `always` (a
    learner Ray may place: rlplat/remote_learner.py); `address`: a cluster's, else a local
    Ray. Call it before writing anything to a new run directory: a cluster that cannot be
    joined then leaves none behind."""
    shards = cfg.replay.shards if cfg.replay else 0
    if cfg.collect.num_actors == 0 and shards == 0 and not always:
        return Cluster()
    info = start(address, cfg.collect.num_actors, dashboard)
    if info.get("dashboard"):
        (console or Console(stderr=True)).print(f"Ray dashboard: {info['dashboard']}")
    return Cluster(info)
