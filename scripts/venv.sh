#!/usr/bin/env bash
# Create .venv (once) and install sousveil into it, editable, with the given extras.
#   bash scripts/venv.sh          runtime only
#   bash scripts/venv.sh dev      with the test tools
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
spec="."
if [ -n "$extras" ]; then spec=".[$extras]"; fi
# Reinstall only when pyproject.toml changed since the last install.
stamp=".venv/.sousveil-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "installing sousveil into .venv (once; log in .venv/install.log)" >&2
    if ! { .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip &&
           .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"; } > .venv/install.log 2>&1; then
        cat .venv/install.log >&2
        exit 1
    fi
    touch "$stamp"
fi
