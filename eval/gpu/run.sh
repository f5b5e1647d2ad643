#!/usr/bin/env bash
# The GPU measurements (judge, scorer, training, DeepSpeed at 8B size), one step per `run` call (each fits its 10-minute limit):
#   run(command="bash eval/gpu/run.sh judge", carry=[".whl_bench"])   # bench_judge + bench_score at 8B, bf16, 448 px
#   run(command="bash eval/gpu/run.sh train", carry=[".whl_bench"])   # bench_train LoRA / QLoRA / LoRA-GRPO at 8B, checkpointing
#   run(command="bash eval/gpu/run.sh tests", carry=[".whl_bench"])   # the test suite with CUDA visible (bf16 paths)
#   run(command="bash eval/gpu/run.sh deepspeed", carry=[".whl_ds"])  # one ZeRO-2 run through accelerate launch
# Reports land in $OUT (results/<bench>_<gpu>.md): copy them to eval/results/ here.
# Random weights at full size (psdistill/models/configs/qwen3_vl_8b.json): speed and memory are real, quality not.
# SMOKE=1 runs every step with the tiny model on whatever device there is (a check of this script on CPU).
set -uo pipefail
step=${1:?usage: run.sh judge|train|tests|deepspeed}
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/psdistill_gpu}; mkdir -p "$OUT/results"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
for w in .whl_bench .whl_ds; do
  if [ -d "$w" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$w"/*.whl || exit 1
    export PYTHONPATH=/tmp/site
  fi
done
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
PY=${PY:-python3}
if [ "${SMOKE:-0}" = 1 ]; then
  MODEL=(); DEV=(--device cpu --dtype float32); SIZE=64; GPU=smoke
else
  MODEL=(--config-json psdistill/models/configs/qwen3_vl_8b.json); DEV=(--device cuda --dtype bfloat16); SIZE=448
  GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | awk '{print tolower($2)}')
fi
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'peft', peft.__version__)"
case $step in
  judge)
    $PY eval/bench_judge.py "${MODEL[@]}" "${DEV[@]}" --image-size $SIZE --pairs 64 --images 16 --batch-size 16 \
      --repeats 2 --out "$OUT/results/bench_judge_$GPU.md" 2>&1 | tee "$OUT/judge.log"
    $PY eval/bench_score.py "${MODEL[@]}" "${DEV[@]}" --image-size $SIZE --images 64 --pairs 64 --references 8 \
      --batch-size 16 --repeats 2 --out "$OUT/results/bench_score_$GPU.md" 2>&1 | tee -a "$OUT/judge.log" ;;
  train)
    rows=(lora qlora); [ "${SMOKE:-0}" = 1 ] && rows=(lora)  # QLoRA needs CUDA
    $PY eval/bench_train.py "${MODEL[@]}" "${DEV[@]}" --tuning "${rows[@]}" --gradient-checkpointing \
      --image-size $SIZE --batch-size 4 --steps 10 --warmup 2 --images 32 \
      --out "$OUT/results/bench_train_$GPU.md" 2>&1 | tee "$OUT/train.log"
    $PY eval/bench_train.py "${MODEL[@]}" "${DEV[@]}" --tuning lora --objective grpo --gradient-checkpointing \
      --image-size $SIZE --batch-size 4 --steps 5 --warmup 1 --images 32 \
      --out "$OUT/results/bench_train_grpo_$GPU.md" 2>&1 | tee -a "$OUT/train.log" ;;
  tests)
    $PY -m pytest -x -q -p no:cacheprovider --durations=15 2>&1 | tee "$OUT/tests.log" ;;
  deepspeed)
    # The same 2-process-equivalence worker the CPU suite uses, here on one GPU through DeepSpeed ZeRO-2 (bf16).
    $PY - <<'PY'
import json, sys
sys.path.insert(0, "tests")
from _distill_common import ladder_records, pseudo_scores
from psdistill.data.manifest import write_manifest
records = ladder_records("/tmp/ds_data", photos=("astronaut", "camera", "coffee", "chelsea"), levels=4)
write_manifest(records, "/tmp/ds_data/manifest.csv")
open("/tmp/ds_data/pseudo.json", "w").write(json.dumps(pseudo_scores(records)))
PY
    $PY -m accelerate.commands.launch --config_file launch/deepspeed_zero2.yaml --num_processes 1 \
      tests/_ddp_worker.py --data /tmp/ds_data --out /tmp/ds_run --steps 5 --batch 4 2>&1 | tee "$OUT/deepspeed.log" ;;
  *) echo "unknown step $step (judge|train|tests|deepspeed)"; exit 2 ;;
esac
