"""Joining a Ray cluster as Ray 2.60 ships it: token authentication on, and off.

Each cluster here is two `ray start` nodes on this host (1 CPU each) in their own RAY_TMPDIR
and HOME (so the token file, ~/.ray/auth_token, is theirs alone), stopped by killing only
the processes of that temp dir: a bare `ray stop` would stop every Ray on the machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import RLPLAT, free_port, proc_stat, processes_of, tiny_config, user_env

RAY = str(Path(RLPLAT).with_name("ray"))
PYTHON = str(Path(RLPLAT).with_name("python"))


class Cluster:
    """A head and a second node, as the README starts them, with their own HOME."""

    def __init__(self, root: Path, auth: str, gpu_node: bool = False):
        self.home, self.auth = root / "home", auth
        (self.home / ".ray").mkdir(parents=True)
        # A token file exists as soon as any local Ray ran once (`ray.init()` writes it):
        # then a default `ray start --head` turns token authentication on.
        (self.home / ".ray" / "auth_token").write_text(uuid.uuid4().hex)
        self.tmp = tempfile.mkdtemp(prefix="rlc", dir="/tmp")  # socket paths stay short
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # The nodes' workers at nice 0: Ray's default (15) starves trials and replicas
        # beside other work on a busy machine, and the raylet, not the driver, sets it.
        self.env = {**user_env(), "HOME": str(self.home), "RAY_TMPDIR": self.tmp,
                    "RAY_worker_niceness": "0"}  # fmt: skip
        self.env.pop("RAY_ADDRESS", None)
        head_env = dict(self.env)
        if auth == "disabled":
            head_env["RAY_AUTH_MODE"] = "disabled"
        self._ray("start", "--head", f"--port={self.port}", "--include-dashboard=false",
                  env=head_env)  # fmt: skip
        # Another node joins in the head's mode: Ray 2.60 does not find it out itself. As a
        # GPU node it has 2 CPUs (the learner's and a collector's) and a GPU Ray counts,
        # which TensorFlow there does not have.
        node = ["--num-cpus=2", "--num-gpus=1"] if gpu_node else ["--num-cpus=1"]
        self._ray("start", f"--address={self.address}", *node,
                  env={**self.env, "RAY_AUTH_MODE": auth})  # fmt: skip
        self._wait_for_cpus(3 if gpu_node else 2, auth)

    def _ray(self, *args: str, env: dict) -> None:
        cpus = [] if any(a.startswith("--num-cpus") for a in args) else ["--num-cpus=1"]
        out = subprocess.run(
            [RAY, *args, *cpus, "--disable-usage-stats"],
            capture_output=True, text=True, env=env, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]

    def _wait_for_cpus(self, cpus: int, auth: str) -> None:
        """A node that `ray start` reported may reach the head's resource view later."""
        code = (
            "import ray, sys, time; ray.init(address=sys.argv[1]); t = time.time() + 60\n"
            "while ray.cluster_resources().get('CPU', 0) < float(sys.argv[2]):\n"
            "    assert time.time() < t; time.sleep(0.2)"
        )
        out = subprocess.run(
            [PYTHON, "-c", code, self.address, str(cpus)], capture_output=True, text=True,
            env={**self.env, "RAY_AUTH_MODE": auth}, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]

    def stop(self) -> None:
        # TERM first, as `ray stop` does; KILL what is left. The raylets and the GCS
        # outlived a TERM by 30 s and more when this was measured, so a longer grace (or a
        # second TERM round) only adds to the suite's time.
        for pid in processes_of(self.tmp):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while processes_of(self.tmp) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in processes_of(self.tmp):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def gpu_node_id(self) -> str:
        code = (
            "import ray, sys; ray.init(address=sys.argv[1])\n"
            "print(*[n['NodeID'] for n in ray.nodes() if n['Resources'].get('GPU')])"
        )
        out = subprocess.run(
            [PYTHON, "-c", code, self.address], capture_output=True, text=True,
            env={**self.env, "RAY_AUTH_MODE": self.auth}, timeout=120,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.strip()


@contextlib.contextmanager
def cluster(root: Path, auth: str, gpu_node: bool = False) -> Iterator[Cluster]:
    c = None
    try:
        c = Cluster(root, auth, gpu_node)
        yield c
    finally:
        if c is not None:
            c.stop()


@pytest.fixture(scope="module")
def token_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("token"), "token") as c:
        yield c


@pytest.fixture(scope="module")
def gpu_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with cluster(tmp_path_factory.mktemp("gpu"), "token", gpu_node=True) as c:
        yield c


def experiment(folder: Path) -> Path:
    """The tiny CartPole DQN with 2 collectors x 2 envs and a few hundred env steps."""
    data = tiny_config(
        collect={"num_actors": 2, "envs_per_actor": 2, "rollout_length": 16},
        train={"env_steps": 400, "learning_starts": 100},
        eval={"every_env_steps": 400, "episodes": 1},
        checkpoint={"every_env_steps": 400},
    )
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def train(c: Cluster, folder: Path, address: str, *extra: str, env: dict | None = None):
    folder.mkdir(exist_ok=True)
    return subprocess.run(
        [RLPLAT, "train", str(experiment(folder)), "--run-dir", str(folder / "run"),
         "--address", address, *extra],
        cwd=folder, capture_output=True, text=True, env=env or c.env, timeout=400,
    )  # fmt: skip


def assert_ran_on_both_nodes(run_dir: Path, auth: str) -> None:
    info = json.loads((run_dir / "ray.json").read_text())
    assert info["ray"]["local"] is False and info["ray"]["auth"] == auth
    nodes = info["collector_nodes"]
    assert sorted(nodes) == ["0", "1"]
    assert len({n["node_id"] for n in nodes.values()}) == 2  # one collector per node
    assert all(n["ip"] for n in nodes.values())


def last_line(out: subprocess.CompletedProcess) -> str:
    return out.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_train_joins_a_token_cluster_by_address_with_collectors_on_both_nodes(
    token_cluster: Cluster, tmp_path: Path
):
    # No RAY_AUTH_MODE in the user's shell: rlplat asks the head what it needs.
    out = train(token_cluster, tmp_path, token_cluster.address)
    assert out.returncode == 0, out.stderr[-3000:]
    assert_ran_on_both_nodes(tmp_path / "run", "token")
    assert processes_of(token_cluster.tmp)  # leaving the cluster does not stop it


@pytest.mark.slow
def test_a_wrong_or_missing_token_is_one_line_naming_the_address(
    token_cluster: Cluster, tmp_path: Path
):
    address = token_cluster.address
    wrong = {**token_cluster.env, "RAY_AUTH_TOKEN": "not-the-cluster-token"}
    out = train(token_cluster, tmp_path / "a", address, env=wrong)
    assert out.returncode == 2, out.stderr[-3000:]
    assert last_line(out).startswith(
        f"error: --address {address}: the Ray cluster rejected the token from RAY_AUTH_TOKEN: "
    )
    assert "ray get-auth-token" in last_line(out) and "Traceback" not in out.stderr
    (tmp_path / "empty").mkdir()
    no_token = {**token_cluster.env, "HOME": str(tmp_path / "empty")}
    out = train(token_cluster, tmp_path / "b", address, env=no_token)
    assert out.returncode == 2, out.stderr[-3000:]
    assert last_line(out).startswith(
        f"error: --address {address}: the Ray cluster requires a token and this machine has none"
    )


@pytest.mark.slow
def test_more_collectors_than_cluster_cpus_is_one_line_not_a_hang(
    token_cluster: Cluster, tmp_path: Path
):
    out = train(token_cluster, tmp_path, token_cluster.address, "--set", "collect.num_actors=3")
    assert out.returncode == 2, out.stderr[-3000:]
    assert last_line(out).startswith(
        f"error: collect.num_actors=3: each takes 1 CPU, and the Ray cluster at "
        f"{token_cluster.address} has 2 CPUs in all"
    )


@pytest.mark.slow
def test_train_joins_a_cluster_without_auth_by_auto_despite_a_token_file(tmp_path: Path):
    # The head runs with RAY_AUTH_MODE=disabled, the user's shell does not say so, and
    # ~/.ray/auth_token exists: Ray's own "auto" then turns token mode on in the driver.
    with cluster(tmp_path, "disabled") as c:
        out = train(c, tmp_path / "job", "auto")
        assert out.returncode == 0, out.stderr[-3000:]
        assert_ran_on_both_nodes(tmp_path / "job" / "run", "disabled")


@pytest.mark.slow
def test_cpu_check_on_a_ray_this_process_started(caplog: pytest.LogCaptureFixture):
    import ray

    from rlplat import cluster
    from rlplat.errors import UserError

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        with pytest.raises(UserError, match=r"collect.num_actors=3: each takes 1 CPU, and "):
            cluster.start(None, 3)

        @ray.remote(num_cpus=1)
        class Holder:
            def ready(self) -> bool:
                return True

        holder = Holder.remote()  # another job's actor holds one of the 2 CPUs
        assert ray.get(holder.ready.remote(), timeout=60)
        deadline = time.monotonic() + 30  # the cluster's resource view follows shortly
        while ray.available_resources().get("CPU", 0) > 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        with caplog.at_level(logging.WARNING, logger="rlplat.cluster"):
            assert cluster.start(None, 2)["address"] == "existing"
        assert "1 of 2 CPUs are free now; collect.num_actors=2 waits for 1 more" in caplog.text
    finally:
        ray.shutdown()


def test_a_collector_that_cannot_start_names_the_exception_not_rays_header():
    from ray.exceptions import ActorDiedError, RayActorError

    from rlplat.experience.collect import death_cause

    text = (
        "The actor died because of an error raised in its creation task, "
        "ray::CollectorActorBody.__init__() (pid=1, ip=10.0.0.2, actor_id=ab)\n"
        '  File "envs/make.py", line 60, in _import\n'
        "rlplat.errors.ConfigError: env.id: cannot import module 'myenvs' (not installed)"
    )
    err = RayActorError(error_msg=text, actor_init_failed=True)
    assert death_cause(err) == (
        "its set-up raised rlplat.errors.ConfigError: env.id: cannot import module 'myenvs' "
        "(not installed)"
    )
    killed = ActorDiedError()  # SIGKILL, OOM, a lost node: Ray's own first line says it
    assert death_cause(killed) == str(killed).splitlines()[0]


@pytest.mark.slow
def test_tune_runs_its_trials_on_a_cluster_by_address(token_cluster: Cluster, tmp_path: Path):
    """`rlplat tune --address`: two trials, one per node (1 CPU each), every trial a run
    directory, and the winner written as best.yaml."""
    data = tiny_config(eval={"every_env_steps": 400, "threshold": 0})
    data["agent"]["lr_schedule"] = "constant"
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "space.yaml").write_text("agent.learning_rate: {grid: [1.0e-3, 3.0e-3]}\n")
    out = subprocess.run(
        [RLPLAT, "tune", "tiny.yaml", "--space", "space.yaml", "--scheduler", "none",
         "--samples", "1", "--max-concurrent", "2", "--top-k", "1", "--held-out-seeds", "1",
         "--address", token_cluster.address],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env=token_cluster.env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (sweep,) = (tmp_path / "runs" / "tiny").glob("tune-*")
    results = json.loads((sweep / "results.json").read_text())
    assert len(results["trials"]) == 2, results
    assert len(list(sweep.glob("*/summary.json"))) == 2  # each trial ran to its end
    assert (sweep / "best.yaml").exists()


@pytest.mark.slow
def test_serve_ray_on_a_two_node_cluster_serves_from_both_nodes(
    token_cluster: Cluster, tmp_path: Path
):
    """`rlplat serve --ray --address`: one replica per node, both serving (same host here),
    each at the driver's priority (the nodes run workers at nice 0 here; a replica raising
    itself from Ray's default niceness: tests/serving/test_replicas.py)."""
    import requests
    from serving.helpers import OBS, export_tiny

    models = tmp_path / "models"
    export_tiny(models, "cartpole", seed=1)
    port, mport = free_port(), free_port()
    log = tmp_path / "fleet.log"
    proc = subprocess.Popen(
        [RLPLAT, "serve", "--ray", "--replicas", "2", "--address", token_cluster.address,
         "--model-base-path", str(models), "--port", str(port), "--grpc-port", "0",
         "--metrics-port", str(mport)],
        stdout=subprocess.DEVNULL, stderr=log.open("w"), env=token_cluster.env, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and "replica(s) on" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        assert "2 replica(s) on 2 node(s)" in log.read_text(), log.read_text()[-3000:]
        for pid in processes_of("rlplat.serving.replica", f'"port": {port}', environ=True):
            assert int(proc_stat(pid)[16]) == os.nice(0)
        body = json.dumps({"instances": OBS.tolist()})
        for _ in range(40):  # a new connection each: the kernel spreads them
            r = requests.post(f"http://127.0.0.1:{port}/v1/models/cartpole:predict",
                              data=body, timeout=30)  # fmt: skip
            assert r.status_code == 200
        text = requests.get(f"http://127.0.0.1:{mport}/metrics", timeout=30).text
        served = {line.split('node="')[1].split('"')[0] for line in text.splitlines()
                  if line.startswith("rlplat_serving_requests_total{")
                  and 'code="200"' in line and not line.endswith(" 0.0")}  # fmt: skip
        assert len(served) == 2, text
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]


@pytest.mark.slow
def test_a_learner_that_may_use_a_gpu_asks_ray_and_trains_on_the_gpu_node(
    gpu_cluster: Cluster, tmp_path: Path
):
    """learner.device auto on a cluster with a GPU node: the learner is a Ray task with
    num_gpus=1 there (TensorFlow finds no real GPU, so it trains on that node's CPU); the
    run directory, the export (from this directory) and run.json are as for a local run."""
    out = train(gpu_cluster, tmp_path, gpu_cluster.address)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "run"
    assert f"run directory: {run} (the learner: a Ray task with 1 GPU(s))" in out.stderr
    learner = json.loads((run / "ray.json").read_text())["ray"]["learner"]
    assert learner["node_id"] == gpu_cluster.gpu_node_id() and learner["gpus"] == ["0"]
    argv = json.loads((run / "run.json").read_text())["argv"]
    assert argv[1:3] == ["train", str(tmp_path / "tiny.yaml")]  # this command's, not Ray's
    assert (tmp_path / "models" / "tiny" / "1" / "saved_model.pb").is_file()
    assert not (run / ".learner-probe").exists() and (run / "summary.json").is_file()


def long_run_with_a_checkpoint(c: Cluster, folder: Path, run: Path) -> subprocess.Popen:
    """`rlplat train --address` with a budget it will not reach, once it has checkpointed."""
    proc = subprocess.Popen(
        [RLPLAT, "train", str(experiment(folder)), "--run-dir", str(run),
         "--address", c.address, "--set", "train.env_steps=10000000"],
        cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=c.env,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(run.glob("checkpoints/ckpt-*")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_a_ray_placed_learner_with_a_checkpoint_and_it_resumes_there(
    gpu_cluster: Cluster, tmp_path: Path, signum: signal.Signals
):
    """SIGINT or SIGTERM to `rlplat train`: Ray cancels the learner's task, which Ray turns
    into SIGINT there; it checkpoints, and the command exits 128 + the signal number."""
    run = tmp_path / "run"
    proc = long_run_with_a_checkpoint(gpu_cluster, tmp_path, run)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, err[-3000:]
    saved = sorted(run.glob("checkpoints/ckpt-*"))[-1]
    assert err.strip().splitlines()[-1] == (
        f"interrupted ({signum.name}); the learner saved {saved}; resume with: "
        f"rlplat train --resume {run} --address {gpu_cluster.address}"
    )
    steps = json.loads((saved / "state.json").read_text())["env_steps"]
    pid = json.loads((run / "ray.json").read_text())["ray"]["learner"]["pid"]
    deadline = time.monotonic() + 60  # its worker ends with the job that started it
    while Path(f"/proc/{pid}").exists():
        assert time.monotonic() < deadline, f"the learner (pid {pid}) outlived its job"
        time.sleep(0.2)
    out = subprocess.run(
        [RLPLAT, "train", "--resume", str(run), "--address", gpu_cluster.address,
         "--set", f"train.env_steps={steps + 400}"],
        cwd=tmp_path, capture_output=True, text=True, env=gpu_cluster.env, timeout=400,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads((run / "summary.json").read_text())["env_steps"] >= steps + 400
    assert f"resuming {run} from {saved.name}" in out.stderr


@pytest.mark.slow
def test_a_ray_placed_learner_killed_ends_the_command_with_how_to_resume(
    gpu_cluster: Cluster, tmp_path: Path
):
    run = tmp_path / "run"
    proc = long_run_with_a_checkpoint(gpu_cluster, tmp_path, run)
    os.kill(json.loads((run / "ray.json").read_text())["ray"]["learner"]["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: the learner's Ray task failed (") and "Traceback" not in err
    resume = f"rlplat train --resume {run} --address {gpu_cluster.address}"
    assert line.endswith(f"resume with: {resume}")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (["learner.devices=2", "learner.strategy=mirrored"],
         "error: learner.devices: 2 GPUs, but the most on one node of the Ray cluster at "),
        (["learner.device=gpu"], "error: learner.device: gpu, but TensorFlow sees no GPU"),
    ],
)  # fmt: skip
def test_a_learner_ray_cannot_place_or_run_is_one_line_and_leaves_no_run(
    gpu_cluster: Cluster, tmp_path: Path, setting: list[str], message: str
):
    """More GPUs than any node has: said before anything starts. learner.device gpu where
    Ray's GPU is not one TensorFlow sees: said by the learner's node, before it writes."""
    sets = [arg for s in setting for arg in ("--set", s)]
    out = train(gpu_cluster, tmp_path, gpu_cluster.address, *sets)
    assert out.returncode == 2, out.stderr[-3000:]
    assert last_line(out).startswith(message) and "Traceback" not in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_sweeps_trials_ask_ray_for_the_learners_gpu_on_a_cluster(
    gpu_cluster: Cluster, tmp_path: Path
):
    """Each trial's learner bundle holds the GPU: the trial runs on the GPU node, with
    Ray's GPU 0 as its CUDA_VISIBLE_DEVICES (its collector takes any CPU)."""
    data = tiny_config(eval={"every_env_steps": 400, "threshold": 0})
    data["collect"] = {"num_actors": 1, "envs_per_actor": 2, "rollout_length": 16}
    data["train"] = {**data["train"], "env_steps": 400, "learning_starts": 100}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "space.yaml").write_text("agent.learning_rate: {grid: [1.0e-3]}\n")
    out = subprocess.run(
        [RLPLAT, "tune", "tiny.yaml", "--space", "space.yaml", "--scheduler", "none",
         "--samples", "1", "--top-k", "1", "--held-out-seeds", "1",
         "--address", gpu_cluster.address],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env=gpu_cluster.env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (sweep,) = (tmp_path / "runs" / "tiny").glob("tune-*")
    records = [json.loads(p.read_text()) for p in sweep.rglob("ray.json")]
    assert len(records) == 2, list(sweep.rglob("ray.json"))  # the trial and its re-run
    for record in records:
        learner = record["ray"]["learner"]
        assert learner["node_id"] == gpu_cluster.gpu_node_id() and learner["gpus"] == ["0"]


def _start_blocking_head(tmp: str, port: int, env: dict) -> subprocess.Popen:
    """A head as the README starts one on a shared host: its own RAY_TMPDIR and ports,
    held by one `ray start --block` process."""
    return subprocess.Popen(
        [RAY, "start", "--head", f"--port={port}", f"--ray-client-server-port={port + 1}",
         "--include-dashboard=false", "--num-cpus=1", "--disable-usage-stats", "--block"],
        env={**env, "RAY_TMPDIR": tmp}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@pytest.mark.slow
def test_two_heads_on_one_host_and_stopping_one_leaves_the_other(tmp_path):
    """The README's shared-host commands: a second head does not clash with the first,
    and ending one `ray start --block` stops that node's processes only (`ray stop` would
    stop every Ray on the machine)."""
    env = {**user_env(), "HOME": str(tmp_path), "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    tmps = [tempfile.mkdtemp(prefix="rlh", dir="/tmp") for _ in range(2)]
    heads = [_start_blocking_head(t, free_port(), env) for t in tmps]
    try:
        deadline = time.monotonic() + 120
        while not all(list(Path(t, "ray").glob("session_*/logs/raylet.out")) for t in tmps):
            assert all(h.poll() is None for h in heads), "a head failed to start"
            assert time.monotonic() < deadline, "the heads did not start in time"
            time.sleep(0.5)
        assert processes_of(tmps[0]) and processes_of(tmps[1])
        heads[0].send_signal(signal.SIGTERM)  # what `kill $(cat ray-head.pid)` sends
        heads[0].wait(timeout=90)
        deadline = time.monotonic() + 60
        while processes_of(tmps[0]) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_of(tmps[0]) == []
        assert heads[1].poll() is None and processes_of(tmps[1])
    finally:
        for head in heads:
            if head.poll() is None:
                head.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    head.wait(timeout=90)
        for tmp in tmps:
            for pid in processes_of(tmp):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(tmp, ignore_errors=True)
