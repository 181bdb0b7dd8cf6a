"""The learner as a Ray task on a cluster's GPU node (`rlplat train --address` when the
learner asks for GPUs): Ray places it, by `num_gpus`, on a node with that many free.

Without `--address` the learner is the `rlplat train` process on its own machine, as
before. On a cluster whose nodes have GPUs, a learner that may use one (`learner.device`
auto or gpu) asks Ray for 1 CPU and N GPUs (N from `learner.devices`) and Ray sets its
CUDA_VISIBLE_DEVICES to the GPUs it got; collectors stay CPU-only. The learner's node
writes the run directory, so it must be on storage this machine shares with it (checked
first: a file this process writes there must be the one the learner reads). Ctrl-C and
SIGTERM here cancel the task, which Ray delivers as SIGINT to the learner: it finishes its
iteration and checkpoints, as a local run does.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlplat.cluster import Cluster
from rlplat.config import ExperimentConfig, LearnerConfig
from rlplat.errors import ConfigError, UserError
from rlplat.rundir import resume_command
from rlplat.runs import complete_checkpoints, is_running
from rlplat.signals import Interrupted, StopOnSignals

if TYPE_CHECKING:  # rlplat.train loads TensorFlow, which this process does not need
    from ray import ObjectRef

    from rlplat.train import TrainSummary

PROBE_FILE = ".learner-probe"  # the driver's token, read back by the learner's node


@dataclass(frozen=True)
class Driver:
    """What the learner takes from the `rlplat train` process: its working directory,
    command line (run.json) and niceness."""

    cwd: str
    argv: list[str]
    niceness: int


def wants_gpus(cfg: LearnerConfig) -> bool:
    """Whether this learner would use a GPU if its node had one."""
    if cfg.device == "cpu":
        return False
    return not isinstance(cfg.devices, list) or any("GPU" in d.upper() for d in cfg.devices)


def gpus_to_ask(cfg: LearnerConfig, node_gpus: list[float], where: str) -> int:
    """GPUs the learner asks Ray for on a cluster whose nodes have `node_gpus`; 0: it runs
    in this process (no GPU anywhere, and `learner.device: auto`). Ray places one task on
    one node, so N GPUs must be on one node: more is a ConfigError naming the setting."""
    most = int(max(node_gpus, default=0))
    if not wants_gpus(cfg):
        return 0
    if most == 0:
        if cfg.device == "gpu":
            raise ConfigError(f"learner.device: gpu, but no node of {where} has a GPU")
        return 0
    if cfg.devices == "auto":
        return most if cfg.strategy == "mirrored" else 1
    n = cfg.devices if isinstance(cfg.devices, int) else len(cfg.devices)
    if n > most:
        raise ConfigError(
            f"learner.devices: {n} GPUs, but the most on one node of {where} is {most} "
            f"(nodes' GPUs: {', '.join(f'{g:g}' for g in node_gpus)})"
        )
    return n


def cluster_gpus(cfg: ExperimentConfig, info: dict[str, Any] | None) -> int:
    """GPUs to ask for on the Ray `info` describes, when this command joined it by
    address (else 0: a local Ray shares this machine's GPUs, as before)."""
    import ray

    if info is None or info["local"] or info["address"] == "existing":
        return 0
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    where = f"the Ray cluster at {info['address']}"
    return gpus_to_ask(cfg.learner, [n["Resources"].get("GPU", 0.0) for n in nodes], where)


def require_learner_cpu(cfg: ExperimentConfig, info: dict[str, Any]) -> None:
    """A Ray-placed learner takes a CPU beside the collectors': the cluster must have it."""
    import ray

    total = ray.cluster_resources().get("CPU", 0.0)
    if cfg.collect.num_actors + 1 > total:
        raise UserError(
            f"collect.num_actors={cfg.collect.num_actors}: with the learner's own CPU the run "
            f"takes {cfg.collect.num_actors + 1} CPUs, and the Ray cluster at "
            f"{info['address']} has {total:g} in all"
        )


def learner_record(info: dict[str, Any] | None) -> dict[str, Any]:
    """`info` (ray.json's "ray") with where this learner runs in Ray: node, GPUs, pid."""
    import platform

    import ray

    where = {
        "node_id": ray.get_runtime_context().get_node_id(),
        "ip": ray.util.get_node_ip_address(),
        "host": platform.node(),
        "pid": os.getpid(),
        "gpus": [str(g) for g in ray.get_gpu_ids()],
    }
    return {**(info or {}), "learner": where}


def train_remote(
    cfg: ExperimentConfig, run_dir: Path, resume: bool, cluster: Cluster, gpus: int
) -> TrainSummary:
    """Train in a Ray task holding `gpus` GPUs; returns its summary. The run directory
    gets a probe file the task must read back (shared storage), removed afterwards."""
    import ray

    run_dir = run_dir.absolute()  # the task's working directory may differ
    made = not run_dir.exists()
    token = secrets.token_hex(16)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / PROBE_FILE).write_text(token)
    except OSError as exc:
        raise UserError(f"{run_dir}: cannot create ({exc.strerror or exc})") from None
    task = ray.remote(_learn).options(
        name="learner", num_cpus=1, num_gpus=gpus, max_retries=0, retry_exceptions=False
    )
    here = Driver(os.getcwd(), sys.argv, os.nice(0))
    ref = task.remote(cfg, str(run_dir), resume, token, cluster.info, here)
    print(f"run directory: {run_dir} (the learner: a Ray task with {gpus} GPU(s))", file=sys.stderr)
    try:
        summary = _wait(ref, run_dir, cluster.info)
    finally:
        _leave_ray()
        (run_dir / PROBE_FILE).unlink(missing_ok=True)
        if made and not any(run_dir.iterdir()):  # the learner never started: leave nothing
            run_dir.rmdir()
    if summary.export_path and not Path(summary.export_path).exists():
        print(f"warning: {summary.export_path} is on the learner's node only", file=sys.stderr)
    return summary


def _wait(ref: ObjectRef, run_dir: Path, info: dict[str, Any] | None) -> TrainSummary:
    """The task's result. SIGINT or SIGTERM here cancels it (the learner checkpoints and
    stops) and waits for that; a second one kills it. Errors come back as raised there."""
    import ray

    signals = StopOnSignals()
    signals.install()
    try:
        with signals.armed():  # a signal is noted, not raised: ray.get would turn it into
            while signals.requested is None:  # a bare KeyboardInterrupt, without its number
                if ray.wait([ref], timeout=0.5)[0]:
                    return _result(ref, run_dir, info)
        _cancel(ref, run_dir)
        _leave_ray()
        saved = complete_checkpoints(run_dir / "checkpoints")
        print(
            f"interrupted ({signal.Signals(signals.requested).name})"
            + (f"; the learner saved {saved[-1]}" if saved else "")
            + f"; resume with: {resume_command(run_dir, info)}",
            file=sys.stderr, flush=True,
        )  # fmt: skip
        raise Interrupted(signals.requested, reported=True)
    finally:
        signals.restore()


def _leave_ray() -> None:
    """Disconnect once the learner is done: Ray forwards its lines from a thread that this
    joins, so none of them lands after this command's last line (its outcome)."""
    import ray

    ray.shutdown()


def _cancel(ref: ObjectRef, run_dir: Path) -> None:
    """Ask the learner to stop (Ray calls its SIGINT handler: it finishes the iteration and
    checkpoints) and wait until it lets go of the run's lock; a second signal kills it."""
    import ray

    ray.cancel(ref, recursive=False)  # the collectors' calls end with the learner's loop
    try:
        while is_running(run_dir):  # Ray reports the task cancelled before it has stopped
            time.sleep(0.2)
    except KeyboardInterrupt:
        ray.cancel(ref, force=True)


def _result(ref: ObjectRef, run_dir: Path, info: dict[str, Any] | None) -> TrainSummary:
    """The finished task's summary, or its error: a UserError as raised there, a dead
    worker or node as one line that says how to resume."""
    import ray
    from ray.exceptions import RayError, RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        if isinstance(exc.cause, UserError):
            raise exc.cause from None
        raise
    except RayError as exc:  # the learner's worker or node died
        raise UserError(
            f"the learner's Ray task failed ({type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0]}); resume with: "
            f"{resume_command(run_dir, info)}"
        ) from None


def check_shared(run_dir: Path, token: str, node: str) -> None:
    """The run directory the driver made, with its probe, is the one this node sees."""
    try:
        seen = (run_dir / PROBE_FILE).read_text()
    except OSError:
        seen = None
    if seen != token:
        raise UserError(
            f"{run_dir}: the learner's node ({node}) does not see this run directory as "
            "this machine does; the learner writes the run there, so put it on storage every "
            "node shares (--run-dir)"
        )


def _enter(cwd: str, cfg: ExperimentConfig) -> None:
    """Work from the driver's directory, as a local learner would; without it here, a
    relative export path would land somewhere no one looks: an error before training."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
        return
    base = cfg.export.model_base_path
    if cfg.export.when != "never" and not os.path.isabs(base):
        raise UserError(
            f"export.model_base_path: {base} is relative to {cwd}, which the learner's node "
            "does not have; give an absolute path on storage every node shares"
        )


def _learn(
    cfg: ExperimentConfig,
    run_dir: str,
    resume: bool,
    token: str,
    info: dict[str, Any] | None,
    driver: Driver,
) -> TrainSummary:
    """In the learner's Ray worker: check the run directory is the driver's, then train
    there like `rlplat train` (relative paths, such as export.model_base_path, from the
    driver's working directory when this node has it), at the driver's priority."""
    from rlplat.learner import check_split, learner_placement
    from rlplat.niceness import take_priority
    from rlplat.runs import training_lock
    from rlplat.train import train

    path = Path(run_dir)
    info = learner_record(info)
    check_shared(path, token, f"{info['learner']['host']}, {info['learner']['ip']}")
    take_priority(driver.niceness, "the learner")
    _enter(driver.cwd, cfg)
    # learner.devices on the GPUs Ray gave this worker (numbered from 0), before the run
    # directory holds anything: an error leaves none behind, as on one machine.
    check_split(cfg, len(learner_placement(cfg.learner).devices))
    with training_lock(path):
        return train(
            cfg, path, resume, show_progress=False, cluster=Cluster(info), argv=driver.argv
        )
