"""The default process group, seen from the ranking: who this process is, and the two collectives it needs.

Nothing here knows about galleries; :mod:`reidexplain.ranking.index` (to cut an index into shards) and
:mod:`reidexplain.ranking.distributed` (to merge the shards' top-k) build on it.
"""

from __future__ import annotations

import torch

__all__ = ["shard_bounds"]

# ---------------------------------------------------------------------------------------- shards
def _process_group() -> tuple[int, int]:
    """``(world, rank)`` of the initialised default process group, else ``(1, 0)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def _comm_device(fallback: torch.device) -> torch.device:
    """Where the collectives' tensors must live: the current CUDA device for NCCL, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu") if fallback.type != "cpu" else fallback


def _all_gather(t: torch.Tensor) -> torch.Tensor:
    """``(W, *t.shape)``: every process's ``t`` (same shape and dtype on all), in rank order."""
    device = _comm_device(t.device)
    local = t.detach().to(device).contiguous()
    parts = [torch.empty_like(local) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, local)
    return torch.stack(parts).to(t.device)


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over the processes of ``t`` (same shape on all)."""
    device = _comm_device(t.device)
    local = t.detach().to(device).contiguous()
    torch.distributed.all_reduce(local)
    return local.to(t.device)


def shard_bounds(size: int, rank: int, world: int) -> tuple[int, int]:
    """``(start, stop)`` of process ``rank``'s contiguous part of ``size`` entries cut into ``world`` parts.

    The parts follow each other in rank order and their sizes differ by at most one.

    Raises:
        ValueError: ``world < 1`` or ``rank`` not in ``[0, world)``.

    Examples:
        >>> [shard_bounds(10, r, 3) for r in range(3)]
        [(0, 3), (3, 6), (6, 10)]
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank: expected 0 <= rank < world, got rank {rank} of world {world}")
    return size * rank // world, size * (rank + 1) // world
