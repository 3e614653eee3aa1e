#!/usr/bin/env bash
# The test command of the README and of CI: installs what the tests need, then lint, types, tests.
# Safe to run again: the venv and packages are reused.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
# System packages the tests need: a venv, a real MQTT broker (and openssl for its TLS
# certificates), a real gpsd (with gpsfake), and Chromium with its driver for the web map.
need=()
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v gpsfake >/dev/null 2>&1 || need+=(gpsd gpsd-clients)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
browser=()
{ command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; } || browser=(chromium chromium-driver)
if [ $((${#need[@]} + ${#browser[@]})) -gt 0 ]; then
    $SUDO apt-get update -qq
fi
if [ ${#need[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ${#browser[@]} -gt 0 ]; then
    # Debian's chromium; where it cannot be had (Ubuntu ships it as a snap) the web map's
    # browser test skips and says why, the rest runs
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${browser[@]}" >/dev/null ||
        echo "warning: could not install chromium + chromium-driver; the web map's browser test will skip" >&2
fi

bash scripts/venv.sh dev
PY=.venv/bin/python

echo "== ruff"
"$PY" -m ruff check .
echo "== mypy"
"$PY" -m mypy
echo "== pytest"
"$PY" -m pytest "$@"
