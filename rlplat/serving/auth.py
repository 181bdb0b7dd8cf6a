"""The optional bearer token, shared by `rlplat serve` and its clients (no TensorFlow here)."""

from __future__ import annotations

import hmac
import os
from collections.abc import Sequence
from pathlib import Path

from rlplat.errors import UserError

TOKEN_ENV = "RLPLAT_SERVE_TOKEN"


def read_token(token_file: Path | None) -> str | None:
    """From --token-file, else $RLPLAT_SERVE_TOKEN (never argv: `ps` would show it), else
    none (no auth: fine on 127.0.0.1)."""
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise UserError(f"--token-file {token_file}: {exc.strerror or exc}") from None
        if not token:
            raise UserError(f"--token-file {token_file}: empty")
        return token
    return os.environ.get(TOKEN_ENV) or None


def bearer_matches(authorization: bytes, token: str) -> bool:
    """Whether an Authorization header carries `token` with the Bearer scheme, whose name is
    case-insensitive (RFC 7235); compared in constant time."""
    scheme, _, credentials = authorization.partition(b" ")
    ok_scheme = scheme.lower() == b"bearer"
    return hmac.compare_digest(credentials.lstrip(b" "), token.encode()) and ok_scheme


def authorized(values: Sequence[bytes], token: str) -> bool:
    """Exactly one Authorization value, carrying `token`. Two are refused whatever they
    say: a proxy and this server could each read a different one."""
    return len(values) == 1 and bearer_matches(values[0], token)
