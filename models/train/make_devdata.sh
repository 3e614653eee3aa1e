#!/usr/bin/env bash
# Assemble .devdata/, the inputs gpu_run.sh carries to a GPU machine (layout in gpu_run.sh's
# header). Run from the repo root, in the training venv (numpy, Pillow, torch; models/train/setup.sh).
#   SYNTH=../shared/data/synth REALCAMS=../shared/data/realcams SPRITES=/work/data/sprites \
#       bash models/train/make_devdata.sh [DEST]          (DEST default .devdata; must not exist)
# SPRITES unset: an empty sprite folder, i.e. cut-outs only (render a bank with
# models/synth/render_sprites.py). None of this may be committed: see models/synth/README.md.
set -euo pipefail
dest="${1:-.devdata}"
src="${SYNTH:-../shared/data/synth}"
real="${REALCAMS:-../shared/data/realcams}/train"
PY="${PYTHON:-python3}"
if [ -e "$dest" ]; then
    echo "$dest exists; give another DEST or move it away" >&2
    exit 1
fi
mkdir -p "$dest/synth_src/cutouts" "$dest/synth_src/products" "$dest/cache" "$dest/sprites"
cp -r "$src/backgrounds" "$dest/synth_src/"
# placeholders: the generator only checks that a labelled cut-out exists, then reads its matte
for f in "$src"/cutouts/* "$src"/products/*; do
    : > "$dest/synth_src/${f#"$src"/}"
done
# matte every labelled cut-out once into the cache (about 30 s): a one-tile run does it
tmp=$(mktemp -d)
"$PY" -m models.synth.generate --out "$tmp/one" --n 1 --seed 0 --src "$src" --cache "$dest/cache"
rm -rf "$tmp"
if [ -n "${SPRITES:-}" ]; then
    cp "$SPRITES"/*.png "$SPRITES/index.json" "$dest/sprites/"
fi
cp -r "$real" "$dest/realcams_train"
"$PY" -m models.train.weights --npz "$dest/mnv2.npz"
echo "made $dest: $(find "$dest" -type f | wc -l) files"
