"""The docs cannot rot: the reference pages are the code's, the site builds with no broken
link or missing page, and the README stays a short front page."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import free_port
from doc_commands import Workspace, page_commands

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TUTORIALS = REPO / "docs" / "tutorials"


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


@pytest.mark.parametrize(
    "pattern", [r"\bissues?\b", r"before the [\w ]*rewrite", r"\bround\b(?![- ](robin|trip))"]
)
def test_no_project_internal_words_in_what_users_read(pattern):
    found = []
    for page in _user_pages():
        for n, line in enumerate(page.read_text().splitlines(), 1):
            text = re.sub(r"https?://\S+", "", line)  # a cited URL may say /issues/
            text = re.sub(r"<!--.*?-->", "", text)  # a figure's source expression
            if re.search(pattern, text, re.IGNORECASE):
                found.append(f"{page.relative_to(REPO)}:{n}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


# ------------------------------------------------------------- the pages' commands run
# The README's 5-minute tour and every tutorial's shell blocks, run as written in a scratch
# directory with the overrides tests/doc_commands.py applies and docs/explanation/testing.md
# documents: a 4,096-step budget that always exports, free ports, servers in the background.


def _tour() -> str:
    return README.read_text().split("## A 5-minute tour", 1)[1].split("\n## ", 1)[0]


def _run_pages(tmp_path: Path, *texts: str) -> Workspace:
    from conftest import user_env

    space = Workspace(tmp_path, free_port(), free_port(), user_env())
    try:
        for text in texts:
            for command in page_commands(text):
                out = space.run(command)
                if out is not None and command.startswith("curl") and ":predict" in command:
                    assert '"actions"' in out.stdout, out.stdout
    finally:
        space.stop()
    return space


def test_the_pages_commands_are_found():
    tour = [c.split()[0].rsplit("/", 1)[-1] for c in page_commands(_tour())]
    assert tour == ["rlplat", "tensorboard", "rlplat", "rlplat", "rlplat", "rlplat", "curl",
                    "rlplat"]  # fmt: skip
    for page in TUTORIALS.glob("*.md"):
        assert page_commands(page.read_text()), f"{page.name}: no shell block to run"


def test_the_overrides_are_the_documented_ones(tmp_path):
    space = Workspace(tmp_path, 1234, 1235, {})
    train = space.rewrite(".venv/bin/rlplat train x.yaml --set train.env_steps=9 --set a=1")
    assert train == (".venv/bin/rlplat train x.yaml --set a=1 --set train.env_steps=4096 "
                     "--set export.when=always")  # fmt: skip
    assert space.rewrite("rlplat eval models/x --render video").endswith(" --episodes 2")
    assert (
        space.rewrite("rlplat eval models/x --episodes 3")
        == ".venv/bin/rlplat eval models/x --episodes 3"
    )
    play = space.rewrite("rlplat play --model x")
    assert "--episodes 2" in play and "--server http://127.0.0.1:1234" in play


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path):
    _run_pages(tmp_path, _tour())
    assert (tmp_path / "play" / "play.json").is_file()
    assert list((tmp_path / "runs" / "lunarlander_pg" / "eval").glob("*/videos/*.mp4"))


@pytest.mark.slow
def test_the_first_run_and_serve_and_play_tutorials_run_as_written(tmp_path):
    pages = [(TUTORIALS / f).read_text() for f in ("first-run.md", "serve-and-play.md")]
    _run_pages(tmp_path, *pages)
    assert (tmp_path / "models" / "lunarlander_pg" / "1" / "saved_model.pb").is_file()
    assert list((tmp_path / "runs" / "lunarlander_pg").rglob("curves.png"))


@pytest.mark.slow
def test_the_atari_tutorial_runs_as_written(tmp_path):
    _run_pages(tmp_path, (TUTORIALS / "atari.md").read_text())
