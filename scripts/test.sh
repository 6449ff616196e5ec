#!/usr/bin/env bash
# The README's test command: installs what is missing, then runs the linters and the
# whole test suite under a hard deadline so that a hang fails instead of wedging CI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check xfs tests bench
.venv/bin/mypy
exec timeout --signal=TERM --kill-after=60 1500 \
    .venv/bin/python -m pytest -p no:cacheprovider -q -ra --durations=15 "$@"
