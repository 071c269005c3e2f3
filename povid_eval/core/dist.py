"""torchrun, the little the runner and the training loop need of it: rank, number of processes, a barrier (gloo), and
rank 0's verdict shared with every rank."""

from __future__ import annotations

import os

from povid_eval.core.errors import PovidError


def info() -> tuple[int, int]:
    """(rank, number of processes) under torchrun, else (0, 1); initialises a gloo process group when needed."""
    n_ranks = int(os.environ.get("WORLD_SIZE", "1"))
    if n_ranks == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    return dist.get_rank(), n_ranks


def barrier(n_ranks: int) -> None:
    """Wait for every rank (nothing in one process)."""
    if n_ranks > 1:
        import torch.distributed as dist

        dist.barrier()


def share_error(error: Exception | None, n_ranks: int) -> None:
    """Raise on every rank the error rank 0 met (``error`` is rank 0's; other ranks pass None). Every rank
    calls it, in step, so that a check failing on rank 0 alone stops all ranks instead of leaving them at a
    barrier."""
    if n_ranks > 1:
        import torch.distributed as dist

        box = [None if error is None else str(error)]
        dist.broadcast_object_list(box, src=0)
        if error is None and box[0] is not None:
            error = PovidError(box[0])
    if error is not None:
        raise error
