#!/usr/bin/env bash
# Installs what xfs needs on a Debian machine: the FUSE and PostgreSQL packages through
# apt-get (when missing) and xfs with its Python dependencies into .venv at the repository
# root. (PostgreSQL: for the MRC's PostgreSQL store; xfs starts clusters of its own, the
# tests too, and never uses the package's default cluster.)
# Safe to run again; it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
for pkg in fuse3 libfuse3-dev pkg-config attr acl gcc python3-venv git postgresql; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_pkgs+=("$pkg")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "bootstrap: installing Debian packages: ${need_pkgs[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq </dev/null
    # python3-venv is only needed where the Debian python3 is the interpreter
    $SUDO apt-get install -y -qq "${need_pkgs[@]}" </dev/null >/dev/null || \
        $SUDO apt-get install -y -qq $(printf '%s\n' "${need_pkgs[@]}" | grep -v python3-venv) </dev/null >/dev/null
fi

PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
    echo "bootstrap: creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.xfs-installed
# setup.py and the C source: the FUSE lock extension is compiled at install time
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
    || [ xfs/client/_fuse_ext.c -nt "$stamp" ]; then
    echo "bootstrap: installing xfs and its dependencies into .venv"
    .venv/bin/pip install -q --upgrade pip </dev/null
    .venv/bin/pip install -q -e ".[dev]" </dev/null
    touch "$stamp"
fi
