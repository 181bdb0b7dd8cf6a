"""Bounded fuzz of `rlplat serve`'s REST API with malformed requests (hypothesis): random
methods, paths and bodies (broken JSON, wrong types, ragged or mis-shaped tensors, both or
neither of instances/inputs, NaN, huge numbers, junk bytes). Counts answers by status; a
5xx, a non-JSON error body or a server that stops answering correctly afterwards is a
failure. One JSON line.

    .venv/bin/python benchmarks/serve_fuzz.py --model-base-path models --model lunarlander_pg

tests/test_serving.py runs the same fuzz with fewer examples.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
import urllib.parse
from pathlib import Path

import requests
from _server import running_server
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

SUFFIXES = ["", ":predict", "/metadata", ":classify", ":regress", ":", ":predict/x", "/"]
KEYS = ["instances", "inputs", "signature_name", "observations"]


def mostly(common: st.SearchStrategy, rare: st.SearchStrategy, k: int = 6) -> st.SearchStrategy:
    """`common` k times out of k + 1 (st.one_of would draw each branch equally often)."""
    return st.integers(0, k).flatmap(lambda i: rare if i == 0 else common)


def requests_strategy(model: str, obs_dim: int) -> st.SearchStrategy:
    leaf = (
        st.none() | st.booleans() | st.integers(-(2**70), 2**70)
        | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12)
    )  # fmt: skip
    value = st.recursive(
        leaf,
        lambda c: st.lists(c, max_size=5)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), c, max_size=4),
        max_leaves=30,
    )  # fmt: skip
    number = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.integers(-9, 9)
    row = st.lists(number | leaf, min_size=obs_dim - 1, max_size=obs_dim + 1)
    rows = st.lists(row, max_size=4) | st.lists(
        st.fixed_dictionaries({"observations": row}), max_size=3
    )
    tensor = rows | value | st.dictionaries(st.sampled_from(["observations", "x"]), rows)
    body = st.fixed_dictionaries(
        {},
        optional={
            "signature_name": st.sampled_from(["serving_default", "sample", "nope", ""]) | value,
            "instances": tensor,
            "inputs": tensor,
        },
    ).map(lambda d: json.dumps(d).encode())
    raw = st.binary(max_size=120) | value.map(lambda v: json.dumps(v).encode())
    # Mostly the real model's predict URL, so most bodies reach the request parser.
    segment = mostly(
        st.just(model), st.sampled_from(["nope", "..", "%2e%2e", "a/b"]) | st.text(max_size=8)
    )
    version = mostly(st.just(""), st.sampled_from(["/versions/1", "/versions/999", "/versions/-1",
                     "/versions/x", "/labels/stable", "/labels/"]))  # fmt: skip
    path = mostly(st.builds(
        lambda name, ver, suf: f"/v1/models/{urllib.parse.quote(name, safe='')}{ver}{suf}",
        segment, version, mostly(st.just(":predict"), st.sampled_from(SUFFIXES)),
    ), st.sampled_from(["/", "/v1/models", "/v1/models/", "/metrics", "/v2/models/x"]))  # fmt: skip
    method = mostly(st.just("POST"), st.sampled_from(["GET", "PUT", "DELETE"]))
    return st.tuples(method, path, mostly(body, raw, 3))


def fuzz(base_url: str, model: str, obs_dim: int, examples: int, seed: int = 0) -> dict:
    """Runs `examples` random requests; returns counts (raises nothing: the caller judges)."""
    counts: collections.Counter = collections.Counter()
    bad: list[str] = []
    session = requests.Session()

    @settings(max_examples=examples, phases=[Phase.generate], database=None, deadline=None,
              suppress_health_check=list(HealthCheck), derandomize=False)  # fmt: skip
    @given(requests_strategy(model, obs_dim))
    def one(req: tuple[str, str, bytes]) -> None:
        method, path, body = req
        try:
            r = session.request(method, base_url + path, data=body, timeout=10)
        except requests.RequestException as exc:
            counts["no answer"] += 1
            bad.append(f"{method} {path}: {type(exc).__name__}")
            return
        counts[r.status_code] += 1
        if r.status_code >= 500:
            bad.append(f"{method} {path} {body[:80]!r} -> {r.status_code} {r.text[:120]}")
        elif r.status_code >= 400:
            try:
                ok = isinstance(r.json().get("error"), str)
            except ValueError:
                ok = False
            if not ok:
                bad.append(f"{method} {path} -> {r.status_code} without a JSON error")

    import random

    random.seed(seed)
    one()
    check = session.post(
        f"{base_url}/v1/models/{model}:predict",
        data=json.dumps({"instances": [[0.0] * obs_dim]}),
        timeout=10,
    )
    return {
        "requests": sum(counts.values()),
        "by_status": {str(k): v for k, v in sorted(counts.items(), key=str)},
        "5xx": sum(v for k, v in counts.items() if isinstance(k, int) and k >= 500),
        "no_answer": counts["no answer"],
        "bad": bad[:5],
        "serves_correctly_after": check.status_code == 200 and "predictions" in check.json(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-base-path", type=Path, default=Path("models"))
    ap.add_argument("--model", default="lunarlander_pg")
    ap.add_argument("--examples", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with running_server(args.model_base_path, args.model) as base:
        meta = requests.get(f"{base}/v1/models/{args.model}/metadata", timeout=10)
        sig = meta.json()["metadata"]["signature_def"]["signature_def"]["serving_default"]
        dims = sig["inputs"]["observations"]["tensor_shape"]["dim"]
        t0 = time.perf_counter()
        result = fuzz(base, args.model, int(dims[-1]["size"]), args.examples, args.seed)
        wall = time.perf_counter() - t0
    print(json.dumps({"benchmark": "serve_fuzz", "model": args.model, "examples": args.examples,
                      "seed": args.seed, "wall_s": round(wall, 1), **result}))  # fmt: skip


if __name__ == "__main__":
    main()
