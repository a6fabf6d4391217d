"""torchrun integration: process group set-up and sharding of work lists.

The same scripts run with and without torchrun: without the torchrun
environment variables everything degrades to rank 0 of a world of 1.
"""
from __future__ import annotations

import os
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world_size) of this process; (0, 1) outside torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return world()[0] == 0


def init_distributed(device: torch.device) -> bool:
    """Join the process group when launched by torchrun; returns whether distributed."""
    if int(os.environ.get("WORLD_SIZE", 1)) <= 1 or dist.is_initialized():
        return dist.is_initialized()
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend=backend)
    return True


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shard(items: Sequence[T], rank: int | None = None, world_size: int | None = None) -> list[T]:
    """Items rank, rank + world_size, ...: disjoint shards whose union is ``items``."""
    if rank is None or world_size is None:
        rank, world_size = world()
    return list(items[rank::world_size])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor
