#!/usr/bin/env bash
# The README's main job. Today: the camera model over the sample frame, boxes drawn into
# out/. Extra arguments go to `sousveil detect` (e.g. --json, --threshold 0.3).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
exec .venv/bin/sousveil detect samples/lund-cameras.jpg --draw out/ "$@"
