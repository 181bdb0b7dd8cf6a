"""The docs cannot rot: the reference pages are the code's, the site builds with no broken
link or missing page, and the README stays a short front page."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def test_the_reference_pages_are_generated_from_the_code():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "docs_reference.py"), "--check"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


def test_the_results_tables_are_rendered_from_the_results_files():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "docs_results.py"), "--check"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]


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
