"""A SavedModel version as a LiteRT flatbuffer, and how well the small policy still plays.

`convert` runs TensorFlow's converter on the version's `serving_default` signature (the
function a server calls: observation normalisation inside, the deterministic action and
the logits or Q-values out, uint8 input for pixels), in one of four modes:

- `none`: float32 weights and compute;
- `float16`: weights stored as float16, computed in float32;
- `dynamic`: int8 weights, activations quantized on the fly;
- `int8`: full integer (int8 weights and activations, int8 input where the input is
  float), calibrated on states the trained policy itself visits: deterministic episodes
  of the SavedModel on seeds apart from the parity episodes' (`policy_states`). A
  generic converter can only be given random noise or a dataset; in RL the policy makes
  its own.

`parity` then plays the same seeded episodes with the flatbuffer and the SavedModel.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from rlplat import litert, stats
from rlplat._quiet_import import stderr_filtered
from rlplat.errors import UserError
from rlplat.evaluate import run_episodes
from rlplat.policies import LoadedPolicy

QUANTIZE = ("none", "float16", "dynamic", "int8")
CALIBRATION_SEED = 999  # episode seeds 999,000 + i: apart from the parity seeds
CALIBRATION_STATES = 1000


def policy_states(policy: LoadedPolicy, episodes: int = 5, limit: int = CALIBRATION_STATES):
    """Observations the policy visits in `episodes` deterministic episodes (evenly
    thinned to at most `limit`): the int8 calibration set."""
    seen: list[np.ndarray] = []

    def act(observations: np.ndarray) -> np.ndarray:
        seen.append(np.array(observations))
        return policy.act(observations)

    run_episodes(act, policy.env, episodes, CALIBRATION_SEED)
    states = np.concatenate(seen)
    keep = np.linspace(0, len(states) - 1, min(limit, len(states))).astype(int)
    return states[keep]


def convert(version_dir: Path, quantize: str, states: np.ndarray | None = None) -> bytes:
    """The flatbuffer of `version_dir`'s serving signature; `states` calibrate int8."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(version_dir), signature_keys=[litert.SIGNATURE]
    )
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        if states is None or not len(states):
            raise ValueError("int8 needs calibration states")

        def representative():
            for x in states:
                yield {"observations": x[None]}

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if states.dtype != np.uint8:  # pixels come in as uint8 already
            converter.inference_input_type = tf.int8
    try:
        # The int8 calibrator runs TF's deprecated tf.lite.Interpreter, which warns, and the
        # converter prints its settings: neither is for the user.
        with warnings.catch_warnings(), stderr_filtered(drop=(b"fully_quantize:",)):
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            return converter.convert()
    except Exception as exc:  # the converter's own errors are many types, often long
        first = next((s for s in str(exc).splitlines() if s.strip()), type(exc).__name__)
        raise UserError(f"{version_dir}: LiteRT conversion ({quantize}) failed: {first}") from None


@dataclass
class Parity:
    """The flatbuffer against its SavedModel on the same seeded episodes."""

    quantize: str
    episodes: int
    action_agreement: float  # share of the SavedModel's steps where both chose alike
    saved_model_return: dict[str, float]  # mean and 95% interval
    litert_return: dict[str, float]
    paired_difference: dict[str, float]  # LiteRT - SavedModel, per episode seed
    size_bytes: int
    saved_model_bytes: int
    latency_ms: dict[str, float]  # batch 1 on this CPU
    within_interval: bool  # LiteRT's mean inside the SavedModel's 95% interval


def _interval(values: np.ndarray) -> dict[str, float]:
    """Mean and 95% Student interval (the mean itself as both ends below two values)."""
    mean, half = stats.mean_interval(values)
    half = half or 0.0
    return {"mean": mean, "low": mean - half, "high": mean + half}


def parity(
    saved: LoadedPolicy, model: litert.LiteRTModel, episodes: int = 20, seed: int = 0,
    say: Callable[[str], None] | None = None,
) -> Parity:  # fmt: skip
    """Play `episodes` seeded episodes with each policy; agreement is counted on the
    SavedModel's own trajectories (the flatbuffer asked at every step it saw)."""
    agree = [0, 0]
    seen: list[np.ndarray] = []  # the first 200 states, for the latency calls

    def probe(observations: np.ndarray) -> np.ndarray:
        actions = saved.act(observations)
        agree[0] += int(np.sum(model.act(observations) == actions))
        agree[1] += len(actions)
        if sum(map(len, seen)) < 200:
            seen.append(np.array(observations))
        return actions

    base = run_episodes(probe, saved.env, episodes, seed).returns
    small = run_episodes(model.act, saved.env, episodes, seed).returns
    states = np.concatenate(seen)[:200]
    source = Path(model.meta.get("source", ""))
    report = Parity(
        quantize=model.meta.get("quantize", "?"), episodes=episodes,
        action_agreement=agree[0] / max(1, agree[1]),
        saved_model_return=_interval(base), litert_return=_interval(small),
        paired_difference=_interval(small - base),
        size_bytes=model.path.stat().st_size, saved_model_bytes=_dir_bytes(source),
        latency_ms=litert.latency_ms(model, states), within_interval=False,
    )  # fmt: skip
    s = report.saved_model_return
    report.within_interval = bool(s["low"] <= report.litert_return["mean"] <= s["high"])
    if say is not None:
        say(describe(report))
    return report


def _dir_bytes(path: Path) -> int:
    if not path.is_dir():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def describe(r: Parity) -> str:
    """The report in a few lines, the verdict first."""
    s, q, d = r.saved_model_return, r.litert_return, r.paired_difference
    verdict = (
        "parity: the LiteRT mean return is inside the SavedModel's 95% interval"
        if r.within_interval
        else "PARITY FAILED: the LiteRT mean return is outside the SavedModel's 95% interval "
        f"({q['mean']:.1f} against [{s['low']:.1f}, {s['high']:.1f}])"
    )
    why = [] if r.within_interval else [
        f"  the LiteRT policy chose another action on {1 - r.action_agreement:.0%} of the "
        "steps: quantization error above the gap between the best two outputs flips the "
        "choice; --quantize dynamic or float16 keep more precision"
    ]  # fmt: skip
    return "\n".join([
        verdict, *why,
        f"  {r.quantize}: {r.size_bytes:,} bytes (SavedModel {r.saved_model_bytes:,}); "
        f"batch-1 latency median {r.latency_ms['median_ms']:.3f} ms, "
        f"p99 {r.latency_ms['p99_ms']:.3f} ms",
        f"  action agreement {r.action_agreement:.1%} of the SavedModel's steps; "
        f"return over {r.episodes} episodes: SavedModel {s['mean']:.1f} "
        f"[{s['low']:.1f}, {s['high']:.1f}], LiteRT {q['mean']:.1f} "
        f"[{q['low']:.1f}, {q['high']:.1f}], paired difference {d['mean']:+.1f} "
        f"[{d['low']:+.1f}, {d['high']:+.1f}]",
    ])  # fmt: skip


def replace(target: Path, data: bytes) -> None:
    """Write `data` under a temporary name and rename it to `target`, so the file is never
    seen half-written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, target)


def record_parity(path: Path, report: Parity) -> None:
    """Add `report` to `path`'s sidecar."""
    meta_path = litert.sidecar(path)
    meta = json.loads(meta_path.read_text())
    meta["parity"] = asdict(report)
    replace(meta_path, json.dumps(meta, indent=2).encode())


def export(
    version_dir: Path, quantize: str, out: Path | None = None, check: bool = True,
    episodes: int = 20, say: Callable[[str], None] | None = None,
) -> tuple[Path, Parity | None]:  # fmt: skip
    """`version_dir` (models/NAME/V) as `out` (default models/NAME/litert/NAME-vV-MODE.tflite)
    with its sidecar; then, unless not `check`, the parity report (recorded beside it)."""
    from rlplat.policies import load_policy

    if quantize not in QUANTIZE:
        raise UserError(f"--quantize: {quantize!r} is not one of {', '.join(QUANTIZE)}")
    saved = load_policy(version_dir)
    meta = json.loads((version_dir / "assets.extra" / "rlplat.json").read_text())
    states = policy_states(saved) if quantize == "int8" else None
    flatbuffer = convert(version_dir, quantize, states)
    if out is None:
        name = f"{meta['name']}-v{version_dir.name}-{quantize}.tflite"
        out = version_dir.parent / "litert" / name
    keep = ("name", "env", "env_module_dir", "observation_shape", "action_space", "agent_type")
    sidecar_meta = {
        **{k: meta.get(k) for k in keep},
        "format": "litert", "quantize": quantize, "source": str(version_dir.resolve()),
        "calibration": None if states is None else {
            "states": len(states), "episodes": 5, "episode_seed": CALIBRATION_SEED,
        },
    }  # fmt: skip
    replace(out, flatbuffer)
    model = litert.load(out)  # (a sidecar left by an earlier export is replaced below)
    sidecar_meta["input"] = {"dtype": model.input_dtype.name, "scale": model.scale,
                             "zero_point": model.zero_point}  # fmt: skip
    model.meta = sidecar_meta
    replace(litert.sidecar(out), json.dumps(sidecar_meta, indent=2).encode())
    if not check:
        return out, None
    report = parity(saved, model, episodes=episodes, say=say)
    record_parity(out, report)
    return out, report


def export_path(
    path: Path, quantize: str, model_base_path: Path | None = None, out: Path | None = None,
    check: bool = True, say: Callable[[str], None] | None = None,
) -> tuple[Path, Parity | None]:  # fmt: skip
    """`rlplat export PATH --format litert`: a run directory is first exported as the next
    SavedModel version (as `rlplat export RUN` does); a model (models/NAME[/V]) is
    converted from its latest (or given) version."""
    from rlplat.policies import version_dir
    from rlplat.run_export import export_run

    if (path / "config.yaml").is_file():
        version = export_run(path, model_base_path)
        if say is not None:
            say(f"SavedModel: {version}")
    elif (version := version_dir(path)) is None:
        raise UserError(
            f"{path}: neither a run directory (config.yaml) nor an exported model "
            "(models/NAME or models/NAME/VERSION with saved_model.pb)"
        )
    return export(version, quantize, out, check, say=say)


def evaluate(path: Path, episodes: int, seed: int, say: Callable[[str], None]) -> Parity:
    """`rlplat eval X.tflite`: the parity report against the SavedModel it came from."""
    from rlplat.policies import load_policy

    model = litert.load(path)
    source = Path(model.meta.get("source", ""))
    if not (source / "saved_model.pb").is_file():
        raise UserError(
            f"{path}: its SavedModel ({source or 'not recorded'}) is not there to compare "
            f"with; play it alone with rlplat play --litert {path}"
        )
    report = parity(load_policy(source), model, episodes=episodes, seed=seed, say=say)
    record_parity(path, report)
    return report
