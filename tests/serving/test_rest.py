"""rlplat serve: TF Serving REST conformance, the metrics endpoint, fuzzed requests and the
lean HTTP front end."""

from __future__ import annotations

import importlib.util
import json
import socket

import numpy as np
import pytest
import requests
from conftest import ROOT

from serving.helpers import (
    OBS,
    RayServer,
    Server,
    raw_http,
    reference,
    series,
    states,
)


@pytest.fixture(scope="module")
def server(either_server):
    """Every test here runs against one `rlplat serve` and against `--ray` replicas."""
    return either_server


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
        ("POST", "/v1/models/cartpole:predict", {"instances": [[True, 1.4, 0, 0]]}, 400, "mixed"),
        ("POST", "/v1/models/cartpole:predict", {"inputs": [[True] * 4]}, 400, "bool"),
        ("POST", "/v1/models/cartpole:predict", {"instances": [[3.5e38, 0, 0, 0]]}, 400, "range"),
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
    text = server.metrics()
    ok = {"api": "rest", "arm": "", "code": "200", "method": "predict", "model": "cartpole"}
    assert series(text, "rlplat_serving_requests_total", **ok, version="2") >= 1
    assert "rlplat_serving_request_latency_seconds_bucket" in text
    assert series(text, "rlplat_serving_batch_size_sum", model="cartpole",
                  signature="serving_default", version="2") > 0  # fmt: skip
    replicas = 2 if isinstance(server, RayServer) else 1
    assert series(text, "rlplat_serving_model_version_available", model="cartpole",
                  version="2") == replicas  # fmt: skip
    assert series(text, "rlplat_serving_model_loads_total", model="pg", result="ok") == replicas
    assert 'model="(unknown)"' in text  # unknown names are not a label-cardinality attack
    assert server.get("/metrics").status_code == 200
    if replicas > 1:  # every replica's series, labelled by replica
        assert series(text, "rlplat_serving_replica_up", replica="0") == 1
        assert series(text, "rlplat_serving_replica_up", replica="1") == 1


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


def test_the_header_limit_counts_each_byte_once(server):
    """The default 64 KiB of headers in all, whether one long header or many short ones: a header
    that spans several reads is counted once, when it ends (not also per read)."""
    get = b"GET /v1/models/cartpole HTTP/1.1\r\n"
    for headers, status in (
        (b"X-Long: %s\r\n" % (b"y" * 60_000), b"200"),
        (b"".join(b"X-%d: %s\r\n" % (i, b"y" * 1000) for i in range(60)), b"200"),
        (b"X-Long: %s\r\n" % (b"y" * 70_000), b"431"),
        (b"".join(b"X-%d: %s\r\n" % (i, b"y" * 1000) for i in range(70)), b"431"),
    ):
        out = raw_http(server.port, get + headers + b"Connection: close\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 " + status), (len(headers), out[:60])
    assert server.get("/v1/models/cartpole").status_code == 200
