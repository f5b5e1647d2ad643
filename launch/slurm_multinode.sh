#!/bin/bash
# Multi-node distillation on SLURM: one `accelerate launch` per node, which starts one process per GPU.
#   sbatch --nodes=2 launch/slurm_multinode.sh recipes/configs/qwen3vl8b.yaml [distill.max_steps=2000 ...]
# ACCEL_CONFIG picks the strategy (default ZeRO-2; launch/ddp.yaml for DDP, deepspeed_zero3.yaml
# for full 8B fine-tuning). A preempted and requeued job continues from its newest complete
# checkpoint (distill.resume_from_checkpoint: last is the default; the run folder must be shared).
#SBATCH --job-name=psdistill
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=12:00:00
#SBATCH --requeue
#SBATCH --output=logs/%x-%j.out
set -euo pipefail

CONFIG=${1:?usage: sbatch launch/slurm_multinode.sh recipes/configs/qwen3vl8b.yaml [key=value ...]}
shift
ACCEL_CONFIG=${ACCEL_CONFIG:-launch/deepspeed_zero2.yaml}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
MAIN_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MAIN_PORT=${MAIN_PORT:-29500}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}  # weights are expected on shared disk, not fetched by 16 ranks

# SLURM_PROCID is the node's rank here (one task per node); escaped so each task reads its own.
srun --kill-on-bad-exit=1 bash -c "accelerate launch --config_file $ACCEL_CONFIG \
  --num_machines $SLURM_NNODES --num_processes $((SLURM_NNODES * GPUS_PER_NODE)) \
  --machine_rank \$SLURM_PROCID --main_process_ip $MAIN_HOST --main_process_port $MAIN_PORT \
  --rdzv_backend c10d \
  recipes/distill.py --config $CONFIG $*"
