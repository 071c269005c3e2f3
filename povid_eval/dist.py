"""torchrun, the little the runner and the training loop need of it: rank, world size, a barrier (gloo)."""

from __future__ import annotations

import os


def info() -> tuple[int, int]:
    """(rank, world size) under torchrun, else (0, 1); initialises a gloo process group when needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), world


def barrier(world: int) -> None:
    """Wait for every rank (nothing in one process)."""
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
