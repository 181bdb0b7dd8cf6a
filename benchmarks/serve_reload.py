"""Hot reload under load: new versions dropped into a served model while clients predict;
how long until each takes traffic, whether any request fails, and what a half-written
version does; one JSON line.

    .venv/bin/python benchmarks/serve_reload.py --model-base-path models --model lunarlander_pg

Works on a copy of the model's latest version in a temp dir: versions 2..N+1 are copied in
as `rlplat export` writes them (a dot-named temp dir renamed into place); then one version
is written the way a slow `cp -r` leaves it (half a graph file, no variables), checked to be
refused while the previous version keeps serving, and completed. 16 clients predict the
whole time (the load generator of serve_load.py); every answer must be a 200.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import uvloop
from _server import latest_version, running_server
from serve_load import load


def wait_for(url: str, test, timeout: float = 30.0) -> float:
    t0 = time.perf_counter()
    while True:
        r = requests.get(url, timeout=5)
        if r.status_code == 200 and test(r.json()):
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            sys.exit(f"error: {url} did not reach the expected state: {r.text[:300]}")
        time.sleep(0.01)


def states(status: dict) -> dict[str, str]:
    return {s["version"]: s["state"] for s in status["model_version_status"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-base-path", type=Path, default=Path("models"))
    ap.add_argument("--model", default="lunarlander_pg")
    ap.add_argument("--swaps", type=int, default=5)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    src, meta = latest_version(args.model_base_path, args.model)
    obs = np.random.default_rng(0).normal(size=(256, *meta["observation_shape"]))
    obs = obs.astype(np.float32)
    base = Path(tempfile.mkdtemp(prefix="rlplat-reload-"))
    model_dir = base / args.model
    shutil.copytree(src, model_dir / "1")

    with running_server(base, args.model) as url:
        status_url = f"{url}/v1/models/{args.model}"
        port = int(url.rsplit(":", 1)[1])
        result: dict = {}
        stop = threading.Event()

        def hammer() -> None:
            result.update(uvloop.run(load(port, f"/v1/models/{args.model}:predict",
                                          args.concurrency, 3600, obs, stop)))  # fmt: skip

        thread = threading.Thread(target=hammer, daemon=True)
        thread.start()
        time.sleep(1.0)
        swaps = []
        for v in range(2, args.swaps + 2):
            incoming = model_dir / f".incoming-{v}"
            shutil.copytree(src, incoming)
            os.rename(incoming, model_dir / str(v))
            available = wait_for(status_url, lambda s, v=v: states(s).get(str(v)) == "AVAILABLE")
            old_gone = wait_for(status_url, lambda s, v=v: states(s).get(str(v - 1)) == "END")
            swaps.append({"version": v, "available_s": round(available, 3),
                          "previous_unloaded_s": round(available + old_gone, 3)})  # fmt: skip
            time.sleep(0.5)

        # A half-written version: refused, the previous one keeps serving, then completed.
        v = args.swaps + 2
        target = model_dir / str(v)
        target.mkdir()
        pb = (src / "saved_model.pb").read_bytes()
        (target / "saved_model.pb").write_bytes(pb[: len(pb) // 2])
        refused = wait_for(status_url, lambda s: states(s).get(str(v)) == "END")
        status = requests.get(status_url, timeout=5).json()
        failed = next(s for s in status["model_version_status"] if s["version"] == str(v))
        still_serving = states(status).get(str(v - 1)) == "AVAILABLE"
        time.sleep(1.0)
        shutil.copytree(src, target, dirs_exist_ok=True)
        recovered = wait_for(status_url, lambda s: states(s).get(str(v)) == "AVAILABLE")
        time.sleep(1.0)
        stop.set()  # each client stops after its next answer
        thread.join(timeout=60)

    shutil.rmtree(base, ignore_errors=True)
    avail = [s["available_s"] for s in swaps]
    print(json.dumps({
        "benchmark": "serve_reload",
        "model": f"{args.model} (copies of {src.name})",
        "clients": args.concurrency,
        "swaps": swaps,
        "available_s_median": round(statistics.median(avail), 3),
        "available_s_max": round(max(avail), 3),
        "half_written": {
            "refused_after_s": round(refused, 3),
            "status": failed["state"],
            "error": failed["status"]["error_message"][:160],
            "previous_kept_serving": still_serving,
            "available_after_completion_s": round(recovered, 3),
        },
        "requests": len(result["lat_ms"]),
        "errors": result["errors"],
        "requests_per_s": result.get("requests_per_s"),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
