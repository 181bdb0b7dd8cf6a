"""Issue 15, end to end on a real ALE game: DQN from pixels with 2 Ray collectors and the
frame-sharing replay → export → `rlplat serve` → a uint8 gRPC Predict with the tensor in
`tensor_content` bytes; and `rlplat eval` of the export plays full games."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import grpc
import numpy as np
import pytest
import yaml
from conftest import run_cli, tiny_config
from serving.helpers import Server

PONG = {"id": "ALE/Pong-v5", "atari": {"backend": "python"}}


def _pong_config() -> dict:
    cfg = tiny_config(
        name="pong",
        env=PONG,
        collect={"num_actors": 2, "envs_per_actor": 2, "rollout_length": 32},
        replay={"capacity": 3000, "frames": True},
        train={"env_steps": 2048, "learning_starts": 512, "train_every": 128,
               "updates_per_train": 4, "batch_size": 16, "log_every": 512},
        eval={"every_env_steps": 4096, "episodes": 1, "final_episodes": 20},
        checkpoint={"every_env_steps": 1024, "keep": 2},
    )  # fmt: skip
    del cfg["agent"]["network"]  # inferred from the uint8 [84, 84, 4] observations: the CNN
    return cfg


def _predict_uint8(port: int, obs: np.ndarray):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    req = predict_pb2.PredictRequest()
    req.model_spec.name = "pong"
    req.model_spec.signature_name = "serving_default"
    # uint8 numpy -> DT_UINT8, raw bytes in tensor_content: 28,224 per observation
    req.inputs["observations"].CopyFrom(tf.make_tensor_proto(obs))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        return stub.Predict(req, timeout=60)


@pytest.mark.slow
def test_pong_dqn_ray_collectors_export_serve_grpc_uint8_and_eval(tmp_path: Path):
    import tensorflow as tf

    (tmp_path / "pong.yaml").write_text(yaml.safe_dump(_pong_config()))
    train = run_cli("train", "pong.yaml", cwd=tmp_path, timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "2 Ray actors" in train.stderr + train.stdout
    model = tmp_path / "models" / "pong" / "1"
    sig = tf.saved_model.load(str(model)).signatures["serving_default"]
    assert sig.structured_input_signature[1]["observations"].dtype == tf.uint8
    num_actions = 6  # Pong's minimal action set

    server = Server(tmp_path / "models")
    try:
        rng = np.random.default_rng(0)
        obs = rng.integers(0, 256, (3, 84, 84, 4), dtype=np.uint8)
        resp = _predict_uint8(server.grpc_port, obs)
        actions = tf.make_ndarray(resp.outputs["actions"])
        q_values = tf.make_ndarray(resp.outputs["q_values"])
        assert actions.shape == (3,) and q_values.shape == (3, num_actions)
        want = sig(observations=tf.constant(obs))
        np.testing.assert_array_equal(actions, want["actions"].numpy())
        np.testing.assert_allclose(q_values, want["q_values"].numpy(), rtol=1e-4, atol=1e-5)
    finally:
        os.killpg(server.proc.pid, signal.SIGTERM)
        server.proc.wait(timeout=60)

    # Full games, the game's own score: an untrained agent loses a whole Pong game (one
    # side reaches 21), far more than the one point a life-loss or clipped episode shows.
    out = tmp_path / "eval"
    evaluated = run_cli("eval", str(model), "--episodes", "2", "--out", str(out), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    record = json.loads((out / "eval.json").read_text())
    returns = record["returns"]
    assert len(returns) == 2
    assert all(-21 <= r <= -10 and r == int(r) for r in returns), returns
