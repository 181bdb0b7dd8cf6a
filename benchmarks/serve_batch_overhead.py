"""The fixed costs under a served request, in-process (no HTTP): a batch flush of n one-row
requests (concatenate, the session call, cutting the outputs back per request) against the
session call alone, with the outputs cut by slicing (rlplat/serving/batching.py) and, for
reference, by np.split; and a routing key's point, fresh and remembered, against the
functools.lru_cache it replaced. One JSON line.

    .venv/bin/python benchmarks/serve_batch_overhead.py --model-base-path models

Medians of repeated timings (microseconds; a 1-request batch is not cut by the server, its
figures show the session call's floor); CPU-bound, so the figures move with the CPU,
and the ratios between them travel better than the figures.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
from _server import latest_version

import rlplat  # noqa: F401  (environment set-up before TensorFlow)


def median_us(fn, reps: int, warm: int = 200) -> float:
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return round(float(np.median(times)) * 1e6, 2)


def np_split_cut(result: list[np.ndarray], rows: list[int]) -> list[list[np.ndarray]]:
    """The simpler way to cut a batch's outputs (the baseline measured): np.split per output."""
    cuts = np.cumsum(rows)[:-1]
    per_output = [np.split(out, cuts) for out in result]
    return [list(parts) for parts in zip(*per_output, strict=True)]


def flush_costs(version_dir: Path, sizes: list[int], reps: int) -> dict:
    from rlplat.serving.batching import cut_rows
    from rlplat.serving.config import ServingConfig
    from rlplat.serving.servable import Servable

    servable = Servable("m", int(version_dir.name), version_dir, ServingConfig())
    sig = servable.signature(None)
    specs = list(sig.inputs.values())
    out = {}
    for n in sizes:
        requests = [[np.zeros([1, *s.shape[1:]], s.dtype) for s in specs] for _ in range(n)]
        rows = [1] * n

        def flush(cut, requests=requests, rows=rows) -> None:
            merged = [np.concatenate(parts) for parts in zip(*requests, strict=True)]
            cut(servable.run(sig, merged), rows)

        merged = [np.concatenate(parts) for parts in zip(*requests, strict=True)]
        out[f"n{n}"] = {
            "session_call_us": median_us(lambda merged=merged: sig.run(*merged), reps),
            "flush_sliced_us": median_us(lambda flush=flush: flush(cut_rows), reps),
            "flush_np_split_us": median_us(lambda flush=flush: flush(np_split_cut), reps),
        }
    servable.close()
    return out


def routing_costs(reps: int) -> dict:
    from rlplat.serving import traffic

    def blake(key: bytes) -> float:
        return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2**64

    lru = functools.lru_cache(maxsize=65536)(blake)
    fresh = (b"episode-%d" % i for i in range(10**9))
    full = 70_000  # fresh keys first fill each memo: then every fresh key evicts or empties
    traffic._POINTS.clear()
    return {
        "key_point_fresh_us": median_us(lambda: traffic.key_point(next(fresh)), reps, full),
        "key_point_remembered_us": median_us(lambda: traffic.key_point(b"episode-1"), reps),
        "lru_fresh_us": median_us(lambda: lru(next(fresh)), reps, full),
        "lru_remembered_us": median_us(lambda: lru(b"episode-1"), reps),
        "hash_only_us": median_us(lambda: blake(next(fresh)), reps),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-base-path", type=Path, default=Path("models"))
    ap.add_argument("--model", default="lunarlander_pg")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 13, 25])
    ap.add_argument("--reps", type=int, default=5000)
    args = ap.parse_args()
    version_dir, _ = latest_version(args.model_base_path, args.model)
    report = {
        "benchmark": "serve_batch_overhead",
        "model": f"{args.model} v{version_dir.name}",
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "flush": flush_costs(version_dir, args.sizes, args.reps),
        "routing": routing_costs(args.reps * 20),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
