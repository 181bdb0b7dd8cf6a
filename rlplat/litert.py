"""A policy as a LiteRT flatbuffer (`.tflite`), run by the LiteRT interpreter alone.

This module imports neither TensorFlow nor anything that does: `rlplat play --litert` and a
device run a policy with the interpreter (the `ai-edge-litert` package) and numpy only.
Writing the flatbuffer is rlplat/litert_export.py's job (TensorFlow's converter).

Beside each `X.tflite` lies `X.tflite.json`: the env the policy acts in, the input's
quantization, where the flatbuffer came from, and its parity report.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from rlplat._quiet_import import stderr_filtered
from rlplat.config import EnvConfig
from rlplat.errors import UserError
from rlplat.policies import LoadedPolicy

SIGNATURE = "serving_default"


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


@dataclass
class LiteRTModel:
    """One `.tflite` policy: `act` maps a batch of observations to actions."""

    path: Path
    meta: dict[str, Any]
    runner: Any  # the interpreter's signature runner
    input_dtype: np.dtype
    scale: float  # input quantization (0: none): q = round(x / scale) + zero_point
    zero_point: int

    def outputs(self, observations: np.ndarray) -> dict[str, np.ndarray]:
        return self.runner(observations=self.quantize(observations))

    def act(self, observations: np.ndarray) -> np.ndarray:
        return np.asarray(self.outputs(observations)["actions"])

    def quantize(self, observations: np.ndarray) -> np.ndarray:
        """The model's input: int8 models take q = round(x / scale) + zero_point."""
        x = np.asarray(observations)
        if not self.scale:
            return x.astype(self.input_dtype, copy=False)
        info = np.iinfo(self.input_dtype)
        q = np.round(x / self.scale) + self.zero_point
        return np.clip(q, info.min, info.max).astype(self.input_dtype)


def load(path: Path, num_threads: int = 1) -> LiteRTModel:
    """A `.tflite` policy with its sidecar; one-line errors for a missing or corrupt file."""
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such LiteRT model file")
    meta_path = sidecar(path)
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except ValueError as exc:
        raise UserError(f"{meta_path}: not valid JSON ({exc})") from None
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        runner = interpreter.get_signature_runner(SIGNATURE)
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{path}: not a LiteRT policy with a {SIGNATURE} signature ({first})"
        ) from None
    detail = runner.get_input_details()["observations"]
    scale, zero_point = detail["quantization"]
    model = LiteRTModel(path, meta, runner, np.dtype(detail["dtype"]), scale, int(zero_point))
    # The first call allocates and says so on descriptor 2 ("INFO: Created TensorFlow Lite
    # XNNPACK delegate for CPU."): make it here, without that line.
    with stderr_filtered(drop=(b"INFO: Created TensorFlow Lite",)):
        model.runner(observations=np.zeros((1, *detail["shape"][1:]), model.input_dtype))
    return model


def loaded_policy(model: LiteRTModel, env: EnvConfig | None = None) -> LoadedPolicy:
    """`model` for rlplat's episode code; `env` overrides the one its sidecar records."""
    if env is None:
        if "env" not in model.meta:
            raise UserError(f"{model.path}: no sidecar {sidecar(model.path).name} "
                            "recording its env (give --env)")  # fmt: skip
        if model.meta.get("env_module_dir"):
            from rlplat import envs

            envs.add_module_dir(model.meta["env_module_dir"])
        env = EnvConfig(**model.meta["env"])
    return LoadedPolicy(
        act=model.act, env=env, name=model.meta.get("name", model.path.stem),
        source=f"LiteRT {model.path}", out_dir=model.path.parent / "eval" / model.path.stem,
    )  # fmt: skip


def latency_ms(model: LiteRTModel, states: np.ndarray, calls: int = 500) -> dict[str, float]:
    """Per-action latency at batch 1 on this CPU: median and p99 over `calls` calls."""
    rows = [states[i % len(states)][None] for i in range(calls)]
    for x in rows[:20]:  # warm-up: the first calls resize and allocate
        model.act(x)
    times = []
    for x in rows:
        t0 = time.perf_counter()
        model.act(x)
        times.append(time.perf_counter() - t0)
    times.sort()
    return {
        "median_ms": round(statistics.median(times) * 1e3, 4),
        "p99_ms": round(times[int(0.99 * (len(times) - 1))] * 1e3, 4),
    }


def play_policy(path: Path, env_id: str | None) -> tuple[LoadedPolicy, bool]:
    """`rlplat play --litert PATH [--env ID]`: the policy, and whether its env is the one
    recorded beside it (used when `env_id` is None or the same id, so preprocessing such
    as `env.atari` comes with it; another id is played bare)."""
    model = load(path)
    recorded = (model.meta.get("env") or {}).get("id")
    same = env_id is None or env_id == recorded
    policy = loaded_policy(model, None if same else EnvConfig(id=env_id))
    return replace(policy, out_dir=None), same  # records go to ./play/NAME, as play's do
