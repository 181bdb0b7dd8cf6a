"""Issue 15, end to end on a real ALE game: DQN from pixels (the CNN inferred from the
observations) with 2 Ray collectors and the frame-sharing replay → a uint8 export → `rlplat
eval` of the export plays full games.

The gRPC Predict of uint8 pixels in `tensor_content` bytes, answered as the SavedModel
does, is checked against a Pong export already behind a server in tests/test_play_grpc.py
(test_a_uint8_predict_in_tensor_content_bytes_answers_as_the_saved_model)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, tiny_config

PONG = {"id": "ALE/Pong-v5", "atari": {"backend": "python"}}


def _pong_config() -> dict:
    cfg = tiny_config(
        name="pong",
        env=PONG,
        collect={"num_actors": 2, "envs_per_actor": 2, "rollout_length": 32},
        replay={"capacity": 3000, "frames": True},
        train={"env_steps": 1024, "learning_starts": 256, "train_every": 128,
               "updates_per_train": 4, "batch_size": 16, "log_every": 512},
        eval={"every_env_steps": 4096, "episodes": 1, "final_episodes": 20},
        checkpoint={"every_env_steps": 512, "keep": 2},
    )  # fmt: skip
    del cfg["agent"]["network"]  # inferred from the uint8 [84, 84, 4] observations: the CNN
    return cfg


@pytest.mark.slow
def test_pong_dqn_ray_collectors_frame_replay_export_and_eval(tmp_path: Path):
    import tensorflow as tf

    (tmp_path / "pong.yaml").write_text(yaml.safe_dump(_pong_config()))
    train = run_cli("train", "pong.yaml", cwd=tmp_path, timeout=900)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "2 Ray actors" in train.stderr + train.stdout
    (run,) = (tmp_path / "runs" / "pong").glob("*-s0")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] >= 1024
    (ckpt,) = sorted(run.glob("checkpoints/ckpt-*"))[-1:]
    assert json.loads((ckpt / "replay.json").read_text())["kind"] == "frames"
    model = tmp_path / "models" / "pong" / "1"
    sig = tf.saved_model.load(str(model)).signatures["serving_default"]
    assert sig.structured_input_signature[1]["observations"].dtype == tf.uint8

    # Full games, the game's own score: an untrained agent loses a whole Pong game (one
    # side reaches 21), far more than the one point a life-loss or clipped episode shows.
    out = tmp_path / "eval"
    evaluated = run_cli("eval", str(model), "--episodes", "2", "--out", str(out), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    record = json.loads((out / "eval.json").read_text())
    returns = record["returns"]
    assert len(returns) == 2
    assert all(-21 <= r <= -10 and r == int(r) for r in returns), returns
