"""`rlplat play`: an environment client that asks a model server for every action.

The policy is a `LoadedPolicy` whose act() is one TF Serving call per step (all episodes'
observations in one request), so play runs the same episode code, seeds and report as
`rlplat eval`; any TF Serving-compatible server works, rlplat's or TF Serving's. The call is
a REST :predict (JSON) or a gRPC Predict with the observations as raw `tensor_content`
bytes: the default for image observations, whose JSON is ~5x their bytes (a uint8
[1, 84, 84, 4] Atari stack: 143 KB of JSON, 28 KB as a tensor).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import gymnasium as gym
import numpy as np
import requests

from rlplat.config import EnvConfig
from rlplat.errors import UserError
from rlplat.export import versions
from rlplat.policies import LoadedPolicy


def recorded_env(model_base_path: Path, model: str, version: int | None = None) -> EnvConfig:
    """The env a model was trained on, as its export recorded it (assets.extra/rlplat.json
    of that version, or of the latest one) under a local model base path. A model or
    version that is not there is said as such, with the ones that are."""
    model_dir = Path(model_base_path) / model
    found = _versions(model_dir)
    if not found:
        raise UserError(_no_model(Path(model_base_path), model))
    if version is not None and version not in found:
        raise UserError(
            f"--version: model '{model}' has no version {version} in {model_base_path} "
            f"(versions: {', '.join(map(str, found))})"
        )
    chosen = version if version is not None else found[-1]
    meta = model_dir / str(chosen) / "assets.extra" / "rlplat.json"
    try:
        return EnvConfig(**json.loads(meta.read_text())["env"])
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(
            f"--env: not given, and {meta} has no "
            "recorded env to default to (give --env ID, or --model-base-path)"
        ) from None


def _versions(model_dir: Path) -> list[int]:
    """A model's versions as the server reads them (none when it cannot be listed)."""
    try:
        return versions(model_dir)
    except OSError:
        return []


def _no_model(model_base_path: Path, model: str) -> str:
    """`--model` names no exported model here: say so, with a did-you-mean or the list."""
    if not model_base_path.is_dir():
        return (
            f"--model: no exported model '{model}': {model_base_path} is not a directory "
            "(give --model-base-path, or --env ID to play a model only the server has)"
        )
    try:
        models = sorted(p.name for p in model_base_path.iterdir() if _versions(p))
    except OSError:
        models = []
    close = difflib.get_close_matches(model, models, n=1)
    if close:
        hint = f"; did you mean '{close[0]}'?"
    else:
        hint = f"; models there: {', '.join(models)}" if models else " (it holds none)"
    return (
        f"--model: no exported model '{model}' in {model_base_path}{hint} "
        "(to play a model only the server has, give --env ID)"
    )


def play_env(
    env_id: str | None, model_base_path: Path, model: str, version: int | None = None
) -> tuple[EnvConfig, bool]:
    """The env to play in, and whether it is the recorded one: `--env ID` is the model's
    recorded env (its preprocessing, e.g. `env.atari`, and limits) when the ids match, the
    bare id otherwise; no `--env`, the recorded env."""
    if env_id is None:
        return recorded_env(model_base_path, model, version), True
    try:
        recorded = recorded_env(model_base_path, model, version)
    except UserError:  # no local copy of the model: the id as given
        return EnvConfig(id=env_id), False
    return (recorded, True) if recorded.id == env_id else (EnvConfig(id=env_id), False)


def is_image(space: gym.Space) -> bool:
    """uint8 (height, width, channels) observations: what gRPC carries 5x smaller than JSON."""
    return isinstance(space, gym.spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


def protocol_for(protocol: str, observation_space: gym.Space) -> str:
    """`auto`: gRPC for image observations, REST (JSON) for anything else."""
    if protocol != "auto":
        return protocol
    return "grpc" if is_image(observation_space) else "rest"


def grpc_target(server: str, grpc_address: str | None) -> str:
    """`--grpc`, or the REST server's host with port 8500 (TF Serving's and `rlplat
    serve`'s default gRPC port)."""
    if grpc_address:
        return grpc_address
    host = urlsplit(server if "//" in server else f"//{server}").hostname or "127.0.0.1"
    return f"[{host}]:8500" if ":" in host else f"{host}:8500"


def connect(
    server: str,
    grpc_address: str | None,
    protocol: str,
    model: str,
    env_cfg: EnvConfig,
    version: int | None,
    label: str | None,
    signature: str,
    token: str | None,
    arms_seed: int | None = None,
) -> tuple[LoadedPolicy, dict, ArmRecorder | None]:
    """The policy `rlplat play` acts with, what play.json records of it, and (with
    `arms_seed`, `--compare-arms`) the recorder of which version played each episode."""
    from rlplat import envs

    observation = envs.spaces(env_cfg).observation  # an unknown env id fails before any request
    arms = None
    if arms_seed is not None:
        if protocol == "grpc":
            raise UserError(
                "--compare-arms: needs REST (a routing-key header per episode, the version "
                "header back); use --protocol rest or auto"
            )
        protocol, arms = "rest", ArmRecorder(arms_seed, model)
    answers = arms or VersionsSeen(model)
    chosen = protocol_for(protocol, observation)
    if chosen == "grpc":
        server = grpc_target(server, grpc_address)
        policy = grpc_policy(server, model, env_cfg, version, label, signature, token, answers)
    else:
        policy = remote_policy(
            server, model, env_cfg, version, label, signature, token, answers=answers
        )
    return policy, {"server": server, "protocol": chosen, "signature": signature}, answers


class VersionsSeen:
    """Plain `rlplat play`: the versions of the model that answered (REST's version header,
    gRPC's answer model_spec), in the order first seen: more than one when the server
    loaded a new version during the play."""

    def __init__(self, model: str) -> None:
        self.model, self.seen = model, []

    def saw(self, headers: Mapping[str, str]) -> None:
        version = headers.get("X-Rlplat-Version")
        if version and version not in self.seen:
            self.seen.append(version)

    def episode_kwargs(self, kwargs: dict) -> dict:
        return kwargs

    def report(self, returns, console) -> dict:
        """One line after the table; what play.json gets."""
        said = ", ".join(self.seen) or "? (the server did not say)"
        plural = "s" if len(self.seen) > 1 else ""
        console.print(f"answered by: model {self.model} version{plural} {said}", highlight=False)
        return {"versions_answered": [int(v) for v in self.seen if v.isdigit()]}


class ArmRecorder:
    """`rlplat play --compare-arms`: one routing key per episode (the episodes run one at a
    time), and which version (and arm) of the server's split answered each episode."""

    def __init__(self, seed: int, model: str) -> None:
        self.seed, self.episode, self.model = seed, 0, model
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
        """Print the per-arm table (each arm by its name in the split and the version that
        answered for it); what play.json gets: each episode's version and arm."""
        from rlplat.arms import compare, table

        versions = [self.version(i) for i in range(len(returns))]
        arms = [self.arm(i) for i in range(len(returns))]
        named = [
            f"{a} (version {v})" if a else f"version {v}"
            for a, v in zip(arms, versions, strict=True)
        ]
        stats = compare(returns, named)
        console.print(table(stats, f"arms: {len(returns)} episodes, one routing key each"))
        if not any(arms):
            console.print(
                f"note: model {self.model} has no A/B split on this server (no traffic: in "
                f"its serving config): every episode went to version {', '.join(set(versions))}",
                highlight=False,
            )
        return {
            "episode_versions": versions,
            "episode_arms": arms,
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
    answers: VersionsSeen | ArmRecorder | None = None,
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
        # --compare-arms: one routing key per episode
        headers = {"X-Rlplat-Route": answers.key()} if isinstance(answers, ArmRecorder) else {}
        on_headers = answers.saw if answers is not None else None
        predictions = _call(session, "post", predict, timeout, json=body, headers=headers,
                            on_headers=on_headers)["predictions"]  # fmt: skip
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


def grpc_policy(
    target: str,
    model: str,
    env: EnvConfig,
    version: int | None = None,
    label: str | None = None,
    signature: str = "serving_default",
    token: str | None = None,
    answers: VersionsSeen | None = None,
    timeout: float = 10.0,
) -> LoadedPolicy:
    """TF Serving's PredictionService/Predict, the observations in `tensor_content` bytes.
    Checks the model is there (GetModelStatus; one line naming what is wrong if not)."""
    import grpc
    import tensorflow as tf  # its protos (and their TensorProto helpers) import it anyway
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    channel = grpc.insecure_channel(target)
    where = f"grpc {target} model '{model}'"
    call = _grpc_caller(target, where, timeout, token)
    status_request = get_model_status_pb2.GetModelStatusRequest()
    _model_spec(status_request.model_spec, model, version, label)
    status = call(model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus, status_request)
    name_of = get_model_status_pb2.ModelVersionStatus.State.Name
    states = {s.version: name_of(s.state) for s in status.model_version_status}
    if "AVAILABLE" not in states.values():
        raise UserError(f"{where}: no available version (states: {states})")
    predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
    request = predict_pb2.PredictRequest()
    _model_spec(request.model_spec, model, version, label)
    request.model_spec.signature_name = signature
    request.output_filter.append("actions")  # Q-values or logits stay on the server

    def act(observations: np.ndarray) -> np.ndarray:
        # make_tensor_proto puts a numpy array's buffer in tensor_content, as raw bytes.
        request.inputs["observations"].CopyFrom(tf.make_tensor_proto(observations))
        response = call(predict, request)
        if answers is not None:
            answers.saw({"X-Rlplat-Version": str(response.model_spec.version.value)})
        return tf.make_ndarray(response.outputs["actions"])

    source = f"server {where}" + (f" version {version}" if version is not None else "")
    source += f" label {label}" if label is not None else ""
    return LoadedPolicy(act=act, env=env, name=model, source=f"{source} ({signature})",
                        out_dir=None)  # fmt: skip


def _model_spec(spec: Any, model: str, version: int | None, label: str | None) -> None:
    spec.name = model
    if version is not None:
        spec.version.value = version
    elif label is not None:
        spec.version_label = label


def _grpc_caller(target: str, where: str, timeout: float, token: str | None) -> Any:
    """call(method, request): one RPC, its failure said in one line."""
    import grpc

    metadata = (("authorization", f"Bearer {token}"),) if token else None

    def call(method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            code, details = exc.code(), " ".join((exc.details() or "").split())
            if code is grpc.StatusCode.UNAVAILABLE:
                raise UserError(
                    f"grpc {target}: cannot connect (is `rlplat serve` running there? its gRPC "
                    "port is --grpc-port, 8500 by default: --grpc HOST:PORT; or --protocol rest)"
                ) from None
            if code is grpc.StatusCode.DEADLINE_EXCEEDED:
                raise UserError(f"{where}: no answer within {timeout:g} s") from None
            raise UserError(f"{where}: gRPC {code.name}: {details}") from None

    return call
