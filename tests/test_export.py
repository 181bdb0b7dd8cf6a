from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import tiny_config, user_env

from rlplat import agents, config, envs
from rlplat.export import export_saved_model, versions

# Runs in a fresh interpreter that imports TensorFlow alone (Keras 3 default, no rlplat,
# no TF-Agents, no tensorflow-probability), as a TF Serving-style consumer would.
LOADER = """
import json, sys
import numpy as np, tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
obs = np.array(json.loads(sys.argv[2]), np.float32)
out = m.signatures["serving_default"](observations=tf.constant(obs))
print(json.dumps({
    "actions": out["actions"].numpy().tolist(),
    "q_values": out["q_values"].numpy().tolist(),
    "action_dtype": out["actions"].dtype.name,
    "loaded": sorted(k for k in ("rlplat", "agents", "envs", "tf_agents",
                                 "tensorflow_probability") if k in sys.modules),
}))
"""


def test_export_round_trips_in_a_plain_tensorflow_process(tmp_path: Path):
    cfg = config.parse(tiny_config())
    agent = agents.build(cfg.agent, envs.spaces(cfg.env))
    path = export_saved_model(agent.serving_module(), tmp_path, "tiny", {"name": "tiny"})
    assert path == tmp_path / "tiny" / "1"
    assert (path / "saved_model.pb").is_file() and (path / "variables").is_dir()
    assert json.loads((path / "assets.extra" / "rlplat.json").read_text()) == {"name": "tiny"}

    obs = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    env = user_env()
    out = subprocess.run(
        [sys.executable, "-c", LOADER, str(path), json.dumps(obs.tolist())],
        capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    served = json.loads(out.stdout.strip().splitlines()[-1])
    assert served["loaded"] == []
    assert served["action_dtype"] == "int64"
    q = agent.q_values(obs)
    np.testing.assert_allclose(served["q_values"], q, rtol=1e-5, atol=1e-6)
    assert served["actions"] == q.argmax(1).tolist()


def test_saved_model_cli_shows_the_signature(tmp_path: Path):
    cfg = config.parse(tiny_config())
    agent = agents.build(cfg.agent, envs.spaces(cfg.env))
    path = export_saved_model(agent.serving_module(), tmp_path, "tiny", {})
    cli = Path(sys.executable).with_name("saved_model_cli")
    out = subprocess.run(
        [str(cli), "show", "--dir", str(path), "--all"], capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "signature_def['serving_default']" in text
    assert "inputs['observations']" in text and "shape: (-1, 4)" in text
    assert "outputs['actions']" in text and "DT_INT64" in text
    assert "outputs['q_values']" in text and "shape: (-1, 2)" in text


def test_versions_are_numbered_and_temp_dirs_are_never_versions(tmp_path: Path):
    cfg = config.parse(tiny_config())
    agent = agents.build(cfg.agent, envs.spaces(cfg.env))
    model_dir = tmp_path / "tiny"
    (model_dir / ".tmp-export-999").mkdir(parents=True)  # a crashed export's leftovers
    (model_dir / "notes").mkdir()
    first = export_saved_model(agent.serving_module(), tmp_path, "tiny", {})
    second = export_saved_model(agent.serving_module(), tmp_path, "tiny", {})
    assert (first.name, second.name) == ("1", "2")
    assert versions(model_dir) == [1, 2]
    assert not any(p.name.startswith(".tmp-export-") and p.name != ".tmp-export-999"
                   for p in model_dir.iterdir())  # fmt: skip
