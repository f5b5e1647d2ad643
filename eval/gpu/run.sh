#!/usr/bin/env bash
# The GPU measurements (judge, scorer, training, DeepSpeed at 8B size), one step per `run` call (each fits its 10-minute limit):
#   run(command="bash eval/gpu/run.sh judge", carry=[".whl_bench"])   # bench_judge + bench_score at 8B, bf16, 448 px
#   run(command="bash eval/gpu/run.sh train", carry=[".whl_bench"])   # bench_train LoRA / QLoRA / LoRA-GRPO at 8B, checkpointing
#   run(command="bash eval/gpu/run.sh tests", carry=[".whl_bench"])   # the test suite with CUDA visible (bf16 paths)
#   run(command="bash eval/gpu/run.sh deepspeed", carry=[".whl_ds"])  # one ZeRO-2 run through accelerate launch
#   run(command="bash eval/gpu/run.sh vllm", carry=[".whl_bench"])    # the vLLM judge, one engine per rank (one per GPU),
#     against 1 process: pairs/s per GPU at 8B shapes; needs vllm in the image
#     (its CUDA wheel, ~400 MB, is over run's 64 MiB carry: the step says so and stops where it is missing)
# Reports land in $OUT (results/<bench>_<gpu>.md): copy them to eval/results/ here.
# Random weights at full size (psdistill/models/configs/qwen3_vl_8b.json): speed and memory are real, quality not.
# SMOKE=1 runs every step with the tiny model on whatever device there is (a check of this script on CPU).
set -uo pipefail
step=${1:?usage: run.sh judge|train|tests|deepspeed|vllm}
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
  vllm)
    $PY -c "import vllm" 2>/dev/null || { echo "run.sh vllm: vllm is not installed on this machine (pip install 'psdistill[vllm]'; its CUDA wheel does not fit run's carry)"; exit 3; }
    # One rank per GPU (an external_launcher engine takes cuda:LOCAL_RANK, so ranks cannot share a GPU); on a
    # one-GPU machine the launch has 1 process: the launch path and pairs/s per GPU, no split.
    ranks=$(nvidia-smi -L 2>/dev/null | wc -l); [ "$ranks" -ge 1 ] || ranks=2
    dtype=bfloat16 launch=launch/ddp.yaml llm='{"max_model_len": 8192, "gpu_memory_utilization": 0.85}'
    [ "${SMOKE:-0}" = 1 ] && dtype=float32 launch=launch/cpu_ddp.yaml llm='{"max_model_len": 4096, "enforce_eager": true}'
    config=${MODEL[1]:-psdistill/models/configs/qwen3_vl_mid.json}  # SMOKE: the mid-size model (vLLM CPU needs head_dim 64)
    $PY eval/bench_judge_vllm_ranks.py --processes $ranks --config-json "$config" --dtype $dtype --image-size $SIZE \
      --images 24 --references 4 --launch-config $launch --llm-kwargs "$llm" \
      --out "$OUT/results/judge_vllm_ranks_$GPU.md" 2>&1 | tee "$OUT/vllm.log" ;;
  *) echo "unknown step $step (judge|train|tests|deepspeed|vllm)"; exit 2 ;;
esac
