"""Batch-1 latency of a pixel model served by `rlplat serve`: REST `:predict` with one uint8
[1, 84, 84, 4] observation as JSON (28,224 numbers) against gRPC Predict with the same
tensor as raw `tensor_content` bytes, next to the in-process SavedModel call; one JSON line.

    .venv/bin/python benchmarks/serve_pixels.py --requests 200

The model is an untrained Nature-CNN DQN for ALE/Pong-v5's spaces (latency does not depend
on the weights), exported the way a run exports. Clients are sequential, on one keep-alive
connection / channel each, interleaved over `--rounds` rounds (this machine's speed
drifts); each answer is checked (HTTP 200 / gRPC OK, one action). `rest_json` and
`grpc_tensor_content` include what their client pays to encode the request (JSON of
28,224 numbers with `requests`; a proto around raw bytes); `rest_json_preencoded` is the
server's share of REST (one pre-encoded write on a TCP_NODELAY socket).
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
from _server import running_server

import rlplat  # noqa: F401  (environment set-up before TensorFlow)

ENV = {"id": "ALE/Pong-v5", "atari": {}}


def export_model(base: Path) -> Path:
    from rlplat import agents, config, envs
    from rlplat.export import export_saved_model
    from rlplat.run_export import export_metadata

    cfg = config.parse(
        {"name": "pixels", "env": ENV, "agent": {"type": "dqn", "dueling": True},
         "replay": {"capacity": 1000, "frames": True}, "train": {"env_steps": 1}}
    )  # fmt: skip
    spaces = envs.spaces(cfg.env)
    agent = agents.build(cfg.agent, spaces, seed=0)
    meta = export_metadata(cfg, spaces, base, {"env_steps": 0})
    return export_saved_model(agent.serving_module(), base, "pixels", meta)


def grpc_client(port: int):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

    def call(obs: np.ndarray) -> None:
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "pixels"
        # uint8 numpy -> DT_UINT8 with the array's bytes in tensor_content (as rlplat play)
        req.inputs["observations"].CopyFrom(tf.make_tensor_proto(obs))
        resp = stub.Predict(req, timeout=30)
        assert len(resp.outputs["actions"].int64_val or resp.outputs["actions"].tensor_content)

    return call, channel


def rest_client(url: str):
    session = requests.Session()

    def call(obs: np.ndarray) -> None:
        body = json.dumps({"instances": obs.tolist()})
        r = session.post(f"{url}/v1/models/pixels:predict", data=body, timeout=30)
        assert r.status_code == 200 and len(r.json()["predictions"]) == 1, r.text[:200]

    return call, session


def raw_rest_client(url: str, obs: np.ndarray):
    """The server's share: the body encoded once up front, sent in one write on a
    TCP_NODELAY socket (http.client writes headers and a large body separately)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    body = json.dumps({"instances": obs.tolist()}).encode()
    head = f"POST /v1/models/pixels:predict HTTP/1.1\r\nHost: {host}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    request = head.encode() + body

    def call(_: np.ndarray) -> None:
        sock.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, rest = buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200"), head[:100]
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(rest) < length:
            rest += sock.recv(65536)
        assert len(json.loads(rest)["predictions"]) == 1

    return call, sock


def timed(call, obs: np.ndarray, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        call(obs)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def summary(ms: list[float]) -> dict:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "over_100ms": int(np.sum(np.asarray(ms) > 100)), "n": len(ms)}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200, help="per client per round")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    import tensorflow as tf

    obs = np.random.default_rng(0).integers(0, 256, (1, 84, 84, 4), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        version = export_model(Path(tmp))
        sig = tf.saved_model.load(str(version)).signatures["serving_default"]
        inproc = lambda o: sig(observations=tf.constant(o))  # noqa: E731
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            gport = s.getsockname()[1]
        with running_server(Path(tmp), "pixels", "--grpc-port", str(gport)) as url:
            clients = {
                "rest_json": rest_client(url)[0],
                "rest_json_preencoded": raw_rest_client(url, obs)[0],
                "grpc_tensor_content": grpc_client(gport)[0],
                "in_process": inproc,
            }
            times: dict[str, list[float]] = {k: [] for k in clients}
            for call in clients.values():
                timed(call, obs, 10)  # warm-up
            for _ in range(args.rounds):
                for name, call in clients.items():
                    times[name] += timed(call, obs, args.requests)
    body = len(json.dumps({"instances": obs.tolist()}))
    print(json.dumps({
        "benchmark": "serve_pixels", "observation": "uint8 [1, 84, 84, 4]",
        "rest_json_body_bytes": body, "grpc_tensor_bytes": obs.nbytes,
        **{k: summary(v) for k, v in times.items()},
    }))  # fmt: skip


if __name__ == "__main__":
    main()
