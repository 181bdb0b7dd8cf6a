"""rlplat serve: TF Serving REST/gRPC conformance, versions, hot reload, failures, security,
batching, fuzz, and rlplat play against rlplat eval."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
from conftest import RLPLAT, ROOT, run_cli, tiny_config, user_env

from rlplat import agents, config, envs
from rlplat.export import export_saved_model
from rlplat.train import export_metadata

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`rlplat serve` in a subprocess on free ports."""

    def __init__(self, base: Path, *args: str, env: dict | None = None) -> None:
        self.port, self.grpc_port = free_port(), free_port()
        self.log = base.parent / f"serve-{self.port}.log"
        self.proc = subprocess.Popen(
            [RLPLAT, "serve", "--model-base-path", str(base), "--port", str(self.port),
             "--grpc-port", str(self.grpc_port), *args],
            stdout=subprocess.DEVNULL, stderr=self.log.open("w"), env=env or user_env(),
            start_new_session=True,
        )  # fmt: skip
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                requests.get(self.base + "/v1/models/x", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.2)
        raise AssertionError("server did not start: " + self.log.read_text()[-2000:])

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


def states(status: dict) -> dict[str, str]:
    return {s["version"]: s["state"] for s in status["model_version_status"]}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("serving") / "models"
    export_tiny(base, "cartpole", seed=1)  # version 1
    export_tiny(base, "cartpole", seed=2)  # version 2: different weights
    export_tiny(base, "pg", seed=0, agent=PPO)
    return base


@pytest.fixture(scope="module")
def server(models):
    s = Server(models)
    yield s
    s.stop()


OBS = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)


# ---------------------------------------------------------------------- REST conformance


def test_status_lists_the_latest_version_and_each_version_on_its_own(server):
    r = server.get("/v1/models/cartpole")
    assert r.status_code == 200
    assert r.json() == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]}  # fmt: skip
    assert states(server.get("/v1/models/cartpole/versions/2").json()) == {"2": "AVAILABLE"}
    r = server.get("/v1/models/cartpole/versions/1")  # latest policy: 1 never loaded
    assert r.status_code == 404 and "version 1" in r.json()["error"]


def test_metadata_is_the_signature_def_map(server):
    r = server.get("/v1/models/pg/metadata")
    assert r.status_code == 200
    meta = r.json()
    assert meta["model_spec"] == {"name": "pg", "signature_name": "", "version": "1"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "sample"}
    inp = sigs["serving_default"]["inputs"]["observations"]
    assert inp["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in inp["tensor_shape"]["dim"]] == ["-1", "4"]
    assert set(sigs["serving_default"]["outputs"]) == {"actions", "logits"}
    assert sigs["serving_default"]["method_name"] == "tensorflow/serving/predict"
    assert server.get("/v1/models/cartpole/versions/2/metadata").json()["model_spec"][
        "version"] == "2"  # fmt: skip


def test_the_standard_tf_serving_client_works_unchanged(server, models):
    # The README's client, verbatim in spirit: requests + json.dumps, row format.
    r = requests.post(
        f"http://127.0.0.1:{server.port}/v1/models/cartpole:predict",
        data=json.dumps({"signature_name": "serving_default", "instances": OBS.tolist()}),
    )
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    want = reference(models / "cartpole" / "2", OBS)
    assert [p["actions"] for p in preds] == want["actions"].tolist()
    np.testing.assert_allclose([p["q_values"] for p in preds], want["q_values"], rtol=1e-5)


def test_row_and_columnar_formats_give_the_same_numbers(server, models):
    want = reference(models / "cartpole" / "2", OBS)
    cols = server.post("/v1/models/cartpole:predict", {"inputs": OBS.tolist()}).json()["outputs"]
    named = server.post("/v1/models/cartpole:predict",
                        {"inputs": {"observations": OBS.tolist()}}).json()["outputs"]  # fmt: skip
    rows = server.post("/v1/models/cartpole/versions/2:predict",
                       {"instances": [{"observations": o} for o in OBS.tolist()]})  # fmt: skip
    assert cols == named
    assert cols["actions"] == want["actions"].tolist()
    np.testing.assert_allclose(cols["q_values"], want["q_values"], rtol=1e-5)
    assert [p["actions"] for p in rows.json()["predictions"]] == cols["actions"]


def test_signature_name_is_honoured(server, models):
    want = reference(models / "pg" / "1", OBS)
    default = server.post("/v1/models/pg:predict", {"instances": OBS.tolist()}).json()
    np.testing.assert_allclose([p["logits"] for p in default["predictions"]], want["logits"],
                               rtol=1e-5)  # fmt: skip
    # `sample` has one output: predictions are plain values, outputs a plain list.
    body = {"signature_name": "sample", "instances": OBS.tolist()}
    sample = server.post("/v1/models/pg:predict", body).json()
    assert len(sample["predictions"]) == 3 and all(p in (0, 1) for p in sample["predictions"])
    cols = server.post(
        "/v1/models/pg:predict", {"signature_name": "sample", "inputs": OBS.tolist()}
    )
    assert len(cols.json()["outputs"]) == 3
    r = server.post("/v1/models/pg:predict", {"signature_name": "nope", "instances": OBS.tolist()})
    assert r.status_code == 400 and "nope" in r.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "words"),
    [
        ("GET", "/v1/models/nope", None, 404, "nope"),
        ("GET", "/v1/models/cartpole/versions/7", None, 404, "version 7"),
        ("GET", "/v1/models/cartpole/versions/x", None, 400, "version"),
        ("GET", "/v1/models/cartpole/labels/stable", None, 404, "stable"),
        ("POST", "/v1/models/nope:predict", {"instances": [[0, 0, 0, 0]]}, 404, "nope"),
        ("POST", "/v1/models/cartpole/versions/9:predict", {"instances": [[0] * 4]}, 404, "9"),
        ("POST", "/v1/models/cartpole:predict", b"{not json", 400, "JSON"),
        ("POST", "/v1/models/cartpole:predict", [1, 2], 400, "object"),
        ("POST", "/v1/models/cartpole:predict", {}, 400, "exactly one"),
        ("POST", "/v1/models/cartpole:predict",
         {"instances": [[0] * 4], "inputs": [[0] * 4]}, 400, "exactly one"),
        ("POST", "/v1/models/cartpole:predict", {"instances": []}, 400, "non-empty"),
        ("POST", "/v1/models/cartpole:predict", {"instances": [[0] * 5]}, 400, "shape"),
        ("POST", "/v1/models/cartpole:predict", {"inputs": [0, 0, 0, 0]}, 400, "shape"),
        ("POST", "/v1/models/cartpole:predict", {"instances": [["a"] * 4]}, 400, "float32"),
        ("POST", "/v1/models/cartpole:predict", {"instances": [[None] * 4]}, 400, "float32"),
        ("POST", "/v1/models/cartpole:predict", {"instances": [[0] * 4, [0] * 3]}, 400, "rect"),
        ("POST", "/v1/models/cartpole:predict", {"inputs": {"x": [[0] * 4]}}, 400, "observations"),
        ("POST", "/v1/models/cartpole:predict",
         {"signature_name": 3, "instances": [[0] * 4]}, 400, "signature_name"),
        ("POST", "/v1/models/cartpole:classify", {"instances": [[0] * 4]}, 400, "predict"),
        ("GET", "/v1/models/cartpole:predict", None, 405, "POST"),
        ("POST", "/v1/models/cartpole", {}, 405, "GET"),
        ("GET", "/v1/models/cartpole:explode", None, 404, "Malformed"),
        ("GET", "/v2/whatever", None, 404, "Malformed"),
        ("GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", None, 404, ""),
        ("GET", "/v1/models/%2e%2e/metadata", None, 404, ""),
    ],
)  # fmt: skip
def test_errors_are_json_with_the_right_status(server, method, path, body, status, words):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body)
    r = requests.request(method, server.base + path, data=data, timeout=10)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["error"]


def test_a_body_over_the_limit_is_413_and_the_server_goes_on(server):
    big = json.dumps({"instances": [[0.0] * 4] * 300_000})  # ~5 MB > the 4 MiB default
    r = server.post("/v1/models/cartpole:predict", big)
    assert r.status_code == 413 and "larger than" in r.json()["error"]
    assert server.post("/v1/models/cartpole:predict", {"instances": [[0] * 4]}).status_code == 200


def test_prometheus_metrics_count_requests_latency_and_batch_sizes(server):
    server.post("/v1/models/cartpole:predict", {"instances": OBS.tolist()})
    text = server.get("/monitoring/prometheus/metrics").text
    assert 'rlplat_serving_requests_total{api="rest",code="200",method="predict",' \
           'model="cartpole",version="2"}' in text  # fmt: skip
    assert "rlplat_serving_request_latency_seconds_bucket" in text
    assert 'rlplat_serving_batch_size_sum{model="cartpole",signature="serving_default",' \
           'version="2"}' in text  # fmt: skip
    assert 'rlplat_serving_model_version_available{model="cartpole",version="2"} 1.0' in text
    assert 'rlplat_serving_model_loads_total{model="pg",result="ok"} 1.0' in text
    assert 'model="(unknown)"' in text  # unknown names are not a label-cardinality attack
    assert server.get("/metrics").status_code == 200


# ---------------------------------------------------------------------- gRPC


def test_grpc_with_the_official_stubs(server, models):
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "cartpole"
    req.model_spec.signature_name = "serving_default"
    req.inputs["observations"].CopyFrom(tf.make_tensor_proto(OBS))
    resp = predict.Predict(req, timeout=10)
    want = reference(models / "cartpole" / "2", OBS)
    assert resp.model_spec.version.value == 2
    assert tf.make_ndarray(resp.outputs["actions"]).tolist() == want["actions"].tolist()
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["q_values"]), want["q_values"],
                               rtol=1e-5)  # fmt: skip
    req.output_filter.append("actions")
    assert set(predict.Predict(req, timeout=10).outputs) == {"actions"}

    meta_req = get_model_metadata_pb2.GetModelMetadataRequest()
    meta_req.model_spec.name = "pg"
    meta_req.metadata_field.append("signature_def")
    meta = predict.GetModelMetadata(meta_req, timeout=10)
    sdm = get_model_metadata_pb2.SignatureDefMap()
    meta.metadata["signature_def"].Unpack(sdm)
    assert set(sdm.signature_def) == {"serving_default", "sample"}

    status = model_service_pb2_grpc.ModelServiceStub(channel)
    sreq = get_model_status_pb2.GetModelStatusRequest()
    sreq.model_spec.name = "cartpole"
    sresp = status.GetModelStatus(sreq, timeout=10)
    assert [(s.version, s.state) for s in sresp.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]

    with pytest.raises(grpc.RpcError) as e:
        req.model_spec.name = "nope"
        predict.Predict(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    req.model_spec.name = "cartpole"
    req.inputs["observations"].CopyFrom(tf.make_tensor_proto(OBS[:, :3]))
    with pytest.raises(grpc.RpcError) as e:
        predict.Predict(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "shape" in e.value.details()
    # One value standing for 10^10 elements: refused before anything is allocated.
    bomb = tf.make_tensor_proto(1.0, dtype=tf.float32, shape=[10**5, 10**5])
    assert len(bomb.float_val) == 1
    req.inputs["observations"].CopyFrom(bomb)
    with pytest.raises(grpc.RpcError) as e:
        predict.Predict(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "larger than" in e.value.details()


# ---------------------------------------------------------------------- fuzz


def test_fuzzed_malformed_requests_never_get_a_5xx(server, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("serve_fuzz", ROOT / "benchmarks/serve_fuzz.py")
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    result = fuzz.fuzz(server.base, "cartpole", 4, examples=300)
    assert result["requests"] == 300
    assert result["5xx"] == 0 and result["no_answer"] == 0 and not result["bad"], result
    assert result["serves_correctly_after"]
    assert result["by_status"].get("400", 0) > 50  # the bodies reached the request parser


# ---------------------------------------------------------------------- play vs eval


def test_play_through_the_server_matches_eval_of_the_same_version(server, models, tmp_path):
    play = run_cli("play", "--server", server.base, "--model", "cartpole", "--env", "CartPole-v1",
                   "--episodes", "4", "--out", str(tmp_path / "play"), cwd=tmp_path)  # fmt: skip
    assert play.returncode == 0, play.stderr[-2000:]
    ev = run_cli("eval", str(models / "cartpole" / "2"), "--episodes", "4",
                 "--out", str(tmp_path / "eval"), cwd=tmp_path)  # fmt: skip
    assert ev.returncode == 0, ev.stderr[-2000:]
    played = json.loads((tmp_path / "play" / "play.json").read_text())
    evaluated = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert played["returns"] == evaluated["returns"]  # same seeds, same deterministic policy
    assert played["source"].startswith(f"server {server.base}/v1/models/cartpole")
    video = run_cli("play", "--server", server.base, "--model", "cartpole", "--env",
                    "CartPole-v1", "--episodes", "1", "--render", "video", "--format", "gif",
                    "--out", str(tmp_path / "video"), cwd=tmp_path)  # fmt: skip
    assert video.returncode == 0, video.stderr[-2000:]
    (gif,) = (tmp_path / "video" / "videos").glob("*.gif")
    assert gif.read_bytes()[:6] == b"GIF89a"


def test_play_errors_are_one_line(server, tmp_path):
    r = run_cli("play", "--server", "http://127.0.0.1:9", "--model", "cartpole",
                "--env", "CartPole-v1", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "cannot connect" in r.stderr
    assert len(r.stderr.splitlines()) == 1  # and no TensorFlow start-up noise: play is a client
    r = run_cli("play", "--server", server.base, "--model", "nope", "--env", "CartPole-v1",
                cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "HTTP 404" in r.stderr and len(r.stderr.splitlines()) == 1


# ---------------------------------------------------------------------- versions


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


@pytest.fixture
def one_version(tmp_path) -> tuple[Path, Path]:
    base, staging = tmp_path / "models", tmp_path / "staging"
    export_tiny(base, "cartpole", seed=1)
    export_tiny(staging, "cartpole", seed=2)
    return base, staging / "cartpole" / "1"


def test_hot_reload_then_rollback_and_labels_through_the_config(one_version, tmp_path):
    base, v2_staged = one_version
    v1, v2 = reference(base / "cartpole" / "1", OBS), reference(v2_staged, OBS)
    cfg = tmp_path / "serving.yaml"
    cfg.write_text("models:\n  - name: cartpole\n")
    server = Server(base, "--config", str(cfg))
    hammer = Hammer(server)
    try:
        assert serves(server, v1)
        hammer.start()
        shutil.copytree(v2_staged, base / "cartpole" / ".incoming")
        os.rename(base / "cartpole" / ".incoming", base / "cartpole" / "2")  # as rlplat export
        server.wait_status(
            "/v1/models/cartpole/versions/2", lambda s: states(s) == {"2": "AVAILABLE"}
        )
        assert serves(server, v2)
        server.wait_status("/v1/models/cartpole", lambda s: states(s) == {"2": "AVAILABLE",
                                                                          "1": "END"})  # fmt: skip

        # Rollback: pin version 1 in the config (re-read on change, no restart).
        cfg.write_text("models:\n  - name: cartpole\n    version_policy: {specific: [1]}\n")
        server.wait_status("/v1/models/cartpole", lambda s: states(s).get("2") == "END"
                           and states(s).get("1") == "AVAILABLE")  # fmt: skip
        assert serves(server, v1)

        # Both, with labels: stable -> 1, canary -> 2; no label -> the latest.
        cfg.write_text(
            "models:\n  - name: cartpole\n    version_policy: {specific: [1, 2]}\n"
            "    labels: {stable: 1, canary: 2}\n"
        )
        server.wait_status("/v1/models/cartpole/labels/canary",
                           lambda s: states(s) == {"2": "AVAILABLE"})  # fmt: skip
        assert serves(server, v1, "/v1/models/cartpole/labels/stable:predict")
        assert serves(server, v2, "/v1/models/cartpole/labels/canary:predict")
        assert serves(server, v1, "/v1/models/cartpole/versions/1:predict")
        assert serves(server, v2)

        # A broken edit is reported in the log and changes nothing.
        cfg.write_text("models:\n  - name: cartpole\n    version_polcy: {latest: 1}\n")
        server.wait_log("did you mean 'version_policy'")
        assert serves(server, v1, "/v1/models/cartpole/labels/stable:predict")
        hammer.wait_ok(50)
    finally:
        hammer.stop()
        server.stop()
    assert hammer.ok >= 50 and hammer.failures == [], hammer.failures[:3]


def test_a_half_written_version_is_never_served(one_version):
    base, v2_staged = one_version
    v1, v2 = reference(base / "cartpole" / "1", OBS), reference(v2_staged, OBS)
    server = Server(base)
    hammer = Hammer(server)
    hammer.start()
    try:
        # A copy in progress: the graph file half there, no variables yet, then a pause.
        target = base / "cartpole" / "2"
        target.mkdir()
        pb = (v2_staged / "saved_model.pb").read_bytes()
        (target / "saved_model.pb").write_bytes(pb[: len(pb) // 2])
        status, _ = server.wait_status("/v1/models/cartpole", lambda s: states(s).get("2") == "END")
        failed = next(s for s in status["model_version_status"] if s["version"] == "2")
        assert failed["status"]["error_code"] != "OK" and failed["status"]["error_message"]
        assert states(status)["1"] == "AVAILABLE" and serves(server, v1)

        # The copy completes: the version is retried (its files changed) and takes over.
        shutil.copytree(v2_staged, target, dirs_exist_ok=True)
        server.wait_status("/v1/models/cartpole", lambda s: states(s).get("2") == "AVAILABLE")
        assert serves(server, v2)
        hammer.wait_ok(20)
    finally:
        hammer.stop()
        server.stop()
    assert hammer.ok >= 20 and hammer.failures == [], hammer.failures[:3]


# ---------------------------------------------------------------------- security, CLI


def test_bearer_token_on_rest_and_grpc(models):
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    server = Server(models, env={**user_env(), "RLPLAT_SERVE_TOKEN": "s3cret"})
    try:
        r = server.get("/v1/models/cartpole")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "token" in r.json()["error"]
        bad = {"Authorization": "Bearer nope"}
        assert server.get("/v1/models/cartpole", headers=bad).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert server.get("/v1/models/cartpole", headers=good).status_code == 200
        assert server.get("/metrics").status_code == 401
        stub = model_service_pb2_grpc.ModelServiceStub(
            grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        )
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = "cartpole"
        with pytest.raises(grpc.RpcError) as e:
            stub.GetModelStatus(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        ok = stub.GetModelStatus(req, timeout=10, metadata=[("authorization", "Bearer s3cret")])
        assert ok.model_version_status[0].version == 2
    finally:
        server.stop()


def test_binds_loopback_by_default(server):
    listening = Path("/proc/net/tcp").read_text()
    assert f"0100007F:{server.port:04X} 00000000:0000 0A" in listening  # 127.0.0.1, LISTEN


def test_model_paths_cannot_escape_the_base_path(tmp_path, one_version):
    base, _ = one_version
    outside = tmp_path / "outside"
    export_tiny(outside, "secret", seed=0)
    (base / "sneaky").symlink_to(outside / "secret")
    cfg = tmp_path / "escape.yaml"
    cfg.write_text("models:\n  - name: x\n    base_path: ../outside/secret\n")
    r = run_cli("serve", "--model-base-path", str(base), "--config", str(cfg), cwd=tmp_path)
    assert r.returncode == 2 and "outside the model base path" in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: models.x.base_path"), r.stderr
    server = Server(base)
    try:
        assert server.get("/v1/models/sneaky").status_code == 404
        assert server.get("/v1/models/cartpole").status_code == 200
        assert "not serving sneaky" in server.log.read_text()
    finally:
        server.stop()


def test_serve_cli_errors_are_one_line(tmp_path, server):
    cases = [
        (["--model-base-path", str(tmp_path / "nope")], "not a directory"),
        (["--port", str(server.port)], "cannot listen"),
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("batching: {max_batch_sise: 8}\n")
    cases.append((["--config", str(bad)], "did you mean 'max_batch_size'"))
    for args, words in cases:
        r = run_cli("serve", "--model-base-path", str(tmp_path), *args, cwd=tmp_path, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert f"error: {words}" in r.stderr or words in r.stderr.splitlines()[-1], r.stderr


# ---------------------------------------------------------------------- batching


def test_concurrent_requests_are_batched_and_split_back():
    from rlplat.serving.batching import Batcher
    from rlplat.serving.config import BatchingConfig
    from rlplat.serving.errors import Unavailable

    calls: list[int] = []

    def run(arrays):
        calls.append(len(arrays[0]))
        if np.any(arrays[0] < 0):
            raise ValueError("negative")
        return [arrays[0] * 2, arrays[0].sum(axis=1)]

    async def scenario(cfg: BatchingConfig, n: int, rows: int = 1):
        batcher = Batcher(run, cfg, on_batch=None)
        xs = [np.full((rows, 3), i, np.float32) for i in range(n)]
        return xs, await asyncio.gather(*(batcher.submit([x]) for x in xs), return_exceptions=True)

    xs, outs = asyncio.run(scenario(BatchingConfig(max_batch_size=64), 10))
    assert calls == [10]  # one session call for ten concurrent requests
    for x, (double, total) in zip(xs, outs, strict=True):
        np.testing.assert_array_equal(double, x * 2)
        np.testing.assert_array_equal(total, x.sum(axis=1))
    calls.clear()
    asyncio.run(scenario(BatchingConfig(max_batch_size=4), 10))
    assert calls == [4, 4, 2]
    calls.clear()
    _, outs = asyncio.run(scenario(BatchingConfig(max_batch_size=64, max_enqueued=6), 10))
    assert sum(isinstance(o, Unavailable) for o in outs) == 4  # the queue is bounded
    assert calls == [6]
    calls.clear()
    asyncio.run(scenario(BatchingConfig(max_batch_size=64, batch_timeout_micros=20_000), 3, 2))
    assert calls == [6]

    async def one_bad():
        batcher = Batcher(run, BatchingConfig(), on_batch=None)
        good, bad = np.ones((1, 3), np.float32), -np.ones((1, 3), np.float32)
        return await asyncio.gather(batcher.submit([good]), batcher.submit([bad]),
                                    return_exceptions=True)  # fmt: skip

    assert all(isinstance(o, ValueError) for o in asyncio.run(one_bad()))


# ---------------------------------------------------------------------- Ray Serve


@pytest.mark.slow
def test_ray_serve_replicas_serve_the_same_api(models, tmp_path):
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    port, grpc_port = free_port(), free_port()
    log = tmp_path / "ray-serve.log"
    proc = subprocess.Popen(
        [RLPLAT, "serve", "--ray", "--replicas", "2", "--model-base-path", str(models),
         "--port", str(port), "--grpc-port", str(grpc_port)],
        stdout=subprocess.DEVNULL, stderr=log.open("w"), env=user_env(), cwd=tmp_path,
        start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while "REST on" not in log.read_text():
            assert proc.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        assert "2 replica(s)" in log.read_text()
        want = reference(models / "cartpole" / "2", OBS)
        session = requests.Session()
        for _ in range(20):  # spread over both replicas by Ray Serve's router
            r = session.post(f"{base}/v1/models/cartpole:predict",
                             data=json.dumps({"instances": OBS.tolist()}), timeout=30)  # fmt: skip
            assert r.status_code == 200, r.text
            np.testing.assert_allclose([p["q_values"] for p in r.json()["predictions"]],
                                       want["q_values"], rtol=1e-5)  # fmt: skip
        assert states(session.get(f"{base}/v1/models/cartpole", timeout=30).json()) == {
            "2": "AVAILABLE"}  # fmt: skip
        r = session.post(f"{base}/v1/models/cartpole:predict", data=b"{", timeout=30)
        assert r.status_code == 400 and "JSON" in r.json()["error"]

        # gRPC through Ray Serve's proxy, with the stock TF Serving stubs.
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "cartpole"
        req.inputs["observations"].CopyFrom(tf.make_tensor_proto(OBS))
        resp = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(req, timeout=30)
        np.testing.assert_allclose(tf.make_ndarray(resp.outputs["q_values"]), want["q_values"],
                                   rtol=1e-5)  # fmt: skip
        sreq = get_model_status_pb2.GetModelStatusRequest()
        sreq.model_spec.name = "cartpole"
        sresp = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(sreq, timeout=30)
        assert [s.version for s in sresp.model_version_status] == [2]
        req.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as e:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(req, timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in e.value.details()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]


# ---------------------------------------------------------------------- the HTTP front end


def raw_http(port: int, data: bytes, read_until_close: bool = True, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        if not read_until_close:
            return s.recv(65536)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_http_front_end_edges(server):
    body = json.dumps({"instances": [[0.0] * 4]}).encode()
    predict = (b"POST /v1/models/cartpole:predict HTTP/1.1\r\nHost: x\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
    status = b"GET /v1/models/cartpole HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    # Pipelined: three requests in one write, three answers in order, then close.
    out = raw_http(server.port, predict + predict + status)
    assert out.count(b"HTTP/1.1 200 OK") == 3
    assert out.index(b'"predictions"') < out.rindex(b'"predictions"') < out.index(b"AVAILABLE")
    # HTTP/1.0 without keep-alive: one answer, then the server closes.
    out = raw_http(server.port, b"GET /v1/models/cartpole HTTP/1.0\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in out
    # Chunked request body (decoded by the parser).
    chunked = (b"POST /v1/models/cartpole:predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")  # fmt: skip
    chunked += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    assert raw_http(server.port, chunked).startswith(b"HTTP/1.1 200 OK")
    # Expect: 100-continue gets its interim answer before the body is sent.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(b"POST /v1/models/cartpole:predict HTTP/1.1\r\nHost: x\r\n"
                  b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))  # fmt: skip
        assert s.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        s.sendall(body)
        assert s.recv(65536).startswith(b"HTTP/1.1 200 OK")
    # Not HTTP, a body announced over the limit, endless headers: an error, then close.
    assert raw_http(server.port, b"\x16\x03\x01 hello\r\n\r\n").startswith(b"HTTP/1.1 400")
    big = b"POST /v1/models/cartpole:predict HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n"
    out = raw_http(server.port, big)
    assert out.startswith(b"HTTP/1.1 413") and b"larger than" in out
    headers = b"".join(b"X-%d: %s\r\n" % (i, b"y" * 1000) for i in range(80))
    out = raw_http(server.port, b"GET /v1/models/cartpole HTTP/1.1\r\n" + headers + b"\r\n")
    assert out.startswith(b"HTTP/1.1 431")
    # HEAD gets headers only; the server still answers normally afterwards.
    out = raw_http(server.port, b"HEAD /v1/models/cartpole HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 405") and out.endswith(b"\r\n\r\n")
    assert server.get("/v1/models/cartpole").status_code == 200


def test_the_uvicorn_front_end_answers_the_same(models, server):
    uv = Server(models, "--http", "uvicorn")
    try:
        for path in ("/v1/models/cartpole", "/v1/models/pg/metadata", "/v1/models/nope"):
            lean, asgi = server.get(path), uv.get(path)
            assert (asgi.status_code, asgi.json()) == (lean.status_code, lean.json())
        for body in ({"instances": OBS.tolist()}, {"inputs": OBS.tolist()}, b"{", {}):
            lean = server.post("/v1/models/cartpole:predict", body)
            asgi = uv.post("/v1/models/cartpole:predict", body)
            assert (asgi.status_code, asgi.json()) == (lean.status_code, lean.json())
    finally:
        uv.stop()
