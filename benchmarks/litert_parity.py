"""Exported policies as LiteRT flatbuffers in every quantization mode: size, batch-1 latency
on this CPU, and return parity with the SavedModel; one JSON line.

    .venv/bin/python benchmarks/litert_parity.py models/lunarlander_pg/1 \
        models/lunarlander_dqn/1 --episodes 20 --out benchmarks/results/litert_parity.json

Per model and mode (none, float16, dynamic, int8): `rlplat export --format litert`'s own
conversion and parity report (rlplat/litert_export.py), written to a temporary directory:
the file's bytes, the interpreter's per-action latency at batch 1 (median and p99 of 500
calls, one thread), the share of the SavedModel's steps on which both chose the same
action, and the 20-episode returns of both on the same seeds with their 95% intervals.
Latency depends on the machine and its load (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from dataclasses import asdict
from pathlib import Path

from _machine import emit  # benchmarks/ is sys.path[0] when run as a script

import rlplat  # noqa: F401  (environment set-up before TensorFlow)
from rlplat import litert_export
from rlplat.policies import version_dir


def measure(model: Path, episodes: int, root: Path) -> dict:
    version = version_dir(model)
    if version is None:
        raise SystemExit(f"{model}: not an exported model (models/NAME[/VERSION])")
    meta = json.loads((version / "assets.extra" / "rlplat.json").read_text())
    modes = {}
    for mode in litert_export.QUANTIZE:
        out = root / f"{meta['name']}-{mode}.tflite"
        _, report = litert_export.export(version, mode, out, episodes=episodes)
        modes[mode] = asdict(report)
    return {
        "model": meta["name"], "version": int(version.name), "agent_type": meta.get("agent_type"),
        "env": meta["env"]["id"], "trained_env_steps": meta.get("env_steps"), "modes": modes,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path, help="models/NAME or models/NAME/VERSION")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON line here")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="rlplat-litert-") as tmp:
        results = [measure(m, args.episodes, Path(tmp)) for m in args.models]
    emit({
        "benchmark": "litert_parity", "episodes": args.episodes,
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "load_avg_before": [round(x, 2) for x in load_before],
        "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "models": results,
    }, args.out)  # fmt: skip


if __name__ == "__main__":
    main()
