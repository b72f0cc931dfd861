"""DistributedDataParallel set-up for `torchrun --nproc_per_node=N -m cvtool train ...`.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init(device: str) -> tuple[int, int]:
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device.startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return dist.get_rank(), dist.get_world_size()


def finish() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_max(v: int, device: torch.device) -> int:
    """max of v over the process group (nccl needs the tensor on the GPU, gloo takes it on the CPU)."""
    t = torch.tensor([v], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def average_buffers(module: torch.nn.Module) -> None:
    """Average every floating-point buffer (BatchNorm's running mean and variance) over the ranks, in place.

    DDP keeps the parameters identical but each rank's BatchNorm only ever sees its own shard; without this the
    ranks drift apart and the checkpoint holds rank 0's statistics alone (torch offers no SyncBatchNorm on CPU)."""
    world = dist.get_world_size()
    for b in module.buffers():
        if b.dtype.is_floating_point:
            dist.all_reduce(b, op=dist.ReduceOp.SUM)
            b /= world
