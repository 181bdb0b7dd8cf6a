from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import run_cli, tiny_config
from pydantic import ValidationError

from rlplat import config
from rlplat.errors import ConfigError


def errors_of(data: dict) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        config.parse(data)
    return str(exc.value).splitlines()


def test_valid_config_is_frozen_and_typed():
    cfg = config.parse(tiny_config())
    assert cfg.agent.type == "dqn"
    assert cfg.agent.network.hidden == [16]
    assert cfg.train.env_steps == 1200
    with pytest.raises(ValidationError):
        cfg.seed = 3  # frozen


def test_range_error_names_the_dotted_field():
    data = tiny_config(agent={"learning_rate": -1})
    assert errors_of(data) == ["agent.learning_rate: must be > 0, got -1"]


def test_unknown_key_gets_a_suggestion_at_every_level():
    assert errors_of({**tiny_config(), "trian": {}}) == [
        "trian: unknown key; did you mean 'train'?"
    ]
    data = tiny_config(train={"batchsize": 3})
    assert errors_of(data) == ["train.batchsize: unknown key; did you mean 'batch_size'?"]
    data = tiny_config(agent={"learnin_rate": 0.1})
    assert errors_of(data) == ["agent.learnin_rate: unknown key; did you mean 'learning_rate'?"]


def test_unknown_agent_type_and_wrong_types():
    data = tiny_config(agent={"type": "dqnn"})
    assert errors_of(data) == ["agent.type: unknown value 'dqnn'; did you mean 'dqn'?"]
    data = tiny_config(train={"env_steps": "lots"})
    (line,) = errors_of(data)
    assert line.startswith("train.env_steps: input should be a valid integer")
    assert line.endswith("got 'lots'")


def test_several_errors_are_all_reported_one_line_each():
    data = tiny_config(agent={"gamma": 2}, train={"batch_size": 0})
    assert sorted(errors_of(data)) == [
        "agent.gamma: must be <= 1, got 2",
        "train.batch_size: must be > 0, got 0",
    ]


def test_off_policy_agent_requires_replay():
    data = tiny_config()
    data["replay"] = None
    assert errors_of(data) == ["replay: agent type 'dqn' is off-policy and needs one"]


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    cfg = config.load(path, ["agent.learning_rate=3e-4", "agent.network.hidden=[8, 8]"])
    assert cfg.agent.learning_rate == pytest.approx(3e-4)
    assert cfg.agent.network.hidden == [8, 8]
    with pytest.raises(ConfigError, match=r"^agent.learning_rate: must be > 0, got -1$"):
        config.load(path, ["agent.learning_rate=-1"])
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        config.load(path, ["agent.learning_rat=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        config.load(path, ["agent.learning_rate"])
    with pytest.raises(ConfigError, match="'seed' is 0, not a mapping"):
        config.load(path, ["seed.x=1"])


def test_missing_file_and_bad_yaml(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        config.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+:\d+: invalid YAML"):
        config.load(bad)
    # a key given twice is refused where the second one is (PyYAML keeps the last silently)
    twice = tmp_path / "twice.yaml"
    twice.write_text("name: a\nseed: 1\ntrain:\n  env_steps: 10\n  env_steps: 20\n")
    with pytest.raises(ConfigError, match=r"twice.yaml:5:3: invalid YAML: duplicate key"):
        config.load(twice)
    merged = tmp_path / "merged.yaml"  # a YAML merge may repeat a key: that is its purpose
    merged.write_text(yaml.safe_dump(tiny_config()) + "base: &b {x: 1}\nother:\n  <<: *b\n  x: 2\n")
    assert config.read_yaml_mapping(merged, "f")["other"] == {"x": 2}


def test_every_shipped_experiment_validates():
    root = Path(__file__).resolve().parent.parent / "experiments"
    files = sorted(root.glob("*.yaml")) + sorted(root.glob("variants/*.yaml"))
    assert files
    for path in files:
        cfg = config.load(path)
        assert cfg.name == path.stem
        config.check_env(cfg)  # what `rlplat train FILE --dry-run` also checks


def test_every_shipped_experiment_guards_its_export_with_a_threshold():
    """A shortened run (`--set train.env_steps=...`) of a ready experiment must not export
    a policy below its bar as the newest version `rlplat serve` would pick up."""
    root = Path(__file__).resolve().parent.parent / "experiments"
    for path in sorted(root.glob("*.yaml")):
        cfg = config.load(path)
        assert cfg.eval.threshold is not None, path.name
        assert cfg.export.when == "if_threshold", path.name


def test_cli_config_error_is_one_line_exit_2_no_traceback(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_config(agent={"learning_rate": -1})))
    out = run_cli("train", str(path), cwd=tmp_path, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: agent.learning_rate: must be > 0, got -1"]
    assert "Traceback" not in out.stdout + out.stderr
    out = run_cli("train", str(path), "--set", "agent.learning_rate=1e-3", "--set", "env.idd=x",
                  cwd=tmp_path, timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.strip() == "error: env.idd: unknown key; did you mean 'id'?"
    assert not (tmp_path / "runs").exists()  # nothing written for a rejected config


def test_collect_and_learner_fields_are_checked():
    data = tiny_config()
    data["collect"] = {"num_actors": -1, "weight_sync_every": 0}
    data["learner"] = {"device": "tpu"}
    assert errors_of(data) == [
        "collect.num_actors: must be >= 0, got -1",
        "collect.weight_sync_every: must be > 0, got 0",
        "learner.device: input should be 'auto', 'cpu' or 'gpu', got 'tpu'",
    ]
