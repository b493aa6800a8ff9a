#!/usr/bin/env bash
# Multi-node TG-DP pretraining with torchrun: run this same command on every node (by hand, by pdsh, by
# docker/slurm-train.sbatch, or as `tgdp-torchrun` inside the train image); the c10d rendezvous on MASTER assigns
# the ranks, so no node rank is passed.
#
#   NNODES=2 MASTER=gpu-node-0 STORE=/mnt/tgdp/store RUN_DIR=/mnt/tgdp/runs/tgdp_base \
#     docker/torchrun-multinode.sh [extra tgdp-train options, e.g. --set optim.lr=1e-4]
#
# Inside the train image (host networking so NCCL sees the real NICs; --ipc=host for DataLoader shared memory):
#   docker run --rm --gpus all --network host --ipc=host -v /mnt/tgdp:/mnt/tgdp \
#     -e NNODES=2 -e MASTER=gpu-node-0 -e STORE=/mnt/tgdp/store -e RUN_DIR=/mnt/tgdp/runs/tgdp_base \
#     --entrypoint tgdp-torchrun tgdp-train:latest
#
# Environment:
#   NNODES (required)     number of nodes
#   MASTER (required)     host name or address of the rendezvous node (any one of the nodes, the same on all)
#   STORE, RUN_DIR (required)  Arrow store (from `tgdp-data shard`) and run directory, on storage all nodes share
#   GPUS                  processes per node (default: the number of GPUs nvidia-smi lists)
#   CONFIG                training preset or YAML file (default: tgdp_base)
#   MASTER_PORT           rendezvous port on MASTER (default: 29500)
#   RDZV_ID               job id shared by the nodes (default: derived from RUN_DIR; SLURM passes its job id)
#   MAX_RESTARTS          torchrun restarts of the whole worker group after a failure (default: 0)
#   RESUME                1 (default): pass --resume, so a restart (torchrun, a requeued SLURM job, a rerun) continues
#                         from RUN_DIR's last checkpoint; with no checkpoint yet tgdp-train starts from scratch, and it
#                         refuses a checkpoint whose model config differs. 0: fresh run (fails if RUN_DIR has one).
#   DRY_RUN=1             print the command instead of running it
# NCCL: set NCCL_SOCKET_IFNAME to the interface the nodes reach each other on when the default pick is wrong
# (a docker bridge, a management NIC); NCCL_DEBUG=INFO shows the chosen transport (docs/TROUBLESHOOTING.md).
set -euo pipefail

: "${NNODES:?set NNODES to the number of nodes}"
: "${MASTER:?set MASTER to the rendezvous host}"
: "${STORE:?set STORE to the Arrow store directory}"
: "${RUN_DIR:?set RUN_DIR to the run directory}"

if [[ -z "${GPUS:-}" ]]; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    GPUS=$(nvidia-smi --list-gpus | wc -l)
  else
    echo "GPUS is not set and nvidia-smi is not available" >&2
    exit 2
  fi
fi
CONFIG=${CONFIG:-tgdp_base}
MASTER_PORT=${MASTER_PORT:-29500}
RDZV_ID=${RDZV_ID:-tgdp-$(basename "$RUN_DIR")}
MAX_RESTARTS=${MAX_RESTARTS:-0}
resume=()
if [[ "${RESUME:-1}" == 1 ]]; then
  resume=(--resume)
fi

cmd=(
  torchrun
  --nnodes="$NNODES"
  --nproc-per-node="$GPUS"
  --rdzv-backend=c10d
  --rdzv-endpoint="$MASTER:$MASTER_PORT"
  --rdzv-id="$RDZV_ID"
  --max-restarts="$MAX_RESTARTS"
  -m tgdp.train.cli
  --config "$CONFIG"
  --store "$STORE"
  --run-dir "$RUN_DIR"
  ${resume[@]+"${resume[@]}"}
  "$@"
)

if [[ "${DRY_RUN:-0}" == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  printf '\n'
  exit 0
fi
exec "${cmd[@]}"
