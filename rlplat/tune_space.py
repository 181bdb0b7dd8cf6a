"""A sweep's search space: a YAML file mapping dotted config keys to one of
`{choice: [...]}`, `{uniform: [lo, hi]}`, `{loguniform: [lo, hi]}`, `{randint: [lo, hi]}`
(both ends included) or `{grid: [...]}`, and an optional `pbt: [keys]` (the keys PBT
perturbs). Every key and every value a trial can reach (each choice or grid value, both
bounds) is checked against the experiment's schema before any trial starts."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlplat import config as config_mod
from rlplat.errors import ConfigError, UserError

KINDS = ("choice", "uniform", "loguniform", "randint", "grid")
_RANGES = ("uniform", "loguniform", "randint")


@dataclass(frozen=True)
class Space:
    params: dict[str, tuple[str, list[Any]]]  # dotted key -> (kind, values or bounds)
    pbt_keys: list[str] = field(default_factory=list)

    def seeds(self) -> set[int]:
        """The seeds trials may use when the space sweeps `seed` (else none)."""
        if "seed" not in self.params:
            return set()
        kind, values = self.params["seed"]
        if kind == "randint":
            return set(range(int(values[0]), int(values[1]) + 1))
        return {int(v) for v in values}


def load_space(path: Path, experiment: Path, base: list[str] | None = None) -> Space:
    """Read a space file and check it against `experiment` with the `base` overrides
    (tune's --set): a UserError lists every bad key (malformed, or a value the schema
    refuses), one line each."""
    space, errors = _read_space(path)
    config_mod.load(experiment, base)  # the experiment first: its own errors, as train says
    errors += schema_errors(space, experiment, base or [])
    if errors:
        raise UserError("\n".join(errors))
    return space


def _read_space(path: Path) -> tuple[Space, list[str]]:
    data = config_mod.read_yaml_mapping(path, "space file")
    pbt = data.pop("pbt", None) or []
    if not isinstance(pbt, list) or not all(isinstance(k, str) for k in pbt):
        raise UserError(f"{path}: pbt: expected a list of dotted keys")
    params, errors = {}, []
    for key, spec in data.items():
        try:
            params[str(key)] = _parse_spec(spec)
        except ValueError as exc:
            errors.append(f"{path}: {key}: {exc}")
    errors += [f"{path}: pbt: {k}: not a key of the space" for k in pbt if k not in params]
    errors += [
        f"{path}: pbt: {k}: a grid cannot be perturbed (use choice)"
        for k in pbt
        if k in params and params[k][0] == "grid"
    ]
    if not params and not errors:
        errors.append(f"{path}: no keys to sweep")
    return Space(params, list(pbt)), errors


def _parse_spec(spec: Any) -> tuple[str, list[Any]]:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"expected one of {{{', '.join(KINDS)}: ...}}, got {spec!r}")
    ((kind, values),) = spec.items()
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r} (one of {', '.join(KINDS)})")
    if not isinstance(values, list) or not values:
        raise ValueError(f"{kind}: expected a non-empty list, got {values!r}")
    if kind in _RANGES:
        if len(values) != 2 or not all(_is_number(v) for v in values):
            raise ValueError(f"{kind}: expected [low, high] numbers, got {values!r}")
        if not values[0] < values[1]:
            raise ValueError(f"{kind}: low {values[0]!r} must be below high {values[1]!r}")
        if kind == "loguniform" and values[0] <= 0:
            raise ValueError(f"loguniform: low {values[0]!r} must be > 0")
        if kind == "randint" and not all(isinstance(v, int) for v in values):
            raise ValueError(f"randint: bounds must be integers, got {values!r}")
    return kind, values


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def schema_errors(space: Space, experiment: Path, base: list[str]) -> list[str]:
    """Each key with each value a trial can reach must validate with the experiment's
    schema: the first failure of every bad key, one line each."""
    errors = []
    for key, (_, values) in space.params.items():
        for value in values:
            try:
                config_mod.load(experiment, base + overrides([(key, value)]))
            except ConfigError as exc:
                first = str(exc).splitlines()[0]
                errors.append(f"space key {key}: value {value!r} does not validate: {first}")
                break
    return errors


def overrides(items: Any) -> list[str]:
    """`--set`-style overrides from (key, value) pairs or a {key: value} mapping; JSON is
    YAML, so numbers, strings, lists and booleans read back as they were."""
    pairs = items.items() if isinstance(items, dict) else items
    return [f"{key}={json.dumps(value)}" for key, value in pairs]


def size(space: Space, samples: int) -> int:
    """Trials a sweep starts: Ray Tune repeats the grid's product `samples` times."""
    grid = 1
    for kind, values in space.params.values():
        grid *= len(values) if kind == "grid" else 1
    return samples * grid


def param_space(space: Space) -> dict[str, Any]:
    """Ray Tune's search space for `space` (randint: both ends included)."""
    return {key: domain(kind, values) for key, (kind, values) in space.params.items()}


def domain(kind: str, values: list[Any]) -> Any:
    from ray import tune

    if kind == "choice":
        return tune.choice(values)
    if kind == "grid":
        return tune.grid_search(values)
    if kind == "uniform":
        return tune.uniform(values[0], values[1])
    if kind == "loguniform":
        return tune.loguniform(values[0], values[1])
    return tune.randint(values[0], values[1] + 1)  # Ray's upper bound is exclusive


def finite(value: Any) -> float | None:
    """A reported figure; None when missing or not finite (a threshold not reached)."""
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)
