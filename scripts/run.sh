#!/usr/bin/env bash
# The README's main job: replay the sample ride (samples/ride/: a simulated ride up a street
# in Lund past four cameras, with its GPS track) and write one sighting per camera passed.
# Extra arguments go to `sousveil replay` (e.g. --out FILE.jsonl, --threads 2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
exec .venv/bin/sousveil replay samples/ride/lund-ride.mp4 --track samples/ride/lund-ride.gpx "$@"
