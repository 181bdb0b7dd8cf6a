"""`rlplat play` over gRPC (issue 15): image observations go to the server as a uint8
TensorProto in `tensor_content` bytes, and the actions are the SavedModel's own."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from conftest import run_cli, tiny_config
from serving.helpers import Server
from typer.testing import CliRunner

from rlplat import agents, config, envs
from rlplat.cli import app
from rlplat.errors import UserError
from rlplat.evaluate import run_episodes
from rlplat.export import export_saved_model
from rlplat.play import grpc_policy, grpc_target, play_env, protocol_for
from rlplat.policies import load_policy
from rlplat.run_export import export_metadata

# A short capped game: the python backend counts the no-op frames too, so episodes last
# a little under 40 agent steps.
PONG = {"id": "ALE/Pong-v5", "atari": {}, "max_episode_steps": 40}


def test_protocol_defaults_to_grpc_for_images_only():
    image = gym.spaces.Box(0, 255, (84, 84, 4), np.uint8)
    floats = gym.spaces.Box(-1.0, 1.0, (8,), np.float32)
    assert protocol_for("auto", image) == "grpc"
    assert protocol_for("auto", floats) == "rest"
    assert protocol_for("rest", image) == "rest" and protocol_for("grpc", floats) == "grpc"
    assert grpc_target("http://10.1.2.3:8501", None) == "10.1.2.3:8500"
    assert grpc_target("http://[::1]:8501/", None) == "[::1]:8500"
    assert grpc_target("http://localhost:8501", "localhost:9000") == "localhost:9000"


def test_env_given_by_id_is_the_recorded_one_with_its_preprocessing(tmp_path: Path):
    meta = tmp_path / "models" / "pong" / "3" / "assets.extra" / "rlplat.json"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"env": PONG}))
    env_cfg, recorded = play_env("ALE/Pong-v5", tmp_path / "models", "pong")
    assert recorded and env_cfg.atari is not None and env_cfg.max_episode_steps == 40
    assert envs.spaces(env_cfg).observation.shape == (84, 84, 4)  # not ALE's raw screen
    bare = play_env("CartPole-v1", tmp_path / "models", "pong")
    assert bare == (config.EnvConfig(id="CartPole-v1"), False)
    assert play_env("ALE/Pong-v5", tmp_path / "none", "pong")[1] is False


def test_a_model_or_version_that_is_not_there_is_named_not_the_env(tmp_path: Path):
    from rlplat.errors import UserError

    for name, version in (("lunarlander_pg", 1), ("lunarlander_pg", 2), ("cartpole_dqn", 1)):
        meta = tmp_path / "models" / name / str(version) / "assets.extra" / "rlplat.json"
        meta.parent.mkdir(parents=True)
        meta.write_text(json.dumps({"env": {"id": "CartPole-v1"}}))
    models = tmp_path / "models"
    with pytest.raises(UserError, match=r"--model: no exported model 'lunarlandr_pg' in .*"
                       r"did you mean 'lunarlander_pg'\?"):  # fmt: skip
        play_env(None, models, "lunarlandr_pg")
    with pytest.raises(UserError, match="models there: cartpole_dqn, lunarlander_pg"):
        play_env(None, models, "pong")
    with pytest.raises(UserError, match=r"--version: model 'lunarlander_pg' has no version 7 "
                       r".*\(versions: 1, 2\)"):  # fmt: skip
        play_env(None, models, "lunarlander_pg", 7)
    assert play_env(None, models, "lunarlander_pg", 2) == (config.EnvConfig(id="CartPole-v1"), True)
    out = run_cli("play", "--model", "lunarlandr_pg", "--episodes", "1", cwd=tmp_path)
    assert out.returncode == 2 and "--env" not in out.stderr.splitlines()[-1].split(":")[1]
    assert "did you mean 'lunarlander_pg'?" in out.stderr, out.stderr


def test_play_over_grpc_with_a_dead_server_is_one_line(tmp_path: Path):
    out = run_cli("play", "--model", "pong", "--env", "CartPole-v1", "--protocol", "grpc",
                  "--grpc", "127.0.0.1:9", "--episodes", "1", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines() == [
        "error: grpc 127.0.0.1:9: cannot connect (is `rlplat serve` running there? its gRPC "
        "port is --grpc-port, 8500 by default: --grpc HOST:PORT; or --protocol rest)"
    ]


@pytest.fixture(scope="module")
def pong_server(tmp_path_factory):
    """A tiny untrained Nature-CNN DQN for Pong (network inferred from the pixels),
    exported as a run exports it, behind `rlplat serve`."""
    base = tmp_path_factory.mktemp("play_grpc") / "models"
    raw = tiny_config(name="pong", env=PONG, replay={"capacity": 1000, "frames": True})
    del raw["agent"]["network"]
    cfg = config.parse(raw)
    spaces = envs.spaces(cfg.env)
    import tensorflow as tf

    # The initial weights, fixed: with these the CNN's actions differ between random stacks.
    tf.keras.utils.set_random_seed(0)
    agent = agents.build(cfg.agent, spaces, seed=0)
    export_saved_model(agent.serving_module(), base, "pong",
                       export_metadata(cfg, spaces, base, {"env_steps": 0}))  # fmt: skip
    server = Server(base)
    yield server, base, cfg.env
    server.stop()


def test_play_over_grpc_acts_as_the_saved_model_and_films_the_game(pong_server, tmp_path):
    server, base, env_cfg = pong_server
    target = f"127.0.0.1:{server.grpc_port}"
    local = load_policy(base / "pong" / "1")  # the SavedModel, in this process
    remote = grpc_policy(target, "pong", env_cfg)
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def both(obs: np.ndarray) -> np.ndarray:
        assert obs.dtype == np.uint8 and obs.shape[1:] == (84, 84, 4)
        actions = remote.act(obs)
        seen.append((actions, local.act(obs)))
        return actions

    result = run_episodes(both, env_cfg, episodes=2, seed=0)
    assert len(seen) == result.lengths.max() > 20
    for served, in_process in seen:
        np.testing.assert_array_equal(served, in_process)
    # An untrained CNN may act alike on all of Pong's near-identical frames; on random
    # stacks it does not, so agreement there says the bytes arrived as they were sent.
    noise = np.random.default_rng(0).integers(0, 256, (64, 84, 84, 4), dtype=np.uint8)
    served = remote.act(noise)
    np.testing.assert_array_equal(served, local.act(noise))
    assert len(set(served.tolist())) > 1

    # The command: gRPC chosen for the pixels, with a video of the colour screen.
    out = CliRunner().invoke(app, [
        "play", "--model", "pong", "--model-base-path", str(base), "--server", server.base,
        "--grpc", target, "--episodes", "1", "--render", "video", "--out", str(tmp_path),
    ])  # fmt: skip
    assert out.exit_code == 0, out.stderr
    record = json.loads((tmp_path / "play.json").read_text())
    assert (record["protocol"], record["server"]) == ("grpc", target)
    assert record["versions_answered"] == [1]  # the answer's model_spec says which
    evaluated = run_episodes(local.act, env_cfg, episodes=1, seed=0)
    assert record["returns"] == evaluated.returns.tolist()
    assert record["lengths"] == evaluated.lengths.tolist()
    import imageio_ffmpeg

    (video,) = record["videos"]
    reader = imageio_ffmpeg.read_frames(video)
    width, height = next(reader)["size"]
    assert width == 160 and height > 210  # ALE's screen and the score strip
    assert sum(1 for _ in reader) == evaluated.lengths[0] + 1


def test_a_uint8_predict_in_tensor_content_bytes_answers_as_the_saved_model(pong_server):
    """TF Serving's own stubs, as any client sends pixels: a uint8 numpy array becomes a
    DT_UINT8 TensorProto with its raw bytes in `tensor_content` (28,224 per observation);
    the served actions and Q-values are the SavedModel's (moved here from the Pong run of
    tests/test_atari_e2e.py: the same export path, without a second server)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    server, base, _ = pong_server
    obs = np.random.default_rng(0).integers(0, 256, (3, 84, 84, 4), dtype=np.uint8)
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "pong"
    req.model_spec.signature_name = "serving_default"
    req.inputs["observations"].CopyFrom(tf.make_tensor_proto(obs))
    sent = req.inputs["observations"]
    assert sent.dtype == tf.uint8.as_datatype_enum and len(sent.tensor_content) == 3 * 28224
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        resp = stub.Predict(req, timeout=60)
    actions = tf.make_ndarray(resp.outputs["actions"])
    q_values = tf.make_ndarray(resp.outputs["q_values"])
    assert actions.shape == (3,) and q_values.shape == (3, 6)  # Pong's minimal action set
    sig = tf.saved_model.load(str(base / "pong" / "1")).signatures["serving_default"]
    assert sig.structured_input_signature[1]["observations"].dtype == tf.uint8
    want = sig(observations=tf.constant(obs))
    np.testing.assert_array_equal(actions, want["actions"].numpy())
    np.testing.assert_allclose(q_values, want["q_values"].numpy(), rtol=1e-4, atol=1e-5)


def test_play_over_grpc_errors_name_the_model_and_the_shape(pong_server):
    server, _, env_cfg = pong_server
    target = f"127.0.0.1:{server.grpc_port}"
    with pytest.raises(UserError, match=r"^grpc .* model 'nope': gRPC NOT_FOUND: "):
        grpc_policy(target, "nope", env_cfg)
    cartpole = config.EnvConfig(id="CartPole-v1")
    policy = grpc_policy(target, "pong", cartpole)
    with pytest.raises(UserError, match=r"model 'pong': gRPC INVALID_ARGUMENT: .*shape") as err:
        policy.act(np.zeros((1, 4), np.uint8))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"model 'pong': gRPC INVALID_ARGUMENT: .*uint8"):
        policy.act(np.zeros((1, 84, 84, 4), np.float32))
