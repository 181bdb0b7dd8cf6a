"""Export a policy as a versioned SavedModel in the TensorFlow Serving layout.

models/<name>/<version>/saved_model.pb + variables/ + assets.extra/rlplat.json. The
version directory appears only once complete (written as a dot-named temp dir, which
TF Serving ignores, then renamed), so a server never loads a half-written version.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlplat.errors import UserError

if TYPE_CHECKING:  # TensorFlow loads only to write a SavedModel: the version rules here
    import tensorflow as tf  # serve `rlplat play`, which runs without it

MAX_VERSION = 2**63 - 1  # TF Serving's versions are int64


def parse_version(name: str) -> int | None:
    """A version directory's (or a request's) version: ASCII digits 0-9 only, leading zeros
    allowed (`0005` is 5, as TF Serving parses it), at most int64; None for anything else
    (`²`, `٢`, `-1`, `+5`, ` 5`: str.isdigit and int() accept some of these)."""
    if not name or not all("0" <= c <= "9" for c in name):
        return None
    value = int(name)
    return value if value <= MAX_VERSION else None


@dataclass(frozen=True)
class VersionListing:
    dirs: dict[int, str]  # version -> the directory name it is loaded from
    ignored: tuple[str, ...]  # why a name that looks like a version is not one (for logs)


def list_versions(model_dir: Path) -> VersionListing:
    """The version directories of a model; raises OSError when `model_dir` cannot be listed
    (a caller must not take that for "no versions"). Two names for one number (`5` and
    `0005`): TF Serving's rule, the name that sorts last wins (`5`), the other is ignored."""
    dirs: dict[int, str] = {}
    ignored = []
    with os.scandir(model_dir) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        name, version = entry.name, parse_version(entry.name)
        if version is None:
            if name.strip().lstrip("+-").isnumeric():  # what a looser parse takes for one
                ignored.append(f"{name!r}: a version is ASCII digits 0-9 (at most 2**63-1)")
            continue
        if not entry.is_dir():
            continue
        if version in dirs:
            ignored.append(f"{dirs[version]!r}: version {version} is loaded from {name!r}")
        dirs[version] = name
    return VersionListing(dirs, tuple(ignored))


def versions(model_dir: Path) -> list[int]:
    """The version numbers of a model, ascending; raises OSError if it cannot be listed."""
    return sorted(list_versions(model_dir).dirs)


def export_saved_model(
    module: tf.Module, model_base_path: Path, name: str, metadata: dict[str, Any]
) -> Path:
    """Write `module` as the next version of `name`; returns the version directory."""
    import tensorflow as tf

    model_dir = Path(model_base_path) / name
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"model base path {model_base_path}: cannot create ({exc})") from None
    tmp = model_dir / f".tmp-export-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        signatures = {"serving_default": module.serving_default}
        if hasattr(module, "sample"):  # stochastic policies also export their sampler
            signatures["sample"] = module.sample
        tf.saved_model.save(module, str(tmp), signatures=signatures)
        extra = tmp / "assets.extra"
        extra.mkdir()
        (extra / "rlplat.json").write_text(json.dumps(metadata, indent=2))
        try:
            version = max(versions(model_dir), default=0) + 1
        except OSError as exc:
            raise UserError(f"model dir {model_dir}: cannot list its versions ({exc})") from None
        while True:  # another exporter may take the same number between listing and rename
            final = model_dir / str(version)
            try:
                os.rename(tmp, final)
                return final
            except OSError:
                if not final.exists():
                    raise
                version += 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
