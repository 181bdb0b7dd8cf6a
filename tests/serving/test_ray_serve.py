"""rlplat serve: rlplat serve --ray: the same APIs, and the same A/B traffic split, from
Ray Serve replicas."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import grpc
import numpy as np
import pytest
import requests
from conftest import RLPLAT, free_port, user_env

from serving.helpers import (
    OBS,
    reference,
    states,
)


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
    cfg = tmp_path / "serving.yaml"
    cfg.write_text("models:\n  - name: cartpole\n    version_policy: {specific: [1, 2]}\n"
                   "    traffic: {1: 50, 2: 50}\n")  # fmt: skip
    proc = subprocess.Popen(
        [RLPLAT, "serve", "--ray", "--replicas", "2", "--model-base-path", str(models),
         "--port", str(port), "--grpc-port", str(grpc_port), "--config", str(cfg)],
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
        wants = {v: reference(models / "cartpole" / str(v), OBS) for v in (1, 2)}
        want = wants[2]
        session = requests.Session()
        keyed = {}
        for i in range(40):  # spread over both replicas by Ray Serve's router; each key twice
            r = session.post(f"{base}/v1/models/cartpole:predict",
                             data=json.dumps({"instances": OBS.tolist()}), timeout=30,
                             headers={"X-Rlplat-Route": f"ep-{i // 2}"})  # fmt: skip
            assert r.status_code == 200, r.text
            version = int(r.headers["X-Rlplat-Version"])
            assert keyed.setdefault(f"ep-{i // 2}", version) == version  # sticky on any replica
            np.testing.assert_allclose([p["q_values"] for p in r.json()["predictions"]],
                                       wants[version]["q_values"], rtol=1e-5)  # fmt: skip
        assert set(keyed.values()) == {1, 2}
        assert states(session.get(f"{base}/v1/models/cartpole", timeout=30).json()) == {
            "1": "AVAILABLE", "2": "AVAILABLE"}  # fmt: skip
        r = session.post(f"{base}/v1/models/cartpole:predict", data=b"{", timeout=30)
        assert r.status_code == 400 and "JSON" in r.json()["error"]

        # gRPC through Ray Serve's proxy, with the stock TF Serving stubs.
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "cartpole"
        req.inputs["observations"].CopyFrom(tf.make_tensor_proto(OBS))
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        for key, version in list(keyed.items())[:10]:  # the same arm as over REST
            resp = stub.Predict(req, timeout=30, metadata=[("x-rlplat-route", key)])
            assert resp.model_spec.version.value == version
        req.model_spec.version.value = 2  # a version named: no split
        resp = stub.Predict(req, timeout=30, metadata=[("x-rlplat-route", "ep-0")])
        assert resp.model_spec.version.value == 2
        np.testing.assert_allclose(tf.make_ndarray(resp.outputs["q_values"]), want["q_values"],
                                   rtol=1e-5)  # fmt: skip
        sreq = get_model_status_pb2.GetModelStatusRequest()
        sreq.model_spec.name = "cartpole"
        sresp = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(sreq, timeout=30)
        assert [s.version for s in sresp.model_version_status] == [2, 1]
        req.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as e:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(req, timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND and "nope" in e.value.details()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=90) == 0, log.read_text()[-3000:]
