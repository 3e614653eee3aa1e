#!/usr/bin/env bash
# The test command of the README and of CI: installs what the tests need, then lint, types, tests.
# Safe to run again: the venv and packages are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# System packages the tests need (more come with the ride pipeline: mosquitto, gpsd).
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq python3-venv
fi

bash scripts/venv.sh dev
PY=.venv/bin/python

echo "== ruff"
"$PY" -m ruff check .
echo "== mypy"
"$PY" -m mypy
echo "== pytest"
"$PY" -m pytest "$@"
