"""Scale-out serving: one `rlplat serve` process against `rlplat serve --ray` with 1 and 2
replicas, batch-1 REST :predict loaded by wrk at 1, 16 and 64 connections; one JSON line.

    .venv/bin/python benchmarks/serve_scale.py --model-base-path models --model lunarlander_pg

wrk (C, one thread, keep-alive, the docs' batch-1 body) is the client; each server runs
alone (a `--ray` one brings its own Ray), in `--passes` passes over the three (A B C A B
C: a drift of the machine's speed hits all alike), 5 s per level after a 1 s warm-up.
The figures judged are the targets: at 64 connections `--ray --replicas 2` reaches
>= 0.8x the one process's requests/s, and at 1 connection its p50 is <= 2x the one
process's. On a 2-core machine the client and the servers share the cores: absolute
figures do not travel, the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from _server import free_port, latest_version, running_server
from serve_load import summarize_wrk, wrk_round, wrk_script

SERVERS = {"one_process": [], "ray_1_replica": ["--ray", "--replicas", "1"],
           "ray_2_replicas": ["--ray", "--replicas", "2"]}  # fmt: skip
TARGETS = {"c64_rps_ratio_min": 0.8, "c1_p50_ratio_max": 2.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-base-path", type=Path, default=Path("models"))
    ap.add_argument("--model", default="lunarlander_pg")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--passes", type=int, default=2)
    args = ap.parse_args()
    wrk = shutil.which("wrk") or sys.exit("error: wrk is not on the PATH (apt install wrk)")
    _, meta = latest_version(args.model_base_path, args.model)
    obs = np.random.default_rng(0).normal(size=(1, *meta["observation_shape"]))
    body = json.dumps({"instances": obs.astype(np.float32).tolist()}).encode()
    load_before = os.getloadavg()
    rounds: dict[tuple[str, int], list[dict]] = {(n, c): [] for n in SERVERS for c in args.levels}
    with wrk_script() as script:
        for _ in range(args.passes):
            for name, extra in SERVERS.items():
                fleet = "--ray" in extra
                with running_server(
                    args.model_base_path, args.model, *extra,
                    *(["--metrics-port", str(free_port())] if fleet else []),
                    ready_text="replica(s) on" if fleet else None,
                ) as base:  # fmt: skip
                    url = f"{base}/v1/models/{args.model}:predict"
                    for c in args.levels:
                        wrk_round(wrk, script, url, c, 1, body)  # warm-up
                        rounds[name, c].append(wrk_round(wrk, script, url, c,
                                                         args.seconds, body))  # fmt: skip
    levels = {n: [summarize_wrk(c, rounds[n, c]) for c in args.levels] for n in SERVERS}
    print(json.dumps(report(args, levels, load_before)))


def report(args, levels: dict, load_before) -> dict:
    def at(name: str, c: int) -> dict:
        return levels[name][args.levels.index(c)]

    ratios = {}
    for name in ("ray_1_replica", "ray_2_replicas"):
        for c in args.levels:
            ratios[f"{name}_rps_c{c}"] = round(
                at(name, c)["requests_per_s"] / at("one_process", c)["requests_per_s"], 3
            )
        ratios[f"{name}_p50_c1"] = round(at(name, 1)["p50_ms"] / at("one_process", 1)["p50_ms"], 3)
    for lv in levels.values():
        for level in lv:
            level["rounds_rps"] = [r["requests_per_s"] for r in level.pop("rounds")]
    rps, p50 = ratios.get("ray_2_replicas_rps_c64", 0), ratios.get("ray_2_replicas_p50_c1", 99)
    met = {
        "c64_rps_ratio_min": rps >= TARGETS["c64_rps_ratio_min"],
        "c1_p50_ratio_max": p50 <= TARGETS["c1_p50_ratio_max"],
    }
    return {
        "benchmark": "serve_scale",
        "model": args.model,
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "seconds_per_level": args.seconds,
        "passes": args.passes,
        "ratios_vs_one_process": ratios,
        "targets": TARGETS,
        "targets_met": met,
        "levels": levels,
    }


if __name__ == "__main__":
    main()
