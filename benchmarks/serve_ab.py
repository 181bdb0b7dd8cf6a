"""What an A/B split and a shadow cost `rlplat serve`: batch-1 REST :predict throughput and
latency at 1 and 64 clients under four routings of the same model, interleaved round by
round in ONE server process: no split, a 50/50 split between two labels of one version
(the routing alone), a 50/50 keyed split between two versions, and that split plus a
shadow arm; one JSON line.

    .venv/bin/python benchmarks/serve_ab.py --model-base-path models --model lunarlander_pg

One process, because two server processes of the same config differ by a few percent in
throughput on their own (measured: 2-3% on a 2-core machine), as much as the cost being
measured. The routing is changed between rounds by rewriting serving.yaml (a hot reload;
all versions stay loaded) and a round starts once the server answers with the new routing.

The arms are copies of the model's latest version (versions 1, 2 and 3; 3 is the shadow, so
every request is mirrored): the figure is the routing's and the mirror's cost, not a
difference between policies. Every request carries a routing key (X-Rlplat-Route): as many
episodes run at once as there are connections, each sending its own key for
`--requests-per-key` requests (200 by default, an episode's order of length, as `rlplat
play` sends one per episode), so both arms get requests in every batch; `--requests-per-key
1` is the costlier case of a fresh key per request (every key is hashed; the Python
client's keys repeat every 256 requests), and 0 sends no key (a split per request). The
load generator is wrk (C, one thread; the Python client of benchmarks/serve_load.py with
`--client python` or without wrk on the PATH): a Python client takes a core's worth of
this machine's two from the server and varies more.
Besides throughput, each round records the server's CPU time per request (/proc): a ratio of
those is the routing's cost to the server whatever share of the cores the client took.
The headline (`split_cost`) is the median over rounds of each round's throughput ratio
against the same round's no split, with a 95% bootstrap interval: on two cores one round
differs from the next by several percent, the order of the cost measured.
The shadow's figures (copies run, dropped when it fell behind, its latency) come from the
server's /metrics. The machine's load average is recorded: the ratios compare routings
under the same load, absolute figures do not travel.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import uvloop
from _server import latest_version, running_server_process
from serve_load import WRK_SCRIPT, load, summarize, summarize_wrk, wrk_round, wrk_script

import rlplat  # noqa: F401  (environment set-up before TensorFlow)

# wrk with RLPLAT_WRK_EPISODES episodes at a time (one per connection: 64 clients each play
# their own), each sending one routing key for RLPLAT_WRK_PER_KEY requests, as `rlplat play`
# sends one per episode (1: a fresh key per request; 0: no key); and a client-side split over
# RLPLAT_WRK_PATHS (comma-separated; request i goes to path i mod their number), as
# serve_load's Python client. Request n belongs to episode slot n mod EPISODES.
WRK_KEYED = (
    WRK_SCRIPT
    + """
local paths = {}
for p in string.gmatch(os.getenv("RLPLAT_WRK_PATHS"), "[^,]+") do paths[#paths + 1] = p end
local per_key = tonumber(os.getenv("RLPLAT_WRK_PER_KEY"))
local episodes = tonumber(os.getenv("RLPLAT_WRK_EPISODES"))
local n = 0
function request()
  n = n + 1
  if per_key > 0 then
    local episode = math.floor(n / (episodes * per_key))
    wrk.headers["X-Rlplat-Route"] = "episode-" .. (n % episodes) .. "-" .. episode
  end
  return wrk.format(nil, paths[n % #paths + 1])
end
"""
)

TARGET_SPLIT_COST = 0.05  # the target: a split costs at most 5% of throughput

ENTRY = "{session}models:\n  - name: {model}\n    version_policy: {{all: true}}\n"
ROUTINGS = {  # routing name -> (serving.yaml lines under the model, the arms that answer)
    "no_split": ("", {None}),
    # Two labels of one version: the server-side routing alone, one batch queue.
    "split_one_version": ("    labels: {a: 3, b: 3}\n    traffic: {a: 50, b: 50}\n", {"a", "b"}),
    # Clients split between versions 1 and 2 themselves (TF Serving's way): two batch queues.
    "client_split": ("", {None}),
    "split_50_50": ("    traffic: {1: 50, 2: 50}\n", {"1", "2"}),
    "split_50_50_shadow": ("    traffic: {1: 50, 2: 50}\n    shadow: 3\n", {"1", "2"}),
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


def batch_totals(url: str) -> tuple[float, float]:
    """Rows and session calls so far, over every version (the batch-size histogram)."""
    rows = calls = 0.0
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("rlplat_serving_batch_size_sum{"):
            rows += float(line.split()[-1])
        elif line.startswith("rlplat_serving_batch_size_count{"):
            calls += float(line.split()[-1])
    return rows, calls


def cpu_seconds(pid: int) -> float:
    """The process's user + system CPU time so far (Linux /proc): a server's cost per request
    that does not depend on how the machine shares its cores with the load generator."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def route_to(url: str, cfg: Path, model: str, routing: str, obs: np.ndarray, session: str) -> None:
    """Rewrite serving.yaml for `routing` (atomically: the server never reads half a file)
    and return once answers show it: the right arms, and for the shadow, copies counted."""
    lines, arms = ROUTINGS[routing]
    tmp = cfg.with_suffix(".tmp")
    tmp.write_text(ENTRY.format(model=model, session=session) + lines)
    tmp.replace(cfg)
    body = {"instances": obs[:1].tolist()}
    deadline = time.time() + 60
    while time.time() < deadline:
        seen = {
            requests.post(f"{url}/v1/models/{model}:predict", json=body, timeout=10,
                          headers={"X-Rlplat-Route": f"probe-{i}"}).headers.get("x-rlplat-arm")
            for i in range(16)
        }  # fmt: skip
        mirrored = "shadow" not in routing or shadow_figures(url).get("copies_ok", 0) > 0
        if seen <= arms and len(seen) == len(arms) and mirrored:
            return
        time.sleep(0.1)
    sys.exit(f"error: the server did not take routing {routing} within 60 s (answers: {seen})")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-base-path", type=Path, default=Path("models"))
    ap.add_argument("--model", default="lunarlander_pg")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--seconds", type=float, default=4.0, help="per round")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per routing and level")
    ap.add_argument(
        "--requests-per-key",
        type=int,
        default=200,
        help="requests sent with one routing key (wrk): one per episode, as `rlplat play` "
        "sends (200: a LunarLander episode's order of length); 1: a fresh key per request; "
        "0: no key (each request split on its own)",
    )
    ap.add_argument("--warmup-seconds", type=float, default=1.0)
    ap.add_argument(
        "--client",
        choices=["wrk", "python"],
        default="wrk" if shutil.which("wrk") else "python",
        help="load generator: wrk (C; the default when on the PATH) or serve_load's Python one",
    )
    ap.add_argument(
        "--session-remapping",
        action="store_true",
        help="serve with Grappler's remapper on (serving.yaml session_remapping: true), "
        "TensorFlow's default graph, for a before/after comparison",
    )
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    session = "session_remapping: true\n" if args.session_remapping else ""

    version_dir, meta = latest_version(args.model_base_path, args.model)
    obs = np.random.default_rng(0).normal(size=(256, *meta["observation_shape"]))
    obs = obs.astype(np.float32)
    path = f"/v1/models/{args.model}:predict"
    client_paths = [f"/v1/models/{args.model}/versions/{v}:predict" for v in (1, 2)]
    load_before = os.getloadavg()
    names = list(ROUTINGS)
    rounds = {(n, c): [] for n in names for c in args.concurrency}
    with tempfile.TemporaryDirectory() as tmp:
        base, cfg = Path(tmp) / "models", Path(tmp) / "serving.yaml"
        copies(version_dir, args.model, base)
        cfg.write_text(ENTRY.format(model=args.model, session=session))
        with (
            wrk_script(WRK_KEYED) as script,
            running_server_process(base, args.model, "--config", str(cfg)) as (url, server),
        ):
            client = Client(args.client, url, script, obs, args.requests_per_key)
            for r in range(args.rounds + 1):  # round 0 warms every routing up, unrecorded
                for n in names[r % len(names) :] + names[: r % len(names)]:  # rotated
                    route_to(url, cfg, args.model, n, obs, session)
                    for c in args.concurrency:
                        paths = client_paths if n == "client_split" else path
                        result = one_round(client, url, server.pid, paths, c,
                                           args.seconds if r else args.warmup_seconds)  # fmt: skip
                        if r:
                            rounds[n, c].append(result)
            shadow = shadow_figures(url)  # only the shadow routing makes copies
    summary = summarize_wrk if args.client == "wrk" else summarize
    levels = {n: [summary(c, rounds[n, c]) for c in args.concurrency] for n in names}
    print(json.dumps(report(args, version_dir, levels, shadow, load_before)))


def one_round(client: Client, url: str, pid: int, paths, c: int, seconds: float) -> dict:
    """One round at concurrency `c`: the client's figures, rows per session call and the
    server's CPU time per request."""
    before, cpu = batch_totals(url), cpu_seconds(pid)
    result = client.round(paths, c, seconds)
    cpu = cpu_seconds(pid) - cpu
    rows, calls = np.subtract(batch_totals(url), before)
    result["rows_per_call"] = round(rows / max(calls, 1), 2)
    result["server_cpu_us_per_request"] = round(
        1e6 * cpu / max(result["requests_per_s"] * result["seconds"], 1), 2
    )
    return result


class Client:
    """The load generator of every round (`kind`: wrk or python), one per benchmark run."""

    def __init__(self, kind: str, url: str, script: str, obs: np.ndarray, per_key: int) -> None:
        self.kind, self.url, self.script, self.obs, self.per_key = kind, url, script, obs, per_key
        self.wrk = shutil.which("wrk") or "wrk"
        self.body = json.dumps({"instances": [obs[0].tolist()]}).encode()

    def round(self, paths: str | list[str], c: int, seconds: float) -> dict:
        """One round of keyed batch-1 requests at concurrency `c`: its throughput, latency."""
        paths = [paths] if isinstance(paths, str) else paths
        if self.kind == "python":
            port = int(self.url.rsplit(":", 1)[1])
            return uvloop.run(load(port, paths, c, seconds, self.obs, keyed=self.per_key > 0))
        env = {
            "RLPLAT_WRK_PATHS": ",".join(paths),
            "RLPLAT_WRK_PER_KEY": str(self.per_key),
            "RLPLAT_WRK_EPISODES": str(c),
        }
        return wrk_round(self.wrk, self.script, self.url + paths[0], c, seconds, self.body, env)


def cpu_ratios(concurrency: list[int], levels: dict) -> dict[str, float]:
    """Each routing's server CPU per request over no split's, median of the rounds' ratios:
    what the routing costs the server, whatever share of the cores the client took."""
    out = {}
    for i, c in enumerate(concurrency):
        base = levels["no_split"][i]["rounds"]
        for n in list(ROUTINGS)[1:]:
            per = [r["server_cpu_us_per_request"] / b["server_cpu_us_per_request"]
                   for r, b in zip(levels[n][i]["rounds"], base, strict=True)]  # fmt: skip
            out[f"{n}_c{c}"] = round(float(np.median(per)), 3)
    return out


def median_ci(values: list[float], draws: int = 4000) -> list[float]:
    """A 95% bootstrap interval of the median of `values` (rounds' ratios)."""
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(values, size=(draws, len(values))), axis=1)
    return [round(float(q), 3) for q in np.percentile(medians, [2.5, 97.5])]


def report(args, version_dir: Path, levels: dict, shadow: dict, load_before) -> dict:
    """Throughput ratios against no split: each round's own (every routing of one round ran
    within the same half-minute, so a round's ratio compares routings under about the same
    load), their median (the headline) and the pooled ones."""
    ratios, per_round = {}, {}
    for i, c in enumerate(args.concurrency):
        base = levels["no_split"][i]
        for n in list(ROUTINGS)[1:]:
            ratios[f"{n}_vs_no_split_rps_c{c}"] = round(
                levels[n][i]["requests_per_s"] / base["requests_per_s"], 3
            )
            per_round[f"{n}_c{c}"] = [
                round(r["requests_per_s"] / b["requests_per_s"], 3)
                for r, b in zip(levels[n][i]["rounds"], base["rounds"], strict=True)
            ]
    cpu = cpu_ratios(args.concurrency, levels)
    for lv in levels.values():
        for level in lv:  # the shadow's calls count too: rows per call of both versions
            rounds = level.pop("rounds")
            level["rows_per_session_call"] = round(
                float(np.mean([r["rows_per_call"] for r in rounds])), 2
            )
            level["server_cpu_us_per_request"] = round(
                float(np.median([r["server_cpu_us_per_request"] for r in rounds])), 2
            )
    medians = {k: round(float(np.median(v)), 3) for k, v in per_round.items()}
    split_cost = max(1 - medians[f"split_50_50_c{c}"] for c in args.concurrency)
    routing_cost = max(1 - medians[f"split_one_version_c{c}"] for c in args.concurrency)
    vs_client = {
        f"c{c}": round(
            ratios[f"split_50_50_vs_no_split_rps_c{c}"]
            / ratios[f"client_split_vs_no_split_rps_c{c}"],
            3,
        )
        for c in args.concurrency
    }
    return {
        "benchmark": "serve_ab",
        "model": f"{args.model} v{version_dir.name} (as versions 1, 2 and shadow 3)",
        "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "client": args.client,
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        "requests_per_key": args.requests_per_key,
        "session_remapping": args.session_remapping,
        "throughput_ratios": ratios,
        "per_round_ratios": per_round,
        "median_round_ratios": medians,
        "median_round_ratio_95ci": {k: median_ci(v) for k, v in per_round.items()},
        "server_cpu_per_request_ratios": cpu,
        "split_cost": round(split_cost, 3),
        "split_cost_target": TARGET_SPLIT_COST,
        "split_cost_met": split_cost <= TARGET_SPLIT_COST,
        "routing_cost": round(routing_cost, 3),
        "server_split_vs_client_split_rps": vs_client,
        "shadow": shadow,
        "levels": levels,
    }


if __name__ == "__main__":
    main()
