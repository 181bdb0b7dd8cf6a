"""rlplat serve: bearer token, loopback binding, paths confined to the base path, one-line
CLI errors."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from conftest import run_cli, user_env

from serving.helpers import (
    Server,
    export_tiny,
    raw_http,
)


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
        # Two Authorization values are refused whichever comes first, on both protocols.
        for pair in (("s3cret", "nope"), ("nope", "s3cret"), ("s3cret", "s3cret")):
            two = [("authorization", f"Bearer {t}") for t in pair]
            with pytest.raises(grpc.RpcError) as e:
                stub.GetModelStatus(req, timeout=10, metadata=two)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, pair
            head = b"GET /v1/models/cartpole HTTP/1.1\r\nConnection: close\r\n"
            both = b"".join(b"Authorization: Bearer %s\r\n" % t.encode() for t in pair)
            assert raw_http(server.port, head + both + b"\r\n").startswith(b"HTTP/1.1 401"), pair
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
        (["--port", str(server.port)], f"cannot listen on 127.0.0.1:{server.port} (REST)"),
        (
            ["--port", "0", "--grpc-port", str(server.grpc_port)],
            f"cannot listen on 127.0.0.1:{server.grpc_port} (gRPC)",
        ),
    ]
    bad = tmp_path / "bad.yaml"
    bad.write_text("batching: {max_batch_sise: 8}\n")
    cases.append((["--config", str(bad)], "did you mean 'max_batch_size'"))
    for args, words in cases:
        r = run_cli("serve", "--model-base-path", str(tmp_path), *args, cwd=tmp_path, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert f"error: {words}" in r.stderr or words in r.stderr.splitlines()[-1], r.stderr
        if "cannot listen" in words:  # checked before anything loads: nothing else printed
            assert r.stderr.strip() == f"error: {words}: Address already in use", r.stderr
