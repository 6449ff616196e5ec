#!/usr/bin/env bash
# Runs the whole test suite, and the linters, with a hard deadline so CI never wedges.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check xfs tests bench
.venv/bin/mypy
exec timeout --signal=TERM --kill-after=60 1500 \
    .venv/bin/python -m pytest -p no:cacheprovider -q -ra "$@"
