"""What a checkpoint's manifest costs: writing it (size + SHA-256 of every file) and
checking it, for a replay file of a given size; one JSON line.

    .venv/bin/python benchmarks/checkpoint_manifest.py --mib 512

The file is random bytes written once (so the page cache holds it, as it does right after
a checkpoint is written); the figures are the median of --repeats runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from rlplat.checkpoint import damage, write_manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512, help="replay.npz size in MiB")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp)
        with (ckpt / "replay.npz").open("wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(1 << 20))
        (ckpt / "state.json").write_text("{}")
        writes, checks = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            write_manifest(ckpt)
            writes.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert damage(ckpt) is None
            checks.append(time.perf_counter() - t0)
    write_s, check_s = statistics.median(writes), statistics.median(checks)
    print(json.dumps({
        "benchmark": "checkpoint_manifest",
        "mib": args.mib,
        "write_manifest_s": round(write_s, 3),
        "check_s": round(check_s, 3),
        "sha256_mib_per_s": round(args.mib / check_s, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
