#!/usr/bin/env bash
# One training run of the camera model on a lent GPU machine (run from the repo root):
# synthetic tiles made there in parallel, then models.train.torch_train.
#   GEN_PROCS=15 GEN_N=3000 TRAIN_SECONDS=400 SEED=0 bash models/train/gpu_run.sh OUTDIR
# (the settings of the shipped model's run; see models/README.md "How it was trained").
#
# Inputs travel in .devdata/ (git-ignored, never committed; the machine has no network):
#   .devdata/synth_src/backgrounds/   the street photos (copy of shared/data/synth/backgrounds)
#   .devdata/synth_src/cutouts/       empty placeholder files named like shared/data/synth/cutouts/*
#   .devdata/synth_src/products/      and products/*: the generator only checks that they exist...
#   .devdata/cache/                   ...because their matted copies are here: the cut-out cache
#                                     (models.synth.generate --cache, one PNG per labelled file)
#   .devdata/sprites/                 the 3D sprite bank (render_sprites.py: PNGs + index.json)
#   .devdata/realcams_train/          realcams/train as is (labels.json, images/; never val)
#   .devdata/mnv2.npz                 the backbone, float16: python -m models.train.weights --npz .devdata/mnv2.npz
# Torch with CUDA must already be on the machine (PYTHON picks the interpreter).
set -euo pipefail
out="${1:-${OUT:-/tmp/out}}"
D=.devdata
PY="${PYTHON:-python3}"
procs="${GEN_PROCS:-14}"
n="${GEN_N:-3000}"
mkdir -p "$out" /tmp/synth
"$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
t0=$(date +%s)
dirs=()
for k in $(seq 0 $((procs - 1))); do
    "$PY" -m models.synth.generate --out "/tmp/synth/$k" --n "$n" --seed $((1000 + k)) \
        --src $D/synth_src --cache $D/cache --sprites $D/sprites > "/tmp/synth/gen$k.log" 2>&1 &
    dirs+=("/tmp/synth/$k")
done
wait
echo "generated $((procs * n)) tiles in $(( $(date +%s) - t0 )) s"; tail -1 /tmp/synth/gen0.log
"$PY" -m models.train.torch_train --synth "${dirs[@]}" --real $D/realcams_train --weights $D/mnv2.npz \
    --out "$out" --seconds "${TRAIN_SECONDS:-360}" --bs "${BATCH:-64}" --workers "${WORKERS:-14}" \
    --seed "${SEED:-0}" 2>&1 | grep -v Warning
