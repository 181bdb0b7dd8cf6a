"""What an env id that Gymnasium cannot make is called in an error: the id as written, and
the registered ids closest to it."""

from __future__ import annotations

import difflib

import gymnasium as gym

from rlplat.errors import ConfigError

_NOT_FOUND = (gym.error.NameNotFound, gym.error.NamespaceNotFound, gym.error.VersionNotFound)


def env_id_error(env_id: str, exc: gym.error.Error) -> ConfigError:
    """A ConfigError naming `env_id` as written: for an id that is not registered, with
    the closest registered ids; otherwise with Gymnasium's reason (e.g. a deprecated
    version)."""
    if not isinstance(exc, _NOT_FOUND):
        return ConfigError(f"env.id: '{env_id}': {exc}")
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(
        f"env.id: unknown environment '{env_id}'{hint} (a Gymnasium id, or module:Class "
        "for your own)"
    )
