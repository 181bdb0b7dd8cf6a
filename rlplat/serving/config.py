"""serving.yaml: which models and versions to serve, version labels, batching, limits.

Without a file every model directory under --model-base-path is served at its latest
version. The file is re-read when it changes (as TF Serving polls its model config), so
pinning a version or moving a label is an edit, not a restart; an invalid edit is logged
and the previous config stays in force.

A model may split its traffic between arms (`traffic: {stable: 90, canary: 10}`: label names
or version numbers, non-negative weights) and mirror it to a `shadow` arm; see
rlplat/serving/traffic.py for the routing.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from pydantic import Field, ValidationError, field_validator, model_validator

from rlplat.config import Strict, _format, read_yaml_mapping
from rlplat.errors import ConfigError, UserError
from rlplat.export import parse_version

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class VersionPolicy(Strict):
    """Exactly one of: the `latest` N versions, `specific` versions, or `all` of them."""

    latest: int | None = Field(None, ge=1)
    specific: list[int] | None = None
    all: bool = False

    @model_validator(mode="after")
    def _one(self) -> VersionPolicy:
        chosen = [self.latest is not None, self.specific is not None, self.all]
        if sum(chosen) > 1:
            raise ValueError("version_policy: choose one of latest, specific, all")
        if self.specific is not None and (not self.specific or min(self.specific) < 0):
            raise ValueError("version_policy.specific: a non-empty list of version numbers")
        return self

    def select(self, versions: list[int]) -> list[int]:
        """The versions to serve among the loadable `versions` (ascending)."""
        if self.all:
            return versions
        if self.specific is not None:
            return [v for v in versions if v in self.specific]
        return versions[-(self.latest or 1) :]


class ModelEntry(Strict):
    name: str
    base_path: str | None = None  # relative to --model-base-path; default: the name
    version_policy: VersionPolicy = VersionPolicy()
    labels: dict[str, int] = {}
    # Arm (a label of this entry, or a version number) -> weight; requests that name no
    # version or label are split by weight (rlplat/serving/traffic.py).
    traffic: dict[str, float] | None = None
    shadow: str | None = None  # an arm (label or version) that gets a copy of split requests

    @field_validator("traffic", "shadow", mode="before")
    @classmethod
    def _arm_names(cls, v: object) -> object:
        """YAML reads `{1: 50}` and `shadow: 2` as integers; arms are names."""
        if isinstance(v, dict):
            return {str(k): w for k, w in v.items()}
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @model_validator(mode="after")
    def _traffic(self) -> ModelEntry:
        where = f"models.{self.name}"
        arms = [*(self.traffic or {}), *([self.shadow] if self.shadow is not None else [])]
        for arm in arms:
            if arm not in self.labels and parse_version(arm) is None:
                raise ValueError(
                    f"{where}.traffic: '{arm}' is neither a label of this model "
                    f"({sorted(self.labels)}) nor a version number"
                )
        if self.traffic is not None:
            bad = {arm: w for arm, w in self.traffic.items() if not w >= 0 or w == float("inf")}
            if bad:
                raise ValueError(f"{where}.traffic: weights must be >= 0 and finite, got {bad}")
            if not any(self.traffic.values()):
                raise ValueError(f"{where}.traffic: all weights are zero (or no arms given)")
            if not math.isfinite(sum(self.traffic.values())):  # the split's bounds need it
                raise ValueError(
                    f"{where}.traffic: the weights' sum overflows; use smaller numbers "
                    "(percentages, say)"
                )
        if self.shadow is not None and self.traffic is None:
            raise ValueError(f"{where}.shadow: needs a traffic split (its copies are of those)")
        return self

    def arm_version(self, arm: str) -> int:
        """The version an arm (a label or a version number, already validated) stands for."""
        return self.labels[arm] if arm in self.labels else int(arm)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError(f"name: '{v}' is not a model name (letters, digits, . _ -)")
        return v

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, int]) -> dict[str, int]:
        for label in v:
            if not NAME_RE.fullmatch(label):
                raise ValueError(f"labels: '{label}' is not a label name (letters, digits, . _ -)")
        return v


class BatchingConfig(Strict):
    """Requests to one model version are merged while the model is busy (no added wait
    unless batch_timeout_micros > 0), up to max_batch_size rows per call."""

    enabled: bool = True
    max_batch_size: int = Field(64, ge=1)
    batch_timeout_micros: int = Field(0, ge=0)
    max_enqueued: int = Field(4096, ge=1)  # queued requests per version; beyond: 503


class ServingConfig(Strict):
    models: list[ModelEntry] | None = None  # None: every model under the base path
    batching: BatchingConfig = BatchingConfig()
    poll_seconds: float = Field(0.2, gt=0, le=60)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    # Connection limits (REST; gRPC gets max_connections and the idle timeout). All apply
    # before the token is checked, so an unauthenticated client is held to them too.
    max_request_line_bytes: int = Field(8 * 1024, ge=256)  # longer URL: 414, then close
    max_header_bytes: int = Field(64 * 1024, ge=1024)  # all headers together: 431, then close
    header_timeout_seconds: float = Field(10.0, gt=0)  # first byte to end of headers, or close
    idle_timeout_seconds: float = Field(30.0, gt=0)  # no request (or reply unread) this long
    max_connections: int = Field(1000, ge=1)  # per API; at it the longest-idle one is closed
    max_pending_per_connection: int = Field(32, ge=1)  # pipelined requests read, unanswered
    max_rows_per_request: int = Field(8192, ge=1)  # the batch dimension; beyond: 400
    session_inter_op_threads: int = -1  # -1: run ops in the calling thread (fastest here)
    session_intra_op_threads: int = Field(1, ge=0)
    # Grappler's remapper fuses MatMul + BiasAdd (+ activation) into one kernel, with oneDNN
    # (TensorFlow's default on x86) a oneDNN primitive set up on every call: on a small MLP
    # policy that set-up costs more than the ops (a third of a small batch's session call).
    # Off by default here (benchmarks/serve_session.py measures both); true is TensorFlow's
    # (and TF Serving's) default graph.
    session_remapping: bool = False

    @model_validator(mode="after")
    def _unique(self) -> ServingConfig:
        names = [m.name for m in self.models or []]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"models: '{dup[0]}' is listed twice")
        return self


def load(path: str | Path | None) -> ServingConfig:
    """Parse serving.yaml (or defaults when `path` is None); one-line errors naming the key."""
    if path is None:
        return ServingConfig()
    data = read_yaml_mapping(path, "serving config", empty_ok=True)
    if not data and not Path(path).read_text().strip().startswith("{"):
        # an empty file is a file being written, not "every default": `{}` says that
        raise ConfigError(f"{path}: empty (write `{{}}` for every default)")
    try:
        return ServingConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_format(e, (), ServingConfig) for e in exc.errors()]
        raise ConfigError(f"{path}: " + f"\n{path}: ".join(dict.fromkeys(lines))) from None


def check_inputs(model_base_path: str | Path, config_path: str | Path | None) -> ServingConfig:
    """`rlplat serve`'s model base path and config, checked before anything heavy loads
    (TensorFlow, Ray): a wrong path or key is one line at once."""
    cfg = load(config_path)
    if not Path(model_base_path).is_dir():
        raise UserError(f"--model-base-path {model_base_path}: not a directory")
    return cfg
