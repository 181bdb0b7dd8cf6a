"""The docs cannot rot: the reference pages are the code's, the site builds with no broken
link or missing page, and the README stays a short front page."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _check(script: str) -> None:
    """`scripts/SCRIPT --check`: the generated pages are what the script writes now."""
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / script), "--check"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


def test_the_reference_pages_are_generated_from_the_code():
    _check("docs_reference.py")


def test_the_results_tables_are_rendered_from_the_results_files():
    _check("docs_results.py")


def test_the_docs_site_builds_strict(tmp_path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    out = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "config" / "index.html").is_file()


def test_the_readme_is_a_short_front_page_with_the_two_set_up_commands_first():
    lines = README.read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    first_screen = "\n".join(lines[:40])
    assert "bash scripts/setup.sh" in first_screen
    assert ".venv/bin/python -m pytest" in first_screen
    ci = (REPO / ".ci" / "run").read_text()
    assert "bash scripts/setup.sh && .venv/bin/python -m pytest" in ci


def _user_pages() -> list[Path]:
    return [README, *sorted((REPO / "docs").rglob("*.md"))]


@pytest.mark.parametrize("pattern", [r"\bissues?\b", r"before the [\w ]*rewrite", r"\bround\b"])
def test_no_project_internal_words_in_what_users_read(pattern):
    found = []
    for page in _user_pages():
        for n, line in enumerate(page.read_text().splitlines(), 1):
            text = re.sub(r"https?://\S+", "", line)  # a cited URL may say /issues/
            if re.search(pattern, text, re.IGNORECASE):
                found.append(f"{page.relative_to(REPO)}:{n}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


# ------------------------------------------------------------------- the tour runs
# The README's 5-minute tour, run as written, with these overrides only: a 4,096-step
# budget, a temporary directory for /tmp/tour, free ports for the server (and
# `--server` for play), and the two commands that run until Ctrl-C (TensorBoard, the
# server) started in the background. docs/explanation/testing.md says the same.
TOUR_STEPS = "train.env_steps=4096"


def tour_commands() -> list[str]:
    tour = README.read_text().split("## A 5-minute tour", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```\n(.*?)```", tour, re.DOTALL):
        lines = iter(block.splitlines())
        for line in lines:
            if line.startswith("$ "):
                command = line[2:]
                while command.endswith("\\"):
                    command = command[:-1] + next(lines).strip()
                commands.append(command)
    return commands


def _overridden(command: str, tmp: Path, port: int, grpc_port: int) -> str:
    command = re.sub(r"train\.env_steps=\d+", TOUR_STEPS, command)
    command = command.replace("/tmp/tour", str(tmp)).replace(":8501", f":{port}")
    if " serve " in f"{command} ":
        command += f" --port {port} --grpc-port {grpc_port}"
    if " play " in command:
        command += f" --server http://127.0.0.1:{port}"
    return command


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path):
    import requests
    from conftest import free_port, user_env

    commands = tour_commands()
    assert [c.split()[0].rsplit("/", 1)[-1] for c in commands] == [
        "rlplat", "tensorboard", "rlplat", "rlplat", "rlplat", "rlplat", "curl", "rlplat",
    ]  # fmt: skip
    port, grpc_port = free_port(), free_port()
    background: list[subprocess.Popen] = []
    try:
        for command in commands:
            run = _overridden(command, tmp_path, port, grpc_port)
            if command.startswith((".venv/bin/tensorboard", ".venv/bin/rlplat serve")):
                run += f" --port {free_port()}" if "tensorboard" in command else ""
                background.append(subprocess.Popen(
                    run, shell=True, cwd=REPO, env=user_env(), stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True,
                ))  # fmt: skip
                continue
            if " play " in command or command.startswith("curl"):  # the server first
                _wait_for(f"http://127.0.0.1:{port}/v1/models/lunarlander_pg", requests)
            out = subprocess.run(run, shell=True, cwd=REPO, env=user_env(), timeout=600,
                                 capture_output=True, text=True)  # fmt: skip
            assert out.returncode == 0, (run, out.stderr[-3000:])
            if command.startswith("curl"):
                assert '"actions"' in out.stdout, out.stdout
    finally:  # Ctrl-C, as the tour says; TensorBoard still starting may not heed it
        for proc in background:
            os.killpg(proc.pid, signal.SIGINT)
        for proc in background:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
    assert (tmp_path / "play" / "play.json").is_file()
    assert list((tmp_path / "runs" / "lunarlander_pg" / "eval").glob("*/videos/*.mp4"))


def _wait_for(url: str, requests) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url}: no answer in 120 s")
