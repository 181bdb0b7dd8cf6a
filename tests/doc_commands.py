"""Run the shell commands a docs page shows, as written, with the overrides
docs/explanation/testing.md documents (a tiny budget, a scratch directory, free ports).

A command is a line of a ```bash block (a trailing `# comment` dropped, `\\` lines
joined) or a `$ ` line of a plain ``` block (the lines after it are its output).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import free_port

REPO = Path(__file__).resolve().parents[1]
BUDGET = ["--set", "train.env_steps=4096", "--set", "export.when=always"]
EPISODES = ["--episodes", "2"]  # `eval` and `play` where the page leaves the default (20)
LINKED = (".venv", "experiments", "scripts", "benchmarks")  # what the pages' paths name
BACKGROUND = ("rlplat serve", "tensorboard")  # commands that run until Ctrl-C


def page_commands(markdown: str) -> list[str]:
    commands = []
    for lang, block in re.findall(r"^```(\w*)\n(.*?)^```", markdown, re.DOTALL | re.MULTILINE):
        if lang not in ("", "bash"):
            continue
        lines = iter(block.splitlines())
        for line in lines:
            if lang == "" and not line.startswith("$ "):
                continue
            command = line.removeprefix("$ ")
            while command.rstrip().endswith("\\"):
                command = command.rstrip()[:-1] + " " + next(lines).strip()
            command = re.sub(r"\s{2,}#.*$|^\s*#.*$", "", command).strip()
            if command:
                commands.append(command)
    return commands


@dataclass
class Workspace:
    """A scratch directory that looks like the repository root to the pages' commands
    (links to .venv/, experiments/, ...), with free ports for the servers they start."""

    root: Path
    port: int
    grpc_port: int
    env: dict[str, str]
    budget: bool = True  # False: the commands' own budgets (benchmarks/tour.py)
    background: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in LINKED:
            (self.root / name).symlink_to(REPO / name)

    def rewrite(self, command: str) -> str | None:
        """COMMAND with the documented overrides; None for one the suite does not run."""
        command = re.sub(r"^bash scripts/setup\.sh && ", "", command)
        if " -m pytest" in command:
            return None  # the test command itself
        command = command.replace("/tmp/tour", str(self.root))
        command = re.sub(r"(localhost|127\.0\.0\.1):8501", rf"\g<1>:{self.port}", command)
        if self.budget and re.search(r"\brlplat train\b", command):
            command = re.sub(r"\s--set train\.env_steps=\S+", "", command) + " " + " ".join(BUDGET)
        eval_or_play = re.search(r"\brlplat (eval|play)\b", command)
        if self.budget and eval_or_play and not re.search(r"\s--episodes\b", command):
            command += " " + " ".join(EPISODES)
        if re.search(r"\brlplat serve\b", command):
            command += f" --port {self.port} --grpc-port {self.grpc_port}"
        if re.search(r"\brlplat play\b", command) and "--server" not in command:
            command += f" --server http://127.0.0.1:{self.port} --grpc 127.0.0.1:{self.grpc_port}"
        for placeholder in re.findall(r"(\S*runs/[\w-]+)/<run>", command):
            newest = sorted(p for p in (self.root / placeholder).glob("*-s*") if p.is_dir())
            assert newest, f"{command}: no run under {placeholder} yet"
            command = command.replace(f"{placeholder}/<run>", str(newest[-1]))
        return re.sub(r"^(\.venv/bin/)?rlplat ", ".venv/bin/rlplat ", command)

    def run(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess | None:
        run = self.rewrite(command)
        if run is None:
            return None
        if any(word in run for word in BACKGROUND):
            if "tensorboard" in run:
                run += f" --port {free_port()}"
            self.background.append(subprocess.Popen(
                run, shell=True, cwd=self.root, env=self.env, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            ))  # fmt: skip
            return None
        if re.search(r"\brlplat play\b|^curl ", run):  # the server first
            self.wait_for_server(command)
        out = subprocess.run(run, shell=True, cwd=self.root, env=self.env, timeout=timeout,
                             capture_output=True, text=True)  # fmt: skip
        assert out.returncode == 0, (run, out.stdout[-2000:], out.stderr[-3000:])
        return out

    def wait_for_server(self, command: str) -> None:
        """Until the server answers for the model COMMAND names (its versions loaded)."""
        import requests

        model = re.search(r"--model (\S+)|/v1/models/([\w-]+)", command)
        url = f"http://127.0.0.1:{self.port}/v1/models/{model[1] or model[2] if model else ''}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(url, timeout=2).ok:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"{command}: no server on :{self.port} in 120 s")

    def stop(self) -> None:
        """Ctrl-C, as the pages say; a TensorBoard still starting may not heed it in time."""
        for proc in self.background:
            os.killpg(proc.pid, signal.SIGINT)
        for proc in self.background:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=60)
