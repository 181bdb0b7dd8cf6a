"""A commit checked out into a temporary git worktree, for scripts that measure two
commits side by side (same_code_check.py, before_after.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def add(rev: str, root: Path) -> tuple[str, Path]:
    """`rev` checked out under `root`: (its short hash, the worktree's path)."""
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", rev],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    tree = root / f"tree-{sha}"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(tree), sha],
        check=True, capture_output=True,
    )  # fmt: skip
    return sha, tree


def remove(tree: Path) -> None:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True
    )
