"""rlplat serve under big requests and at saturation: the rows-per-request cap (REST and
gRPC), big bodies decoded off the event loop with bounded memory, and the frozen heap that
keeps full garbage collections off the request path (issue 13, items 6 and 10)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import orjson
import pytest
import requests

from rlplat.serving.config import ServingConfig
from rlplat.serving.decode import Offload, decode, split_predict
from rlplat.serving.errors import InvalidArgument, Unavailable
from rlplat.serving.heap import HeapFreezer
from serving.helpers import PPO, Server, export_tiny

CAP = 100
PREDICT = "/v1/models/pg:predict"


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Server:
    base = tmp_path_factory.mktemp("limits") / "models"
    export_tiny(base, "pg", seed=0, agent=PPO)  # CartPole: 4 numbers per row
    cfg = base.parent / "serving.yaml"
    cfg.write_text(f"max_rows_per_request: {CAP}\n")
    s = Server(base, "--config", str(cfg))
    yield s
    s.stop()


def rows(n: int) -> list:
    return np.zeros((n, 4), np.float32).tolist()


@pytest.mark.parametrize(
    "body",
    [
        lambda n: {"instances": rows(n)},
        lambda n: {"instances": [{"observations": r} for r in rows(n)]},
        lambda n: {"inputs": rows(n)},
        lambda n: {"inputs": {"observations": rows(n)}},
    ],
    ids=["rows", "named-rows", "columnar", "named-columnar"],
)
def test_rest_refuses_more_rows_than_the_cap_with_a_400_naming_it(served, body):
    ok = served.post(PREDICT, body(CAP))
    assert ok.status_code == 200, ok.text
    out = ok.json()
    assert len(out["predictions"] if "predictions" in out else out["outputs"]["actions"]) == CAP
    r = served.post(PREDICT, body(CAP + 1))
    assert r.status_code == 400, r.text
    assert "max_rows_per_request" in r.json()["error"] and str(CAP) in r.json()["error"]


def test_grpc_refuses_a_declared_shape_over_the_cap_before_allocating(served):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}")
    )
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "pg"
    req.inputs["observations"].CopyFrom(tf.make_tensor_proto(np.zeros((CAP, 4), np.float32)))
    assert tf.make_ndarray(stub.Predict(req, timeout=10).outputs["actions"]).shape == (CAP,)
    # The request: 54 bytes, one float_val standing for 262144 x 4 (4 MiB).
    bomb = tf.make_tensor_proto(1.0, dtype=tf.float32, shape=[262144, 4])
    assert len(bomb.float_val) == 1
    req.inputs["observations"].CopyFrom(bomb)
    with pytest.raises(grpc.RpcError) as e:
        stub.Predict(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_rows_per_request" in e.value.details()


def test_the_rows_cap_has_a_default_and_is_checked_on_the_lists():
    cap = ServingConfig().max_rows_per_request
    assert 1 <= cap <= 65536  # bounded by default, not only when configured
    split = split_predict({"instances": rows(cap)}, cap)
    assert split.values[None].shape == (cap, 4)
    for body in ({"instances": rows(cap + 1)}, {"inputs": {"x": rows(cap + 1)}}):
        with pytest.raises(InvalidArgument, match="max_rows_per_request"):
            split_predict(body, cap)


def test_worker_decoding_matches_inline_and_is_bounded():
    raw = orjson.dumps({"instances": rows(3), "signature_name": "sample"})
    offload = Offload(workers=1)

    async def scenario() -> list:
        return await asyncio.gather(
            *(offload.decode(raw, CAP) for _ in range(5)), return_exceptions=True
        )

    try:
        results = asyncio.run(scenario())
    finally:
        offload.close()
    inline = decode(raw, CAP)
    for split in results[:4]:
        assert (split.signature_name, split.rows) == ("sample", True)
        np.testing.assert_array_equal(split.values[None], inline.values[None])
    assert isinstance(results[4], Unavailable)  # more than 4 waiting per worker: 503


def big_body(limit: int = 4 * 1024 * 1024) -> bytes:
    """Just under the default body limit: ~230k rows of four numbers (over the rows cap, but
    the whole body must be parsed to know)."""
    row = b"[0,0,0,0],"
    return b'{"instances":[' + row * ((limit - 64) // len(row)) + b"[0,0,0,0]]}"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_big_bodies_do_not_stall_other_clients_or_grow_the_server(served):
    """The issue: one 4 MiB body stalled every client for 2.7 s; four drove RSS up ~1 GB."""
    body = big_body()
    small_latencies: list[float] = []
    peak_rss = [0.0]
    stop = threading.Event()

    def small_client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                t = time.perf_counter()
                r = session.post(served.base + PREDICT, data=b'{"instances": [[0, 0, 0, 0]]}',
                                 timeout=30)  # fmt: skip
                small_latencies.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text

    def sample_rss() -> None:
        while not stop.is_set():
            peak_rss[0] = max(peak_rss[0], rss_mb(served.proc.pid))
            time.sleep(0.01)

    def big(out: list) -> None:
        t = time.perf_counter()
        r = requests.post(served.base + PREDICT, data=body, timeout=120)
        out.append((r.status_code, time.perf_counter() - t))

    assert served.post(PREDICT, body).status_code == 400  # (starts the decoder processes)
    before = rss_mb(served.proc.pid)
    client, sampler = threading.Thread(target=small_client), threading.Thread(target=sample_rss)
    client.start()
    sampler.start()
    time.sleep(0.3)
    results: list = []
    bigs = [threading.Thread(target=big, args=(results,)) for _ in range(4)]
    for t in bigs:
        t.start()
    for t in bigs:
        t.join()
    stop.set()
    client.join()
    sampler.join()
    assert [status for status, _ in results] == [400] * 4
    slowest_big = max(seconds for _, seconds in results)
    # Relative, not absolute: inline, a small request waits out a whole big parse.
    assert max(small_latencies) < slowest_big / 3, (max(small_latencies), slowest_big)
    assert peak_rss[0] - before < 100, (before, peak_rss[0])  # the big ones are parsed elsewhere


def test_bodies_of_closed_connections_are_freed_at_once(served):
    """Each connection's parser and protocol form a cycle: a body kept on it lived until the
    next full collection (four clients posting 4 MiB bodies grew RSS by ~450 MB)."""
    body = big_body()
    peak, stop = [0.0], threading.Event()

    def sample_rss() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mb(served.proc.pid))
            time.sleep(0.01)

    def post(n: int) -> None:
        for _ in range(n):  # a new connection each time, closed after the answer
            r = requests.post(served.base + "/v1/models/pg:classify", data=body, timeout=60)
            assert r.status_code == 400

    before = rss_mb(served.proc.pid)
    sampler = threading.Thread(target=sample_rss)
    sampler.start()
    posters = [threading.Thread(target=post, args=(25,)) for _ in range(4)]
    for t in posters:
        t.start()
    for t in posters:
        t.join()
    stop.set()
    sampler.join()
    assert peak[0] - before < 100, (before, peak[0])


class _Manager:
    def __init__(self) -> None:
        self.states = {1: "AVAILABLE"}

    def names(self) -> list[str]:
        return ["m"]

    def status(self, name: str) -> list:
        return [(v, type("S", (), {"state": s})) for v, s in sorted(self.states.items())]


def test_the_heap_is_frozen_after_loading_and_again_after_each_model_change():
    manager = _Manager()
    freezer = HeapFreezer(manager)
    try:
        assert freezer.check() and gc.get_freeze_count() > 1000
        assert not freezer.check()  # nothing changed: no full collection
        manager.states[2] = "LOADING"
        assert not freezer.check()  # a load under way: wait for it
        manager.states = {1: "END", 2: "AVAILABLE"}
        assert freezer.check()
    finally:
        gc.unfreeze()
