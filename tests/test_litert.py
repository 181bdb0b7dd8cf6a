"""Policies as LiteRT flatbuffers (rlplat/litert.py, rlplat/litert_export.py): every network
type converts and acts as its SavedModel does, int8 quantization is calibrated and takes
quantized input, the parity report, the interpreter-only play path, and bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from conftest import run_cli, tiny_config, user_env

from rlplat import agents, litert, litert_export
from rlplat.agents.configs import DQNConfig, MLPConfig, PPOConfig
from rlplat.envs import EnvSpaces
from rlplat.errors import UserError
from rlplat.export import export_saved_model

VECTOR = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
PIXELS = gym.spaces.Box(0, 255, (52, 44, 4), np.uint8)
DISCRETE, BOX = gym.spaces.Discrete(3), gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
MLP = MLPConfig(hidden=[16, 8])

CASES = {  # every network type: the MLP Q-net, dueling, the Nature CNN, continuous PPO
    "dqn": (DQNConfig(type="dqn", network=MLP, jit_compile=False), VECTOR, DISCRETE),
    "dqn_dueling": (
        DQNConfig(type="dqn", network=MLP, dueling=True, jit_compile=False),
        VECTOR,
        DISCRETE,
    ),  # fmt: skip
    "cnn_dqn": (DQNConfig(type="dqn", jit_compile=False), PIXELS, DISCRETE),
    "ppo_box_norm": (
        PPOConfig(type="ppo", network=MLP, normalize_observations=True),
        VECTOR,
        BOX,
    ),  # fmt: skip
}


def observations(space: gym.spaces.Box, n: int = 16) -> np.ndarray:
    rng = np.random.default_rng(0)
    if space.dtype == np.uint8:
        return rng.integers(0, 256, (n, *space.shape), dtype=np.uint8)
    return rng.uniform(-1, 1, (n, *space.shape)).astype(np.float32)


def saved_model(tmp_path: Path, case: str) -> tuple[Path, agents.Agent]:
    cfg, obs_space, action_space = CASES[case]
    agent = agents.build(cfg, EnvSpaces(obs_space, action_space), seed=0)
    return export_saved_model(agent.serving_module(), tmp_path, case, {"name": case}), agent


@pytest.mark.parametrize("case", list(CASES))
def test_every_network_converts_and_acts_as_its_saved_model(tmp_path: Path, case: str):
    import tensorflow as tf

    version, _ = saved_model(tmp_path, case)
    out = tmp_path / f"{case}.tflite"
    out.write_bytes(litert_export.convert(version, "none"))
    model = litert.load(out)
    obs = observations(CASES[case][1])
    expected = tf.saved_model.load(str(version)).signatures["serving_default"](
        observations=tf.constant(obs)
    )
    got = model.outputs(obs)
    assert set(got) == set(expected)  # actions and the logits / Q-values / mean
    for key, value in expected.items():
        np.testing.assert_allclose(got[key], value.numpy(), rtol=1e-4, atol=1e-4, err_msg=key)


def test_int8_is_calibrated_on_given_states_and_takes_quantized_input(tmp_path: Path):
    version, agent = saved_model(tmp_path, "dqn")
    states = observations(VECTOR, 200)
    out = tmp_path / "int8.tflite"
    out.write_bytes(litert_export.convert(version, "int8", states))
    model = litert.load(out)
    assert model.input_dtype == np.int8 and model.scale > 0
    # The input scale covers the calibration states' range: [-1, 1] in 256 steps.
    assert 1.0 / 128 <= model.scale <= 2.5 / 128
    q = model.quantize(states)
    np.testing.assert_allclose((q.astype(np.float32) - model.zero_point) * model.scale, states,
                               atol=model.scale)  # fmt: skip
    agree = np.mean(model.act(states) == agent.act(states, explore=False))
    assert agree > 0.8, agree
    wide = DQNConfig(type="dqn", network=MLPConfig(hidden=[128, 128]), jit_compile=False)
    agent = agents.build(wide, EnvSpaces(VECTOR, DISCRETE), seed=0)
    big = export_saved_model(agent.serving_module(), tmp_path, "wide", {"name": "wide"})
    full = len(litert_export.convert(big, "none"))  # float32: ~4 bytes per weight
    for mode, most in (("float16", 0.6), ("dynamic", 0.35), ("int8", 0.35)):
        size = len(litert_export.convert(big, mode, observations(VECTOR, 50)))
        assert size < most * full, (mode, size, full)
    with pytest.raises(ValueError, match="calibration states"):
        litert_export.convert(version, "int8")


class TwoWayCorridor(gym.Env):
    """A short deterministic episode (seeded start): enough to count agreement on."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (6,), np.float32)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(-1, 1, 6).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.uniform(-1, 1, 6).astype(np.float32)
        return obs, float(action == 1), False, self.t >= 10, {}


def test_export_writes_the_file_its_sidecar_and_a_parity_report(tmp_path: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    version, _ = saved_model(tmp_path, "dqn")
    meta = {"name": "dqn", "env": {"id": "test_litert:TwoWayCorridor"}}
    (version / "assets.extra" / "rlplat.json").write_text(json.dumps(meta))
    lines: list[str] = []
    path, report = litert_export.export(version, "none", episodes=3, say=lines.append)
    assert path == tmp_path / "dqn" / "litert" / "dqn-v1-none.tflite"
    side = json.loads(litert.sidecar(path).read_text())
    assert side["env"] == meta["env"] and side["quantize"] == "none"
    assert side["source"] == str(version.resolve()) and side["input"]["scale"] == 0.0
    assert report.action_agreement == 1.0 and report.within_interval
    assert report.paired_difference == {"mean": 0.0, "low": 0.0, "high": 0.0}
    assert report.size_bytes == path.stat().st_size and report.latency_ms["median_ms"] > 0
    assert side["parity"]["episodes"] == 3 and side["parity"]["action_agreement"] == 1.0
    assert lines[0].startswith("parity: ")
    path8, report8 = litert_export.export(version, "int8", episodes=3)
    assert json.loads(litert.sidecar(path8).read_text())["calibration"]["states"] > 0
    assert report8.quantize == "int8" and 0.0 <= report8.action_agreement <= 1.0


def test_a_failed_parity_says_by_how_much_and_why():
    interval = {"mean": 245.7, "low": 237.9, "high": 253.4}
    report = litert_export.Parity(
        quantize="int8", episodes=20, action_agreement=0.762, saved_model_return=interval,
        litert_return={"mean": 234.3, "low": 205.4, "high": 263.2},
        paired_difference={"mean": -11.4, "low": -40.0, "high": 17.2}, size_bytes=87_720,
        saved_model_bytes=300_000, latency_ms={"median_ms": 0.01, "p99_ms": 0.03},
        within_interval=False,
    )  # fmt: skip
    first, why, *_ = litert_export.describe(report).splitlines()
    assert first.startswith("PARITY FAILED") and "234.3 against [237.9, 253.4]" in first
    assert "another action on 24% of the steps" in why and "--quantize dynamic" in why


def test_bad_inputs_are_one_line_errors(tmp_path: Path):
    with pytest.raises(UserError, match="no such LiteRT model file"):
        litert.load(tmp_path / "missing.tflite")
    (tmp_path / "bad.tflite").write_bytes(b"not a flatbuffer")
    with pytest.raises(UserError, match="not a LiteRT policy"):
        litert.load(tmp_path / "bad.tflite")
    with pytest.raises(UserError, match="--quantize"):
        litert_export.export(tmp_path, "int4")
    with pytest.raises(UserError, match="neither a run directory"):
        litert_export.export_path(tmp_path, "none")


def test_an_unsupported_op_is_a_one_line_error(tmp_path: Path):
    import tensorflow as tf

    class Strings(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, "observations")])
        def serving_default(self, observations):
            text = tf.strings.as_string(observations)  # not a LiteRT builtin op
            return {"actions": tf.strings.length(text)[:, 0]}

    version = export_saved_model(Strings(), tmp_path, "strings", {"name": "strings"})
    with pytest.raises(UserError, match=r"^.*strings/1: LiteRT conversion \(none\) failed: "):
        litert_export.convert(version, "none")


PLAY_WITHOUT_TF = """
import sys
from rlplat.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    heavy = [m for m in ("tensorflow", "tf_agents", "keras", "tf_keras") if m in sys.modules]
    print("IMPORTED", heavy)
"""


@pytest.mark.slow
def test_a_run_exported_to_litert_evaluates_and_plays_without_tensorflow(tmp_path: Path):
    """`rlplat export RUN --format litert`, `rlplat eval X.tflite`, and `rlplat play
    --litert X.tflite`, whose process never imports TensorFlow."""
    cfg = tiny_config(train={"env_steps": 600}, eval={"every_env_steps": 600, "episodes": 2},
                      export={"when": "never"})  # fmt: skip
    (tmp_path / "x.yaml").write_text(yaml.safe_dump(cfg))
    assert run_cli("train", "x.yaml", "--run-dir", "run", cwd=tmp_path).returncode == 0
    out = run_cli("export", "run", "--format", "litert", "--quantize", "dynamic", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    tflite = tmp_path / "models" / "tiny" / "litert" / "tiny-v1-dynamic.tflite"
    assert tmp_path / out.stdout.strip().splitlines()[-1] == tflite
    assert "action agreement" in out.stderr and (tmp_path / "models/tiny/1").is_dir()
    out = run_cli("eval", str(tflite), "--episodes", "3", cwd=tmp_path)
    assert out.returncode == 0 and "return over 3 episodes" in out.stderr, out.stderr[-2000:]
    play = subprocess.run(
        [sys.executable, "-c", PLAY_WITHOUT_TF, "play", "--litert", str(tflite), "--episodes",
         "2", "--out", str(tmp_path / "play")],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=user_env(),
    )  # fmt: skip
    assert play.returncode == 0, play.stderr[-2000:]
    assert "IMPORTED []" in play.stdout and (tmp_path / "play" / "play.json").is_file()
    record = json.loads((tmp_path / "play" / "play.json").read_text())
    assert record["litert"] == str(tflite)
    # The device-side snippet of docs/how-to/small-devices.md, as written, on this file.
    page = (Path(__file__).parents[1] / "docs/how-to/small-devices.md").read_text()
    snippet = page.split("```python\n", 1)[1].split("```", 1)[0]
    snippet = snippet.replace('"lunarlander_pg-v1-int8.tflite"', repr(str(tflite)))
    snippet = snippet.replace("np.zeros((1, 8)", "np.zeros((1, 4)")  # CartPole's 4 features
    device = subprocess.run(
        [sys.executable, "-c", snippet + "\nprint(action)"],
        capture_output=True, text=True, timeout=120, env=user_env(),
    )  # fmt: skip
    assert device.returncode == 0 and device.stdout.strip() in ("0", "1"), device.stderr
    bad = run_cli("play", "--litert", "missing.tflite", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "missing.tflite" in bad.stderr
    both = run_cli("export", "run", "--quantize", "int8", cwd=tmp_path)
    assert both.returncode == 2 and "--format litert" in both.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.yaml").write_text((tmp_path / "x.yaml").read_text())
    none = run_cli("export", "empty", "--format", "litert", cwd=tmp_path)
    assert none.returncode == 2 and none.stderr.count("\n") == 1, none.stderr
