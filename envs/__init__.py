"""Environments: Gymnasium ids or `module:Class`, vector envs, and the TF-Agents adapter."""

from envs.make import (
    EnvSpaces,
    add_module_dir,
    make,
    make_vec,
    module_dir,
    spaces,
    user_modules,
)
from rlplat import _bootstrap  # noqa: F401  (before any TensorFlow import)

__all__ = [
    "EnvSpaces", "add_module_dir", "make", "make_vec", "module_dir", "spaces", "user_modules",
]  # fmt: skip
