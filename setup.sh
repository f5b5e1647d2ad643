#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with psdistill and its test dependencies.
#
# On a machine with an NVIDIA GPU: the stock CUDA torch, torchvision and qwen-vl-utils (the path
# Qwen-VL's own docs use). Without a GPU: the CPU-only torch 2.13.0 and NO torchvision, because no
# torchvision release works with that CPU build (`torchvision::nms does not exist`) and the builds
# that do are 5.7 GB of CUDA libraries; psdistill then assembles Qwen-VL's processor from its PIL
# image processor (psdistill/models/loading.py), which processes images identically.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  $PIP install -q -e ".[dev,qwen,deepspeed]"
else
  # Outside this workplace's machines the CPU wheel comes from PyTorch's CPU index:
  #   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash setup.sh
  $PIP install -q "torch==2.13.0"
  $PIP install -q -e ".[dev,deepspeed]"
fi
.venv/bin/python -c "import psdistill, torch, transformers; print('psdistill', psdistill.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
