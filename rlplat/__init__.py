"""rlplat: train, evaluate, export and serve reinforcement-learning policies."""

from rlplat import _bootstrap  # noqa: F401  (must run before TensorFlow is imported)

__version__ = "0.1.0"
