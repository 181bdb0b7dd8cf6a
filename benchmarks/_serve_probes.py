"""Fixed probes of `rlplat serve` with the answer each must get (benchmarks/serve_fuzz.py
runs them after the fuzz): values a cast would change or JSON booleans among numbers, a
tensor of another dtype over gRPC, headers just under and over the 64 KiB limit (one
long header, or many short ones), and thousands of gRPC calls at once on one channel
(refused retryably beyond the server's limit, never CANCELLED). Two Authorization values,
the shadow, the fleet's ports and a truncated serving.yaml need a token, a split, a fleet
or a config: tests/serving covers those."""

from __future__ import annotations

import collections
import json
import socket


def _http(port: int, data: bytes) -> str:
    """The status code of a raw HTTP/1.1 exchange ("closed" if none came)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    reply = b"".join(chunks)
    return reply.split(b" ")[1].decode() if reply.startswith(b"HTTP/1.1 ") else "closed"


def _post(model: str, body: object) -> bytes:
    data = json.dumps(body).encode()
    return (b"POST /v1/models/%s:predict HTTP/1.1\r\nConnection: close\r\nContent-Length: %d"
            b"\r\n\r\n%s" % (model.encode(), len(data), data))  # fmt: skip


def rest_probes(port: int, model: str, obs_dim: int) -> dict[str, tuple[str, str]]:
    """name -> (expected status, status got)."""
    get = b"GET /v1/models/%s HTTP/1.1\r\nConnection: close\r\n" % model.encode()
    many = b"".join(b"X-%d: %s\r\n" % (i, b"y" * 1000) for i in range(70))
    cases = {
        "json_bool_among_floats": (_post(model, {"instances": [[True] + [1.4] * (obs_dim - 1)]}),
                                   "400"),
        "float32_overflow": (_post(model, {"instances": [[3.5e38] + [0.0] * (obs_dim - 1)]}),
                             "400"),
        "one_header_60000_bytes": (get + b"X-Long: %s\r\n\r\n" % (b"y" * 60_000), "200"),
        "one_header_70000_bytes": (get + b"X-Long: %s\r\n\r\n" % (b"y" * 70_000), "431"),
        "70_headers_of_1000_bytes": (get + many + b"\r\n", "431"),
    }  # fmt: skip
    return {name: (want, _http(port, data)) for name, (data, want) in cases.items()}


def grpc_probes(grpc_port: int, model: str, obs_dim: int) -> dict[str, object]:
    import grpc
    import numpy as np
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = model
    obs = np.zeros((4, obs_dim), np.float32)
    req.inputs["observations"].CopyFrom(tf.make_tensor_proto(obs.astype(np.uint8)))
    try:
        stub.Predict(req, timeout=30)
        uint8 = "OK"
    except grpc.RpcError as exc:
        uint8 = exc.code().name
    req.inputs["observations"].CopyFrom(tf.make_tensor_proto(obs))
    stub.Predict(req, timeout=30)
    futures = [stub.Predict.future(req, timeout=60) for _ in range(5000)]
    codes = collections.Counter(f.code().name for f in futures)
    channel.close()
    return {
        "uint8_tensor_for_float_input": ("INVALID_ARGUMENT", uint8),
        "overload_5000_calls_on_one_channel": dict(codes),
        "overload_never_cancelled": set(codes) <= {"OK", "UNAVAILABLE", "RESOURCE_EXHAUSTED"},
    }


def probes(port: int, grpc_port: int, model: str, obs_dim: int) -> dict[str, object]:
    rest = rest_probes(port, model, obs_dim)
    grpc_ = grpc_probes(grpc_port, model, obs_dim)
    pairs = [v for v in (*rest.values(), *grpc_.values()) if isinstance(v, tuple)]
    as_expected = all(want == got for want, got in pairs) and grpc_["overload_never_cancelled"]
    return {"rest": rest, "grpc": grpc_, "all_as_expected": as_expected}
