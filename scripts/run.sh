#!/usr/bin/env bash
# The README's main job. Today: the detector over the sample frame, with the small test
# model, boxes drawn into out/. Extra arguments go to `sousveil detect`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/venv.sh
exec .venv/bin/sousveil detect samples/lund-toy-targets.jpg \
    --model tests/models/toy_centernet.tflite --threshold 0.75 --draw out/ "$@"
