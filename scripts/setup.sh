#!/usr/bin/env bash
# Creates .venv and installs the pinned stack (requirements.lock) plus rlplat itself.
# Idempotent: re-runs only when requirements.lock or pyproject.toml changed.
# Why --no-deps: tf-agents 0.19's own pins cannot be resolved beside TF 2.21 (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
"$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "rlplat needs Python 3.11 (found $("$PY" --version 2>&1)); set PYTHON=..." >&2; exit 1; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.rlplat-installed
want=$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "rlplat: installing the pinned stack into .venv (first time: a few minutes)..." >&2
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
    -r requirements.lock
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps \
    --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
