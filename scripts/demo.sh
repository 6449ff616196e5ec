#!/usr/bin/env bash
# The README's demo command: installs what is missing, then starts the embedded default
# (an MRC and three OSDs on loopback) and mounts your home volume. Options are passed to
# `xfs up` (for example --mountpoint DIR or --state DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/xfs up "$@"
