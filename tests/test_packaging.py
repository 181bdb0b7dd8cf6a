"""rlplat is one top-level package: the folders agents/ and envs/ are rlplat.agents and
rlplat.envs, installed (wheel), editable or from a source checkout, so a user's own
`agents` or `envs` package is neither shadowed nor shadows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, tiny_config, user_env

# The user's own packages: the names that rlplat's own folders had as top-level packages.
AGENTS, ENVS = "agents", "envs"
CHECK_IMPORTS = f"""
import json, sys
import rlplat.agents, rlplat.agents.dqn, rlplat.envs
found = {{"rlplat.agents": rlplat.agents.__file__, "rlplat.envs": rlplat.envs.__file__}}
for name in ("{AGENTS}", "{ENVS}"):
    try:
        __import__(name)
        found[name] = sys.modules[name].__file__
    except ModuleNotFoundError as exc:
        found[name] = "refused: " + str(exc)
print(json.dumps(found))
"""


def run_python(*args: str, path: list[Path | str], cwd: Path, timeout: float = 300):
    env = {**user_env(), "PYTHONPATH": os.pathsep.join(str(p) for p in path)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def test_pyproject_lists_every_package_folder():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join([name, *init.parent.relative_to(ROOT / folder).parts])
        for name, folder in setuptools["package-dir"].items()
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert sorted(setuptools["packages"]) == sorted(found)


@pytest.fixture(scope="module")
def wheel_target(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """(the wheel's file names, a folder it is installed in), built from a copy of this
    checkout with the build the README's install uses (no build isolation, no deps)."""
    tmp = tmp_path_factory.mktemp("wheel")
    junk = (".git", ".venv", "runs", "models", "build", "__pycache__", "*.egg-info", ".*cache")
    shutil.copytree(ROOT, tmp / "src", ignore=shutil.ignore_patterns(*junk))
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "-w", tmp / "dist", tmp / "src"], check=True, capture_output=True)
    (wheel,) = (tmp / "dist").glob("rlplat-*.whl")
    with zipfile.ZipFile(wheel) as z:  # a pure wheel installs by unpacking
        z.extractall(tmp / "target")
        return z.namelist(), tmp / "target"


def test_the_wheel_installs_one_top_level_package(wheel_target):
    names, _ = wheel_target
    assert {n.split("/")[0] for n in names} == {"rlplat", "rlplat-0.1.0.dist-info"}
    assert {"rlplat/agents/dqn.py", "rlplat/envs/make.py"} <= set(names)


def test_installed_rlplat_has_no_top_level_agents_or_envs(wheel_target, tmp_path: Path):
    _, target = wheel_target
    # -S: site-packages without its .pth files (an editable rlplat installed there).
    deps = sysconfig.get_paths()["purelib"]
    out = run_python("-S", "-c", CHECK_IMPORTS, path=[target, deps], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["rlplat.agents"] == str(target / "rlplat" / "agents" / "__init__.py")
    assert found["rlplat.envs"] == str(target / "rlplat" / "envs" / "__init__.py")
    assert found[AGENTS].startswith("refused: No module named") and found[ENVS].startswith(
        "refused: No module named"
    )


def test_a_source_checkout_maps_the_folders_and_refuses_their_top_level_names(tmp_path: Path):
    out = run_python("-c", CHECK_IMPORTS, path=[ROOT], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["rlplat.agents"] == str(ROOT / "agents" / "__init__.py")
    # The folders are on sys.path under their own names too, but importing them so is
    # refused: one module, one name (a registry loaded twice would be a silent bug).
    assert "is the package rlplat.agents" in found[AGENTS]
    assert "is the package rlplat.envs" in found[ENVS]


@pytest.mark.slow
def test_a_user_project_with_its_own_envs_and_agents_packages_trains(tmp_path: Path):
    project = tmp_path / "project"
    for pkg in (AGENTS, ENVS):
        (project / pkg).mkdir(parents=True)
        (project / pkg / "__init__.py").write_text("")
    (project / AGENTS / "walk.py").write_text("MAX_STEPS = 50\n")
    (project / ENVS / "my.py").write_text(
        f"from {AGENTS}.walk import MAX_STEPS\n"  # the user's agents package, not rlplat's
        "from gymnasium.envs.classic_control import CartPoleEnv\n\n\n"
        "class MyEnv(CartPoleEnv):\n"
        "    max_steps = MAX_STEPS\n"
    )
    data = tiny_config(
        env={"id": f"{ENVS}.my:MyEnv", "max_episode_steps": 50},
        train={"env_steps": 300, "learning_starts": 100},
        eval={"every_env_steps": 300, "episodes": 1},
        checkpoint={"every_env_steps": 300},
        export={"when": "never"},
    )
    (project / "exp.yaml").write_text(yaml.safe_dump(data))
    # The user's project first on the path, then the rlplat checkout (how tests run it).
    out = run_python(
        "-m", "rlplat.cli", "train", "exp.yaml", "--run-dir", "run",
        path=[project, ROOT], cwd=project,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((project / "run" / "summary.json").read_text())
    assert summary["env_steps"] >= 300
    record = json.loads((project / "run" / "run.json").read_text())
    assert record["env_module_dir"] == str(project.resolve())
