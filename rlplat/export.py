"""Export a policy as a versioned SavedModel in the TensorFlow Serving layout.

models/<name>/<version>/saved_model.pb + variables/ + assets.extra/rlplat.json. The
version directory appears only once complete (written as a dot-named temp dir, which
TF Serving ignores, then renamed), so a server never loads a half-written version.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import tensorflow as tf

from rlplat.errors import UserError


def versions(model_dir: Path) -> list[int]:
    """The numbered version directories, ascending; none if the model dir is missing or
    unreadable (a server polls this while directories come and go)."""
    try:
        return sorted(int(e.name) for e in os.scandir(model_dir) if e.name.isdigit() and e.is_dir())
    except OSError:
        return []


def export_saved_model(
    module: tf.Module, model_base_path: Path, name: str, metadata: dict[str, Any]
) -> Path:
    """Write `module` as the next version of `name`; returns the version directory."""
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
        version = (versions(model_dir) or [0])[-1] + 1
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
