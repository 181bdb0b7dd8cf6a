"""rlplat serve: TF Serving gRPC with the official stubs."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from serving.helpers import (
    OBS,
    reference,
)


@pytest.fixture(scope="module")
def server(either_server):
    """Every test here runs against one `rlplat serve` and against `--ray` replicas."""
    return either_server


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
    # A tensor's dtype must be the input's (TF Serving refuses a cast): float32 only here.
    for dtype in (np.uint8, np.float64):
        req.inputs["observations"].CopyFrom(tf.make_tensor_proto(OBS.astype(dtype)))
        with pytest.raises(grpc.RpcError) as e:
            predict.Predict(req, timeout=10)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, dtype
        assert "expects float32" in e.value.details(), e.value.details()
    # One value standing for 10^10 elements: refused before anything is allocated.
    bomb = tf.make_tensor_proto(1.0, dtype=tf.float32, shape=[10**5, 10**5])
    assert len(bomb.float_val) == 1
    req.inputs["observations"].CopyFrom(bomb)
    with pytest.raises(grpc.RpcError) as e:
        predict.Predict(req, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "larger than" in e.value.details()


def test_grpc_overload_is_refused_retryably_never_cancelled(server):
    """Thousands of RPCs at once on one channel: beyond the streams a connection may have
    in flight the server refuses new ones (UNAVAILABLE, which clients retry); none ends
    CANCELLED, which a client must not retry. Below that, every one is answered."""
    import collections

    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    from rlplat.serving.grpc_api import MAX_CONCURRENT_RPCS

    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    )
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "cartpole"
    req.inputs["observations"].CopyFrom(tf.make_tensor_proto(OBS))
    stub.Predict(req, timeout=30)  # connected

    def burst(n: int) -> collections.Counter:
        futures = [stub.Predict.future(req, timeout=60) for _ in range(n)]
        codes: collections.Counter = collections.Counter()
        for future in futures:
            codes[future.code().name] += 1
        return codes

    codes = burst(5000)
    assert set(codes) <= {"OK", "UNAVAILABLE", "RESOURCE_EXHAUSTED"}, codes
    assert codes["OK"] >= MAX_CONCURRENT_RPCS // 2, codes
    assert burst(MAX_CONCURRENT_RPCS // 2) == {"OK": MAX_CONCURRENT_RPCS // 2}
