"""Environments: Gymnasium ids or `module:Class`, vector envs, and the TF-Agents adapter."""

from envs.make import EnvSpaces, make, make_vec, spaces
from rlplat import _bootstrap  # noqa: F401  (before any TensorFlow import)

__all__ = ["EnvSpaces", "make", "make_vec", "spaces"]
