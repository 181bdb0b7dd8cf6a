"""`rlplat play`: an environment client that asks a model server for every action.

The policy is a `LoadedPolicy` whose act() is one TF Serving REST :predict call per step
(all episodes' observations in one request), so play runs the same episode code, seeds and
report as `rlplat eval`; any TF Serving-compatible server works, rlplat's or TF Serving's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import requests

from rlplat.config import EnvConfig
from rlplat.errors import UserError
from rlplat.policies import LoadedPolicy


def recorded_env(model_base_path: Path, model: str, version: int | None = None) -> EnvConfig:
    """The env a model was trained on, as its export recorded it (assets.extra/rlplat.json
    of that version, or of the latest one) under a local model base path."""
    model_dir = Path(model_base_path) / model
    found = sorted(int(p.name) for p in model_dir.glob("*") if p.name.isdigit())
    chosen = version if version is not None else (found[-1] if found else None)
    meta = model_dir / str(chosen) / "assets.extra" / "rlplat.json"
    try:
        return EnvConfig(**json.loads(meta.read_text())["env"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"--env: not given, and {meta if chosen is not None else model_dir} has no "
            "recorded env to default to (give --env ID, or --model-base-path)"
        ) from None


def model_url(server: str, model: str, version: int | None, label: str | None) -> str:
    url = f"{server.rstrip('/')}/v1/models/{model}"
    if version is not None:
        url += f"/versions/{version}"
    elif label is not None:
        url += f"/labels/{label}"
    return url


def remote_policy(
    server: str,
    model: str,
    env: EnvConfig,
    version: int | None = None,
    label: str | None = None,
    signature: str = "serving_default",
    token: str | None = None,
    timeout: float = 10.0,
) -> LoadedPolicy:
    """Checks the model is there (one line naming what is wrong if not) before any step."""
    session = requests.Session()
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    url = model_url(server, model, version, label)
    status = _call(session, "get", url, timeout)
    states = {s["version"]: s["state"] for s in status.get("model_version_status", [])}
    if "AVAILABLE" not in states.values():
        raise UserError(f"{url}: no available version (states: {states})")
    predict = url + ":predict"

    def act(observations: np.ndarray) -> np.ndarray:
        body = {"signature_name": signature, "instances": observations.tolist()}
        predictions = _call(session, "post", predict, timeout, json=body)["predictions"]
        if predictions and isinstance(predictions[0], dict):
            if "actions" not in predictions[0]:
                raise UserError(
                    f"{predict}: signature '{signature}' has no 'actions' output "
                    f"(outputs: {sorted(predictions[0])})"
                )
            predictions = [p["actions"] for p in predictions]
        return np.asarray(predictions)

    return LoadedPolicy(
        act=act, env=env, name=model, source=f"server {url} ({signature})", out_dir=None
    )


def _call(session: requests.Session, method: str, url: str, timeout: float, **kw) -> dict:
    try:
        response = getattr(session, method)(url, timeout=timeout, **kw)
    except requests.ConnectionError:
        raise UserError(f"{url}: cannot connect (is `rlplat serve` running there?)") from None
    except requests.Timeout:
        raise UserError(f"{url}: no answer within {timeout:g} s") from None
    try:
        data = response.json()
    except ValueError:
        data = {"error": response.text[:200]}
    if response.status_code != 200:
        raise UserError(f"{url}: HTTP {response.status_code}: {data.get('error', data)}")
    return data
