"""Errors a user can cause (config, paths, arguments): shown as one line, exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; the CLI prints `error: <message>` and exits 2."""


class ConfigError(UserError):
    """An experiment file or `--set` override that does not validate."""
