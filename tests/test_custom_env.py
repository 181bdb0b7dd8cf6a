"""`env.id: module:Class` with the module in the working directory, as a user writes it."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import RLPLAT, tiny_config, user_env

from rlplat import envs
from rlplat.config import EnvConfig
from rlplat.errors import ConfigError

make_mod = importlib.import_module("rlplat.envs.make")  # the module: `envs.make` is the function

ENV_SOURCE = """
from gymnasium.envs.classic_control import CartPoleEnv


class MyCartPole(CartPoleEnv):
    '''CartPole under another name, in a file of the user's project.'''
"""


@pytest.fixture
def isolated_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a resolution adds to sys.path and the recorded dirs ends with the test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(make_mod, "_MODULE_DIRS", [])
    monkeypatch.setattr(make_mod, "_RESOLVED", set())


def unique_module(folder: Path) -> str:
    name = f"userenvs_{uuid.uuid4().hex[:8]}"  # a fresh name: sys.modules keeps old ones
    (folder / f"{name}.py").write_text(ENV_SOURCE)
    return name


def test_module_in_the_working_directory_is_found_and_shipped(
    isolated_path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    name = unique_module(tmp_path)
    monkeypatch.chdir(tmp_path)
    env = envs.make(EnvConfig(id=f"{name}:MyCartPole"))
    assert type(env.unwrapped).__name__ == "MyCartPole"
    assert envs.module_dir(f"{name}:MyCartPole") == str(tmp_path.resolve())
    assert [m.__name__ for m in envs.user_modules()] == [name]  # what Ray workers get
    assert envs.module_dir("CartPole-v1") is None


def test_a_package_in_the_working_directory_is_recorded_and_shipped_whole(
    isolated_path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    package = f"userpkg_{uuid.uuid4().hex[:8]}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "cartpoles.py").write_text(ENV_SOURCE)
    monkeypatch.chdir(tmp_path)
    env_id = f"{package}.cartpoles:MyCartPole"
    assert envs.spaces(EnvConfig(id=env_id)).observation.shape == (4,)
    assert envs.module_dir(env_id) == str(tmp_path.resolve())  # the package's parent
    assert [m.__name__ for m in envs.user_modules()] == [package]


def test_recorded_directory_is_searched_from_another_cwd(
    isolated_path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    (tmp_path / "project").mkdir()
    (tmp_path / "elsewhere").mkdir()
    name = unique_module(tmp_path / "project")
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(ConfigError, match=rf"cannot import module '{name}' .*elsewhere"):
        envs.spaces(EnvConfig(id=f"{name}:MyCartPole"))
    envs.add_module_dir(tmp_path / "project")  # what a run's run.json or a model records
    assert envs.spaces(EnvConfig(id=f"{name}:MyCartPole")).observation.shape == (4,)


def test_a_missing_import_inside_the_module_is_named(
    isolated_path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    name = f"userenvs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="No module named 'no_such_dependency_xyz'"):
        envs.make(EnvConfig(id=f"{name}:Env"))


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [RLPLAT, *args], cwd=cwd, capture_output=True, text=True, env=user_env(), timeout=400
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_ray_collectors_resume_and_eval_find_the_module_from_any_cwd(tmp_path: Path):
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "myenvs.py").write_text(ENV_SOURCE)
    data = tiny_config(
        env={"id": "myenvs:MyCartPole"},
        collect={"num_actors": 2, "envs_per_actor": 2, "rollout_length": 16},
        train={"env_steps": 400, "learning_starts": 100},
        eval={"every_env_steps": 400, "episodes": 1},
        checkpoint={"every_env_steps": 400},
    )
    (project / "exp.yaml").write_text(yaml.safe_dump(data))
    run("train", "exp.yaml", "--run-dir", "run", cwd=project)  # no PYTHONPATH=. needed
    record = json.loads((project / "run" / "run.json").read_text())
    assert record["env_module_dir"] == str(project.resolve())
    # From another directory: Ray collectors (a fresh local Ray, whose workers start in
    # this cwd) still get the module, and the resumed run trains on.
    run("train", "--resume", str(project / "run"), "--set", "train.env_steps=800", cwd=elsewhere)
    summary = json.loads((project / "run" / "summary.json").read_text())
    assert summary["env_steps"] >= 800
    run("eval", str(project / "run"), "--episodes", "2", "--out", "e1", cwd=elsewhere)
    run("eval", str(project / "models" / "tiny"), "--episodes", "2", "--out", "e2", cwd=elsewhere)
    assert (elsewhere / "e1" / "eval.json").is_file() and (elsewhere / "e2" / "eval.json").is_file()
