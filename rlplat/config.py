"""The experiment schema: YAML → validated, frozen ExperimentConfig.

Every user mistake is reported as one line per problem that names the dotted field
(`agent.learning_rate: must be > 0, got -1`); unknown keys get a "did you mean".
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from rlplat.config_base import AgentConfig, EnvConfig, NonNegInt, PosInt, Strict
from rlplat.errors import ConfigError

if TYPE_CHECKING:
    from rlplat.envs import EnvSpaces


class CollectConfig(Strict):
    num_actors: NonNegInt = Field(
        0, description="Ray collector actors; 0 = collect in the learner's process"
    )
    envs_per_actor: PosInt = Field(
        1, description="envs each collector (or the learner's process) steps together"
    )
    rollout_length: PosInt = Field(
        128,
        description="steps per env in one fragment a collector returns; on-policy: the "
        "rollout each update trains on",
    )
    weight_sync_every: PosInt = Field(
        100, description="off-policy, num_actors > 0: learner steps between weight broadcasts"
    )
    max_actor_failures: PosInt = Field(
        3, description="a collector that dies this many times in a row without data ends the run"
    )
    overlap: bool = Field(
        False,
        description="on-policy: collect the next rollout while the learner trains on this "
        "one (num_actors 0: on a thread); each rollout is then one weight update behind the "
        "learner, which weighs it by the importance ratio of the collecting policy",
    )


class LearnerConfig(Strict):
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="auto: the first GPU TensorFlow sees, else the CPU"
    )
    threads: PosInt | None = Field(
        None, description="TensorFlow intra-op threads (None: TensorFlow's default)"
    )
    mixed_precision: bool = Field(
        False,
        description="on a GPU learner, conv torsos (agent.network.type nature_cnn) compute in "
        "float16 with float32 variables, float32 heads and losses, and dynamic loss scaling; "
        "on a CPU learner it is off (one warning line): x86 CPUs have no fast float16 math",
    )
    devices: Literal["auto"] | PosInt | list[str] = Field(
        "auto",
        description="the learner's devices: auto (strategy none: one, as learner.device; "
        "mirrored: every GPU, else the one CPU), N (the first N GPUs, else N logical CPUs), "
        "or names such as ['/GPU:0', '/GPU:1']; more than one needs strategy: mirrored",
    )
    strategy: Literal["none", "mirrored"] = Field(
        "none",
        description="mirrored: tf.distribute.MirroredStrategy over learner.devices (variables "
        "mirrored, each minibatch of train.batch_size split evenly across the devices, "
        "gradients summed); none: one device",
    )


class BetaSchedule(Strict):
    """Importance-sampling exponent, annealed linearly over train.env_steps."""

    start: Annotated[float, Field(ge=0.0, le=1.0)] = 0.4
    end: Annotated[float, Field(ge=0.0, le=1.0)] = 1.0


class ReplayConfig(Strict):
    type: Literal["uniform", "prioritized"] = Field(
        "uniform", description="uniform, or prioritized by |TD error| (Schaul et al. 2016)"
    )
    capacity: PosInt = Field(100_000, description="transitions kept; the oldest are overwritten")
    alpha: Annotated[float, Field(ge=0.0)] = Field(0.6, description="prioritized only")
    beta: BetaSchedule = BetaSchedule()
    priority_epsilon: Annotated[float, Field(gt=0.0)] = Field(
        1e-6, description="added to each |TD error| so every transition can be drawn"
    )
    shards: NonNegInt = Field(
        0, description="0: replay in the learner's process; K: K Ray actors, capacity/K each"
    )
    initial_priority: Literal["max", "td"] | None = Field(
        None,
        description="prioritized: new transitions get the max priority seen, or their "
        "collector's |n-step TD error| (Ape-X); None = td with num_actors > 0, else max",
    )
    frames: bool = Field(
        False,
        description="stacked pixel observations [H, W, K] uint8 stored frame by frame "
        "(each frame once, n-step returns formed at sample time: "
        "rlplat/experience/storage.py); collectors then send one-step rows",
    )

    @property
    def n_step_at(self) -> Literal["collector", "sample"]:
        """Where n-step returns are formed: by the collectors, which see each env's stream
        in order (stored whole), or at sample time from the frame storage's ordered steps."""
        return "sample" if self.frames else "collector"

    @model_validator(mode="after")
    def _frames_checks(self) -> ReplayConfig:
        if self.frames and self.shards:
            raise ValueError("replay.frames: not available with replay.shards > 0 (yet)")
        if self.frames and self.initial_priority == "td":
            raise ValueError(
                "replay.initial_priority: 'td' needs collectors' n-step transitions; "
                "with replay.frames new steps get the max priority"
            )
        return self


class TrainConfig(Strict):
    env_steps: PosInt = Field(description="the run's budget in env steps")
    batch_size: PosInt = Field(64, description="transitions per gradient step (off-policy agents)")
    learning_starts: NonNegInt = Field(1000, description="env steps before the first update")
    train_every: PosInt = Field(1, description="env steps between training phases")
    updates_per_train: PosInt = Field(1, description="gradient steps per training phase")
    log_every: PosInt = Field(1000, description="env steps between scalar logs")


class EvalConfig(Strict):
    every_env_steps: PosInt = Field(
        10_000, description="env steps between periodic deterministic evals"
    )
    episodes: PosInt = Field(10, description="episodes per periodic eval")
    final_episodes: Annotated[int, Field(ge=20)] = Field(
        20, description="episodes of the final deterministic eval"
    )
    threshold: float | None = Field(None, description="return that counts as solved")
    video: bool = Field(
        False,
        description="periodic evals also log their first episode to TensorBoard as an "
        "animated image (one more rendered episode per eval)",
    )


class CheckpointConfig(Strict):
    every_env_steps: PosInt = Field(25_000, description="env steps between checkpoints")
    keep: PosInt = Field(3, description="checkpoints kept, the newest")


class ExportConfig(Strict):
    model_base_path: str = Field(
        "models", description="versions go to MODEL_BASE_PATH/NAME/VERSION/ (TF Serving's layout)"
    )
    when: Literal["always", "never", "if_threshold"] = Field(
        "if_threshold",
        description="when a finished run exports: if_threshold = when its final eval "
        "reaches eval.threshold (always if no threshold is set)",
    )

    @model_validator(mode="before")
    @classmethod
    def _enabled(cls, data: Any) -> Any:
        """`enabled: false` (earlier rlplat) is `when: never`."""
        if isinstance(data, dict) and "enabled" in data:
            data = dict(data)
            if data.pop("enabled") is False:
                data.setdefault("when", "never")
        return data


class ExperimentConfig(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]
    seed: NonNegInt = Field(0, description="seeds the initial weights, the envs and the evals")
    env: EnvConfig
    agent: AgentConfig
    collect: CollectConfig = CollectConfig()
    learner: LearnerConfig = LearnerConfig()
    replay: ReplayConfig | None = None
    train: TrainConfig
    eval: EvalConfig = EvalConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    export: ExportConfig = ExportConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentConfig:
        if self.agent.on_policy is False and self.replay is None:
            raise ValueError(f"replay: agent type '{self.agent.type}' is off-policy and needs one")
        if self.agent.on_policy and self.replay is not None:
            raise ValueError(
                f"replay: agent type '{self.agent.type}' is on-policy; remove it "
                "(--set replay=null)"
            )
        if self.collect.overlap and not self.agent.on_policy:
            raise ValueError(
                f"collect.overlap: agent type '{self.agent.type}' is off-policy; its Ray "
                "collectors (collect.num_actors > 0) already run beside the learner"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", serialize_as_any=True)


# ---------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads YAML 1.2 floats such as `3e3` and `1e-3` as numbers
    (YAML 1.1 wants a dot: `3.0e3`). Whole floats then pass as ints in pydantic's lax
    mode, so `train.env_steps: 3e3` is 3000, in a file or in `--set`. A key given twice
    in one mapping is an error (PyYAML keeps the last one silently: `{stable: 10,
    stable: 90}` would be 90 with no word said)."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may repeat keys
                    continue
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, Hashable):  # PyYAML's own error says so
                    continue
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"duplicate key {key!r}", key_node.start_mark,
                    )  # fmt: skip
                seen.add(key)
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read YAML, apply `--set a.b=c` overrides, validate."""
    data = read_yaml_mapping(path, "config file")
    for item in overrides or []:
        apply_override(data, item)
    return parse(data)


def read_yaml_mapping(path: str | Path, what: str, empty_ok: bool = False) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; errors name the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None and empty_ok:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def apply_override(data: dict[str, Any], item: str) -> None:
    """`a.b=c` sets data['a']['b'] to YAML-parsed 'c' (so 1e-3, true, [64, 64] work).

    `a.b=null` removes the key (its default applies), unless the field takes null as a
    value of its own (`agent.minibatch_size: null` = the whole rollout)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. agent.learning_rate=1e-3")
    parts = key.strip().split(".")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else None  # noqa: S506
    except yaml.YAMLError:
        value = raw
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            where = ".".join(parts[: i + 1])
            raise ConfigError(f"--set {item}: '{where}' is {child!r}, not a mapping")
        node = child
    if value is None and not _takes_null(data, parts):
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def _takes_null(data: dict[str, Any], parts: list[str]) -> bool:
    """Whether the schema field at `parts` accepts None (unknown fields: no)."""
    model: type[BaseModel] | None = ExperimentConfig
    if parts[0] == "agent" and len(parts) > 1:
        from rlplat.agents import CONFIGS

        agent = data.get("agent")
        model = CONFIGS.get(agent.get("type")) if isinstance(agent, dict) else None
        parts = parts[1:]
    for i, part in enumerate(parts):
        field = model.model_fields.get(part) if model is not None else None
        if field is None:
            return False
        if i == len(parts) - 1:
            return _allows_none(field.annotation)
        model = _model_in(field.annotation)
    return False


def _allows_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None) or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _allows_none(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_allows_none(a) for a in typing.get_args(annotation))
    return False


def parse(data: dict[str, Any]) -> ExperimentConfig:
    """Validate a config mapping. The agent section is validated by its own class."""
    from rlplat.agents import CONFIGS

    data = dict(data)
    errors: list[str] = []
    agent = data.get("agent")
    if isinstance(agent, dict):
        data["agent"] = AgentConfig(type="?")  # placeholder: the rest validates on its own
        kind = agent.get("type")
        if kind not in CONFIGS:
            errors.append(_unknown("agent.type", kind, CONFIGS))
        elif switched := _switched_agent(agent, data, CONFIGS):
            errors.append(switched)
        else:
            try:
                data["agent"] = CONFIGS[kind].model_validate(agent)
            except ValidationError as exc:
                errors += [_format(e, ("agent",), CONFIGS[kind]) for e in exc.errors()]
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        errors += [_format(e, (), ExperimentConfig) for e in exc.errors()]
    if errors:
        raise ConfigError("\n".join(dict.fromkeys(errors)))
    return cfg


def _switched_agent(
    agent: dict[str, Any], data: dict[str, Any], configs: dict[str, type[AgentConfig]]
) -> str | None:
    """One line for an agent section that holds another algorithm's keys (`--set
    agent.type=ppo` on a DQN file): which keys, and how to switch."""
    kind = agent["type"]
    own = configs[kind].model_fields
    others = {k for name, c in configs.items() if name != kind for k in c.model_fields}
    foreign = [k for k in agent if k not in own and k in others]
    if not foreign:
        return None
    how = f"--set agent=null --set agent.type={kind}"
    on_policy = configs[kind].on_policy
    if on_policy and data.get("replay") is not None:
        how += " --set replay=null"
    elif on_policy is False and data.get("replay") is None:
        how += " --set replay.type=uniform"
    return (
        f"agent.type: '{kind}' does not take {', '.join(sorted(foreign))}; to switch "
        f"algorithms start the agent section afresh ({how}) or use a new file"
    )


def check_env(cfg: ExperimentConfig) -> EnvSpaces:
    """Make the env once (id or `module:Class`, kwargs, spaces) and check its action space
    against the agent type: everything that can fail about the env, before a run directory
    exists and before TensorFlow loads."""
    from rlplat import envs

    spaces = envs.spaces(cfg.env)
    kinds = type(cfg.agent).action_spaces
    if type(spaces.action).__name__ not in kinds:
        raise ConfigError(
            f"env.id: {cfg.env.id} has action space {spaces.action}; agent.type "
            f"'{cfg.agent.type}' acts in {' or '.join(kinds)} action spaces"
        )
    return spaces


def _unknown(field: str, value: Any, choices: Any) -> str:
    names = sorted(choices)
    close = difflib.get_close_matches(str(value), names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else f"; choose one of {names}"
    if value is None:
        return f"{field}: missing; choose one of {names}"
    return f"{field}: unknown value '{value}'{hint}"


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class that holds the field at `loc` (for key suggestions)."""
    for part in loc:
        if isinstance(part, int):  # a list index: the item type is already `model`
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        model = _model_in(field.annotation)
        if model is None:
            return None
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation (X, X | None, list[X], ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _format(err: dict[str, Any], prefix: tuple[Any, ...], model: type[BaseModel]) -> str:
    loc = tuple(err["loc"])
    dotted = ".".join(str(p) for p in (*prefix, *loc)) or "(top level)"
    kind, ctx, value = err["type"], err.get("ctx", {}), err.get("input")
    if kind == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        names = list(parent.model_fields) if parent else []
        close = difflib.get_close_matches(str(loc[-1]), names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(names)}"
        return f"{dotted}: unknown key{hint}"
    if kind == "missing":
        return f"{dotted}: required field is missing"
    for op in ("gt", "ge", "lt", "le"):
        if op in ctx and kind.startswith(("greater", "less")):
            sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[op]
            bound = f"{ctx[op]:g}" if isinstance(ctx[op], float) else ctx[op]
            return f"{dotted}: must be {sym} {bound}, got {value!r}"
    msg = err["msg"]
    msg = msg.removeprefix("Value error, ")
    if kind == "value_error" and ":" in msg.split(" ")[0]:
        return msg  # a cross-field check that names its own field
    return f"{dotted}: {msg[0].lower()}{msg[1:]}, got {value!r}"
