"""Why a full-integer policy chooses differently: the SavedModel's action gap (best minus
second-best output) against the int8 flatbuffer's output error, on the same states; one
JSON line.

    .venv/bin/python benchmarks/litert_action_gap.py models/lunarlander_pg/1 \
        models/lunarlander_dqn/1 --out benchmarks/results/litert_action_gap.json

Per model: the states of 5 deterministic SavedModel episodes on the parity report's seeds
(0-4); the serving outputs (Q-values or logits) of the SavedModel and of its int8 flatbuffer
(converted as `rlplat export --format litert --quantize int8` does, calibrated on the
policy's own states); then the gap's quartiles, the int8 error's median and 90th
percentile (absolute, over every action's output), the action agreement, and the agreement
split by whether a state's gap is below the median int8 error. A discrete policy whose gaps
are of the int8 error's size cannot keep its choices under int8, whatever the calibration.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _machine import emit, machine  # benchmarks/ is sys.path[0] when run as a script

import rlplat  # noqa: F401  (environment set-up before TensorFlow)
from rlplat import litert, litert_export
from rlplat.evaluate import run_episodes
from rlplat.policies import load_policy, version_dir


def visited_states(policy, episodes: int) -> np.ndarray:
    seen: list[np.ndarray] = []

    def act(observations: np.ndarray) -> np.ndarray:
        seen.append(np.array(observations))
        return policy.act(observations)

    run_episodes(act, policy.env, episodes, 0)
    return np.concatenate(seen)


def saved_outputs(version: Path, states: np.ndarray, key: str) -> np.ndarray:
    import tensorflow as tf

    signature = tf.saved_model.load(str(version)).signatures[litert.SIGNATURE]
    return signature(observations=tf.constant(states))[key].numpy()


def top2_gap(values: np.ndarray) -> np.ndarray:
    top = np.sort(values, axis=-1)
    return top[:, -1] - top[:, -2]


def measure(model: Path, episodes: int, root: Path) -> dict:
    version = version_dir(model)
    if version is None:
        raise SystemExit(f"{model}: not an exported model (models/NAME[/VERSION])")
    policy = load_policy(version)
    out = root / f"{version.parent.name}-int8.tflite"
    litert_export.export(version, "int8", out, check=False)
    small = litert.load(out)
    states = visited_states(policy, episodes)
    key = "q_values" if "q_values" in small.outputs(states[:1]) else "logits"
    full = saved_outputs(version, states, key)
    quant = np.concatenate([small.outputs(s[None])[key] for s in states])
    gap = top2_gap(full)
    error = np.abs(quant - full)
    agree = np.argmax(quant, -1) == np.argmax(full, -1)
    close = gap < np.median(error)
    q = lambda x, p: round(float(np.percentile(x, p)), 4)  # noqa: E731
    return {
        "model": version.parent.name, "version": int(version.name), "output": key,
        "states": len(states), "episodes": episodes,
        "output_range": [q(full, 0), q(full, 100)],
        "gap_quartiles": [q(gap, 25), q(gap, 50), q(gap, 75)],
        "int8_error_median": q(error, 50), "int8_error_p90": q(error, 90),
        "action_agreement": round(float(agree.mean()), 4),
        "share_gap_below_error": round(float(close.mean()), 4),
        "agreement_gap_below_error": round(float(agree[close].mean()), 4) if close.any() else None,
        "agreement_gap_above_error": round(float(agree[~close].mean()), 4)
        if (~close).any() else None,
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path, help="models/NAME or models/NAME/VERSION")
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON line here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rlplat-gap-") as tmp:
        results = [measure(m, args.episodes, Path(tmp)) for m in args.models]
    emit({"benchmark": "litert_action_gap", "models": results, **machine()}, args.out)


if __name__ == "__main__":
    main()
