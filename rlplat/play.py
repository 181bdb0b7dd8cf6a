"""`rlplat play`: an environment client that asks a model server for every action.

The policy is a `LoadedPolicy` whose act() is one TF Serving REST :predict call per step
(all episodes' observations in one request), so play runs the same episode code, seeds and
report as `rlplat eval`; any TF Serving-compatible server works, rlplat's or TF Serving's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
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


class ArmRecorder:
    """`rlplat play --compare-arms`: one routing key per episode (the episodes run one at a
    time), and which version (and arm) of the server's split answered each episode."""

    def __init__(self, seed: int) -> None:
        self.seed, self.episode = seed, 0
        self.answers: dict[int, list[tuple[str, str]]] = {}  # episode -> (version, arm) seen

    def key(self) -> str:
        """Reproducible: a rerun with the same seed sends the same keys (same arms)."""
        return f"play-seed{self.seed}-episode{self.episode}"

    def saw(self, headers: Mapping[str, str]) -> None:
        seen = (headers.get("X-Rlplat-Version", "?"), headers.get("X-Rlplat-Arm", ""))
        answers = self.answers.setdefault(self.episode, [])
        if seen not in answers:
            answers.append(seen)

    def end(self, episode: int, _return: float, _length: int) -> None:
        self.episode = episode + 1

    def version(self, episode: int) -> str:
        """The version that played the episode ("1+2" if the weights changed during it)."""
        return "+".join(v for v, _ in self.answers.get(episode, [("?", "")]))

    def arm(self, episode: int) -> str:
        return "+".join(a for _, a in self.answers.get(episode, [("?", "")]) if a)

    def episode_kwargs(self, kwargs: dict) -> dict:
        """run_episodes' arguments with episodes one at a time and this recorder told of each
        end (after any hook already there, e.g. the videos')."""
        before = kwargs.get("on_episode_end")

        def end(episode: int, ret: float, length: int) -> None:
            if before is not None:
                before(episode, ret, length)
            self.end(episode, ret, length)

        return {**kwargs, "one_at_a_time": True, "on_episode_end": end}

    def report(self, returns, console) -> dict:
        """Print the per-version table; what play.json gets: each episode's version."""
        from rlplat.arms import compare, table

        versions = [self.version(i) for i in range(len(returns))]
        stats = compare(returns, versions)
        console.print(table(stats, f"arms: {len(returns)} episodes, one routing key each"))
        return {
            "episode_versions": versions,
            "episode_arms": [self.arm(i) for i in range(len(returns))],
            "arms": [s.to_dict() for s in stats],
        }


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
    arms: ArmRecorder | None = None,
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
        if arms is not None:
            headers = {"X-Rlplat-Route": arms.key()}
            predictions = _call(session, "post", predict, timeout, json=body, headers=headers,
                                on_headers=arms.saw)["predictions"]  # fmt: skip
        else:
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


def _call(
    session: requests.Session, method: str, url: str, timeout: float, on_headers=None, **kw
) -> dict:
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
    if on_headers is not None:
        on_headers(response.headers)
    return data
