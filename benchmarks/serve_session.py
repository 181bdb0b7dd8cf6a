"""What Grappler's remapper (fused MatMul + BiasAdd + activation kernels) does to a served
session call: the median time of one call at several batch sizes with the remapper on
(TensorFlow's default) and off (`rlplat serve`'s default, ServingConfig.session_remapping),
and how far the outputs of the two sessions differ; one JSON line.

    .venv/bin/python benchmarks/serve_session.py --version-dir models/lunarlander_pg/2 \
        --version-dir models/breakout_ppo/1

Each version directory is loaded twice as the server loads it (rlplat/serving/servable.py),
once per setting, and timed in this process on the same random inputs (pixels as uint8).
CPU-bound medians: the figures move with the CPU (and its oneDNN code paths); the ratio
between the two settings travels better than the figures.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
from serve_batch_overhead import median_us

import rlplat  # noqa: F401  (environment set-up before TensorFlow)


def inputs(sig, rows: int, rng: np.random.Generator) -> list[np.ndarray]:
    arrays = []
    for spec in sig.inputs.values():
        shape = [rows, *spec.shape[1:]]
        if spec.dtype == np.uint8:
            arrays.append(rng.integers(0, 256, shape, dtype=np.uint8))
        else:
            arrays.append(rng.normal(size=shape).astype(spec.dtype))
    return arrays


def measure(version_dir: Path, sizes: list[int], reps: int) -> dict:
    from rlplat.serving.config import ServingConfig
    from rlplat.serving.servable import Servable

    servables = {
        on: Servable("m", 1, version_dir, ServingConfig(session_remapping=on))
        for on in (True, False)
    }
    rng = np.random.default_rng(0)
    out: dict = {"version_dir": str(version_dir)}
    worst = 0.0
    same_actions = True
    for n in sizes:
        arrays = inputs(servables[True].signature(None), n, rng)
        heavy = arrays[0].size // n > 1000  # pixels: a few hundred calls are enough
        for on, servable in servables.items():
            sig = servable.signature(None)
            key = f"remapping_{'on' if on else 'off'}_us_rows{n}"
            call = lambda sig=sig, arrays=arrays: sig.run(*arrays)  # noqa: E731
            out[key] = median_us(call, reps // 20 if heavy else reps, warm=20 if heavy else 200)
        results = {on: s.signature(None).run(*arrays) for on, s in servables.items()}
        for a, b in zip(results[True], results[False], strict=True):
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))))
            if a.dtype.kind in "iu":
                same_actions = same_actions and bool(np.array_equal(a, b))
        out[f"off_vs_on_rows{n}"] = round(
            out[f"remapping_off_us_rows{n}"] / out[f"remapping_on_us_rows{n}"], 3
        )
    out["max_abs_output_difference"] = worst
    out["integer_outputs_equal"] = same_actions
    for servable in servables.values():
        servable.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--version-dir", type=Path, action="append", required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 13, 26, 64])
    ap.add_argument("--reps", type=int, default=4000)
    args = ap.parse_args()
    for d in args.version_dir:
        if not (d / "saved_model.pb").is_file():
            raise SystemExit(f"error: no saved_model.pb in {d}")
    results = [measure(d, args.sizes, args.reps) for d in args.version_dir]
    print(
        json.dumps(
            {
                "benchmark": "serve_session",
                "cpus": os.cpu_count(),
                "loadavg": [round(x, 2) for x in os.getloadavg()],
                "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)"),
                "models": results,
            }
        )
    )


if __name__ == "__main__":
    main()
