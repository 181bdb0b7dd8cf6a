"""What a user waits for before the first useful line of each command:

    .venv/bin/python benchmarks/startup.py [--repeats 3] [--out benchmarks/results/startup.json]
    .venv/bin/python benchmarks/startup.py --only play_litert \
        --out benchmarks/results/startup_play_litert.json

A tiny CartPole DQN (trained once here, exported as models/tiny/1) gives every command
something real to work on. Each command runs `--repeats` times from a fresh process; per
command: seconds to its first line (stdout and stderr together), to its first useful line
(the line named below: the progress line of train, the result table of eval, "serving"
of serve, the table of play and of play --litert, which acts with the model as a LiteRT
file) and to its end (serve: stopped once its REST port answers),
as medians, and whether the process imported TensorFlow (`RLPLAT_IMPORTS_TF` line, from
sitecustomize on PYTHONPATH). One JSON line. Seconds depend on the machine and its load
(`load_avg_1m`, at the start, says how busy it was).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).resolve().parents[1]
RLPLAT = str(Path(sys.executable).with_name("rlplat"))
sys.path.insert(0, str(REPO / "tests"))
from conftest import tiny_config  # noqa: E402

# printed at exit by every rlplat process of this benchmark (see sitecustomize below)
_HOOK = (
    "import atexit, os, sys\n"
    "atexit.register(lambda: os.write(2, f\"RLPLAT_IMPORTS_TF {'tensorflow' in sys.modules}"
    '\\n".encode()))\n'
)


def timed_lines(cmd: list[str], cwd: Path, env: dict, stop_when: str | None = None) -> dict:
    """Run `cmd`; (seconds, line) for every line, stdout and stderr merged. With
    `stop_when`, SIGTERM once a line contains it (a server)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append((time.perf_counter() - t0, line.rstrip("\n")))
        if stop_when is not None and stop_when in line:
            proc.terminate()
    proc.wait(timeout=600)
    return {"lines": lines, "end_s": time.perf_counter() - t0, "rc": proc.returncode}


def first(lines: list[tuple[float, str]], text: str) -> float | None:
    return next((t for t, line in lines if text in line), None)


def measure(name: str, cmd: list[str], useful: str, cwd: Path, env: dict, repeats: int,
            stop_when: str | None = None) -> dict:  # fmt: skip
    runs = [timed_lines(cmd, cwd, env, stop_when) for _ in range(repeats)]
    shown = [r["lines"] for r in runs]
    for run in runs:
        if first(run["lines"], useful) is None:
            tail = "\n".join(line for _, line in run["lines"][-20:])
            raise SystemExit(f"{name}: no line with {useful!r} (exit {run['rc']}):\n{tail}")
    median = statistics.median
    return {
        "command": " ".join(["rlplat", *cmd[1:]]),
        "useful_line": useful,
        "first_line_s": round(median(lines[0][0] for lines in shown), 2),
        "first_useful_line_s": round(median(first(lines, useful) for lines in shown), 2),
        "end_s": round(median(r["end_s"] for r in runs), 2),
        # None for a server stopped by SIGTERM: its exit hook does not run
        "imports_tensorflow": None
        if stop_when
        else any(first(lines, "RLPLAT_IMPORTS_TF True") is not None for lines in shown),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(root: Path, env: dict) -> None:
    cfg = tiny_config(export={"model_base_path": "models", "when": "always"})
    (root / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run([RLPLAT, "train", "tiny.yaml", "--run-dir", "run"], cwd=root,
                         env=env, capture_output=True, text=True)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"training the tiny run failed:\n{out.stderr[-3000:]}")
    out = subprocess.run([RLPLAT, "export", "models/tiny/1", "--format", "litert", "--out",
                          "tiny.tflite", "--no-check"], cwd=root, env=env, capture_output=True,
                         text=True)  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"exporting the tiny model to LiteRT failed:\n{out.stderr[-3000:]}")


def commands(root: Path, port: int) -> list[tuple[str, list[str], str, str | None]]:
    """(name, argv, useful line, stop when) for each command."""
    server = f"http://127.0.0.1:{port}"
    return [
        ("help", [RLPLAT, "--help"], "Usage", None),
        ("config_error", [RLPLAT, "train", "nosuch.yaml"], "error:", None),
        ("runs", [RLPLAT, "runs", "--runs-dir", "."], "run(s) in", None),
        ("train_dry_run", [RLPLAT, "train", "tiny.yaml", "--dry-run"], "name: tiny", None),
        # a new runs/tiny/TIMESTAMP-s0 each time: a run takes more than a second
        (
            "train",
            [RLPLAT, "train", "tiny.yaml", "--no-export", "--set", "train.env_steps=400"],
            "run directory:",
            None,
        ),  # fmt: skip
        ("eval", [RLPLAT, "eval", "run", "--episodes", "2"], "episodes (seed", None),
        (
            "serve",
            [
                RLPLAT,
                "serve",
                "--model-base-path",
                "models",
                "--port",
                str(port),
                "--grpc-port",
                str(free_port()),
            ],
            "REST on",
            "REST on",
        ),  # fmt: skip
        ("export_error", [RLPLAT, "export", "nowhere"], "error:", None),
        (
            "play_litert",
            [RLPLAT, "play", "--litert", "tiny.tflite", "--episodes", "2", "--out", "lt-out"],
            "episodes (seed",
            None,
        ),  # fmt: skip
        ("serve_error", [RLPLAT, "serve", "--model-base-path", "nowhere"], "error:", None),
        (
            "play_error",
            [RLPLAT, "play", "--model", "tiny", "--server", server, "--episodes", "1"],
            "error:",
            None,
        ),  # fmt: skip
    ]


def serve_and_play(root: Path, env: dict, repeats: int) -> dict:
    """play against a running server: time to its table."""
    port = free_port()
    server = subprocess.Popen(
        [RLPLAT, "serve", "--model-base-path", "models", "--port", str(port), "--grpc-port",
         str(free_port())], cwd=root, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/v1/models/tiny", timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server for play did not answer in 120 s")
            time.sleep(0.2)
        cmd = [RLPLAT, "play", "--model", "tiny", "--server", f"http://127.0.0.1:{port}",
               "--episodes", "2", "--out", "play-out"]  # fmt: skip
        return measure("play", cmd, "episodes (seed", root, env, repeats)
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/startup.json")
    parser.add_argument("--only", nargs="*", default=None, help="these commands only")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rlplat-startup-") as tmp:
        root = Path(tmp)
        (root / "hook").mkdir()
        (root / "hook" / "sitecustomize.py").write_text(_HOOK)
        env = {**os.environ, "PYTHONPATH": str(root / "hook"), "COLUMNS": "120"}
        env.pop("TF_USE_LEGACY_KERAS", None)
        prepare(root, env)
        wanted = set(args.only or [name for name, *_ in commands(root, 0)] + ["play"])
        results = {name: measure(name, cmd, useful, root, env, args.repeats, stop)
                   for name, cmd, useful, stop in commands(root, free_port())
                   if name in wanted}  # fmt: skip
        if "play" in wanted:
            results["play"] = serve_and_play(root, env, args.repeats)
    record = {"benchmark": "startup", "repeats": args.repeats, "load_avg_1m": round(load, 2),
              "cpu_count": os.cpu_count(), "commands": results}  # fmt: skip
    line = json.dumps(record)
    print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(line + "\n")


if __name__ == "__main__":
    main()
