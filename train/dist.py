"""Process-group set-up from the torchrun environment (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT).

Design: the same `fit` runs as one process, under `torchrun --nproc_per_node=N` (one node) or across nodes; NCCL on
CUDA, gloo on CPU. `init_distributed` only creates a process group when WORLD_SIZE > 1 and none exists, and says
whether it did, so the caller destroys only what it created (tests spawn ranks that call `fit` directly).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from tgdp.core.device import pick_device

__all__ = ["DistInfo", "all_reduce_mean", "barrier", "broadcast_object", "cleanup", "init_distributed"]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    created_group: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device_kind: str = "auto") -> DistInfo:
    """Read the torchrun env, pick the device and, for WORLD_SIZE > 1, join the process group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    device = pick_device(device_kind, local_rank, key="train.device")  # auto: cuda:LOCAL_RANK when CUDA is present
    created = False
    if dist.is_available() and dist.is_initialized():
        world, rank = dist.get_world_size(), dist.get_rank()
    elif world > 1:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        created = True
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world, device=device, created_group=created)


def cleanup(info: DistInfo) -> None:
    if info.created_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of `t` over ranks (in place on a copy)."""
    if not info.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's `obj` on every rank."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
