#!/bin/bash
# Multi-node DDP with plain torchrun (no SLURM): run this on every node with the same MAIN_HOST.
#   NNODES=2 NODE_RANK=0 MAIN_HOST=node0 bash launch/torchrun_multinode.sh recipes/configs/<y>.yaml
#   NNODES=2 NODE_RANK=1 MAIN_HOST=node0 bash launch/torchrun_multinode.sh recipes/configs/<y>.yaml
# The Trainer reads torchrun's RANK/WORLD_SIZE/LOCAL_RANK itself; no accelerate config is needed.
set -euo pipefail

CONFIG=${1:?usage: NNODES=.. NODE_RANK=.. MAIN_HOST=.. bash launch/torchrun_multinode.sh recipes/configs/<y>.yaml}
shift
torchrun --nnodes "${NNODES:?}" --node_rank "${NODE_RANK:?}" --nproc_per_node "${GPUS_PER_NODE:-8}" \
  --rdzv_backend c10d --rdzv_endpoint "${MAIN_HOST:?}:${MAIN_PORT:-29500}" \
  recipes/distill.py --config "$CONFIG" "$@"
