"""What an A/B split and a shadow cost `rlplat serve`: batch-1 REST :predict throughput and
latency at 1 and 64 clients for three servers of the same model, interleaved round by round:
no split, a 50/50 keyed split, and the 50/50 split plus a shadow arm; one JSON line.

    .venv/bin/python benchmarks/serve_ab.py --model-base-path models --model lunarlander_pg

The three arms are copies of the model's latest version (versions 1 and 2 split, 3 the
shadow, so every request is mirrored): the figure is the routing's and the mirror's cost,
not a difference between policies. Every request carries its own routing key
(X-Rlplat-Route), as `rlplat play` sends one per episode. The load generator is
benchmarks/serve_load.py's. The shadow's own figures (copies run, dropped when it fell
behind, its latency) come from the server's /metrics. The machine's load average is
recorded: the ratios compare servers under the same load, absolute figures do not travel.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import requests
import uvloop
from _server import latest_version, running_server
from serve_load import load, summarize

import rlplat  # noqa: F401  (environment set-up before TensorFlow)

TARGET_SPLIT_COST = 0.05  # the issue's bar: a split costs at most 5% of throughput

CONFIGS = {
    "no_split": "",
    "split_50_50": "    traffic: {1: 50, 2: 50}\n",
    "split_50_50_shadow": "    traffic: {1: 50, 2: 50}\n    shadow: 3\n",
}


def copies(version_dir: Path, model: str, base: Path) -> None:
    """The version as versions 1, 2 and 3 of `model` under `base` (copies: a symlink out of
    the base path would be refused)."""
    for v in (1, 2, 3):
        shutil.copytree(version_dir, base / model / str(v))


def shadow_figures(url: str) -> dict:
    """The shadow's counters and mean latency from the server's Prometheus text."""
    out: dict[str, float] = {}
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("rlplat_serving_shadow_requests_total{"):
            result = line.split('result="')[1].split('"')[0]
            out[f"copies_{result}"] = out.get(f"copies_{result}", 0) + float(line.split()[-1])
        for stat in ("sum", "count"):
            if line.startswith(f"rlplat_serving_shadow_latency_seconds_{stat}{{"):
                out[f"latency_{stat}"] = float(line.split()[-1])
    if out.get("latency_count"):
        out["mean_shadow_ms"] = round(1e3 * out["latency_sum"] / out["latency_count"], 3)
    out.pop("latency_sum", None)
    out.pop("latency_count", None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-base-path", type=Path, default=Path("models"))
    ap.add_argument("--model", default="lunarlander_pg")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--seconds", type=float, default=4.0, help="per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per server and level")
    ap.add_argument("--warmup-seconds", type=float, default=1.0)
    args = ap.parse_args()

    version_dir, meta = latest_version(args.model_base_path, args.model)
    obs = np.random.default_rng(0).normal(size=(256, *meta["observation_shape"]))
    obs = obs.astype(np.float32)
    path = f"/v1/models/{args.model}:predict"
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp) / "models"
        copies(version_dir, args.model, base)
        urls = {}
        for name, traffic in CONFIGS.items():  # all up at once: rounds interleave across them
            cfg = Path(tmp) / f"{name}.yaml"
            cfg.write_text(f"models:\n  - name: {args.model}\n"
                           f"    version_policy: {{all: true}}\n{traffic}")  # fmt: skip
            urls[name] = stack.enter_context(running_server(base, args.model, "--config", str(cfg)))
        ports = {n: int(u.rsplit(":", 1)[1]) for n, u in urls.items()}
        for port in ports.values():
            for c in args.concurrency:
                uvloop.run(load(port, path, c, args.warmup_seconds, obs, keyed=True))
        rounds = {(n, c): [] for n in ports for c in args.concurrency}
        for _ in range(args.rounds):
            for c in args.concurrency:
                for n, port in ports.items():
                    rounds[n, c].append(
                        uvloop.run(load(port, path, c, args.seconds, obs, keyed=True))
                    )
        shadow = shadow_figures(urls["split_50_50_shadow"])
    levels = {n: [summarize(c, rounds[n, c]) for c in args.concurrency] for n in ports}
    print(json.dumps(report(args, version_dir, levels, shadow, load_before)))


def report(args, version_dir: Path, levels: dict, shadow: dict, load_before) -> dict:
    ratios = {}
    for i, c in enumerate(args.concurrency):
        base_rps = levels["no_split"][i]["requests_per_s"]
        for n in ("split_50_50", "split_50_50_shadow"):
            rps = levels[n][i]["requests_per_s"]
            ratios[f"{n}_vs_no_split_rps_c{c}"] = round(rps / base_rps, 3)
    for lv in levels.values():
        for level in lv:
            level.pop("rounds")
    split_cost = max(1 - ratios[f"split_50_50_vs_no_split_rps_c{c}"] for c in args.concurrency)
    return {
        "benchmark": "serve_ab",
        "model": f"{args.model} v{version_dir.name} (as versions 1, 2 and shadow 3)",
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        "throughput_ratios": ratios,
        "split_cost": round(split_cost, 3),
        "split_cost_target": TARGET_SPLIT_COST,
        "split_cost_met": split_cost <= TARGET_SPLIT_COST,
        "shadow": shadow,
        "levels": levels,
    }


if __name__ == "__main__":
    main()
