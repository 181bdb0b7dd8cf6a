"""The README's 5-minute tour, run as written (its own 100k-step budget), each command timed:

    .venv/bin/python benchmarks/tour.py [--out benchmarks/results/tour.json]

Runs in a scratch directory (/tmp/tour becomes it; servers on free ports), as the test
suite does with a smaller budget (tests/doc_commands.py). Per command: its wall seconds;
for the server, the seconds until it answers for the model. One JSON line. Seconds depend
on the machine and its load (recorded).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))
from _machine import machine  # noqa: E402
from conftest import free_port  # noqa: E402
from doc_commands import Workspace, page_commands  # noqa: E402


def tour(space: Workspace) -> list[dict]:
    text = (REPO / "README.md").read_text().split("## A 5-minute tour", 1)[1].split("\n## ")[0]
    timed = []
    for command in page_commands(text):
        t0 = time.perf_counter()
        space.run(command)
        if "rlplat serve" in command:
            space.wait_for_server("/v1/models/lunarlander_pg")
        timed.append({"command": command, "wall_s": round(time.perf_counter() - t0, 2)})
    return timed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "tour.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tour-") as tmp:
        space = Workspace(Path(tmp), free_port(), free_port(), env=None, budget=False)
        try:
            commands = tour(space)
        finally:
            space.stop()
    result = {"benchmark": "tour", "machine": machine(), "commands": commands,
              "total_s": round(sum(c["wall_s"] for c in commands), 1)}  # fmt: skip
    line = json.dumps(result)
    print(line)
    args.out.write_text(line + "\n")


if __name__ == "__main__":
    main()
