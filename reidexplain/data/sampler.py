"""PK batches: ``P`` identities with ``K`` images each, the batches metric learning and AMD train on.

Examples:
    >>> sampler = PKSampler([0, 0, 1, 1, 2, 2, 2, 3], p=2, k=2, seed=0)
    >>> len(sampler)
    2
    >>> batches = list(sampler)
    >>> [len(b) for b in batches]
    [4, 4]
    >>> sorted({pid for b in batches for pid in ([0, 0, 1, 1, 2, 2, 2, 3][i] for i in b)})
    [0, 1, 2, 3]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

__all__ = ["PKSampler"]


def _distributed_world() -> tuple[int, int]:
    """``(world size, rank)`` of the initialised ``torch.distributed`` group, else ``(1, 0)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def _check_count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value}")
    return int(value)


class PKSampler(Sampler[list[int]]):
    """Batch sampler yielding ``P`` distinct identities x ``K`` images per batch.

    Each epoch shuffles the identities and cuts them into groups of ``p``, so every identity appears
    in about one batch per epoch and ``len(sampler) = num_identities // p`` (rounded up without
    ``drop_last``). Within a batch each identity contributes ``k`` of its images, drawn without
    replacement, or with replacement when it has fewer than ``k``. Batches list the ``k`` indices of
    one identity next to each other.

    The order depends only on ``seed`` and the epoch: call :meth:`set_epoch` at the start of every
    epoch to reshuffle (as with ``torch.utils.data.DistributedSampler``); without it every epoch
    repeats the same batches.

    Args:
        pids: Person id of every dataset item (for example ``dataset.pids``); any hashable ids.
        p: Identities per batch.
        k: Images per identity.
        seed: Seed of the shuffling.
        num_replicas: Processes sharing each batch (``torchrun``); default: the initialised
            ``torch.distributed`` group's size, else 1. Each process gets a contiguous ``p / num_replicas``
            of the batch's identities, so that the processes' batches in rank order are the global batch.
        rank: This process's rank (default: the group's).
        drop_last: With ``True`` the ``num_identities % p`` identities left over after the last full
            batch skip this epoch (different ones each epoch). With ``False`` they form one more batch,
            filled up to ``p`` identities with randomly chosen other identities, so that every
            identity is visited and every batch still holds ``p x k`` indices.

    Raises:
        ValueError: ``p < 1``, ``k < 1``, or fewer than ``p`` distinct identities in ``pids``.
        TypeError: ``p`` or ``k`` is not an int.

    Examples:
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> import torch
        >>> pids = [i // 3 for i in range(30)]  # 10 identities, 3 images each
        >>> sampler = PKSampler(pids, p=4, k=4, seed=1)
        >>> loader = DataLoader(TensorDataset(torch.arange(30)), batch_sampler=sampler)
        >>> sampler.set_epoch(0)
        >>> [tuple(batch[0].shape) for batch in loader]
        [(16,), (16,)]
    """

    def __init__(
        self, pids: Sequence[object], p: int, k: int, seed: int = 0, drop_last: bool = True,
        num_replicas: int | None = None, rank: int | None = None,
    ) -> None:
        self.p = _check_count(p, "p")
        self.k = _check_count(k, "k")
        if num_replicas is None:
            num_replicas, rank = _distributed_world()
        self.num_replicas = _check_count(num_replicas, "num_replicas")
        self.rank = 0 if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank: expected 0 <= rank < num_replicas={self.num_replicas}, got {self.rank}")
        if self.p % self.num_replicas:
            raise ValueError(f"p: {self.p} identities per batch cannot be shared by {self.num_replicas} "
                             "processes; choose p divisible by the number of processes")
        if isinstance(pids, torch.Tensor):
            pids = pids.tolist()
        groups: dict[object, list[int]] = {}
        for index, pid in enumerate(pids):
            groups.setdefault(pid, []).append(index)
        if len(groups) < self.p:
            raise ValueError(
                f"pids: a batch needs p={self.p} distinct identities but only {len(groups)} are "
                f"present in {len(pids)} items"
            )
        # Sorted so that the batches do not depend on the order identities first appear in.
        self._groups = [np.asarray(groups[pid], dtype=np.int64) for pid in sorted(groups, key=repr)]
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    @property
    def num_identities(self) -> int:
        """Number of distinct identities in ``pids``."""
        return len(self._groups)

    @property
    def batch_size(self) -> int:
        """Indices per batch of this process, ``p * k / num_replicas``."""
        return self.p * self.k // self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffle of epoch ``epoch`` for the next iteration."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        full, rest = divmod(self.num_identities, self.p)
        return full + (1 if rest and not self.drop_last else 0)

    def _draw(self, rng: np.random.Generator, identity: int) -> list[int]:
        indices = self._groups[identity]
        replace = len(indices) < self.k
        return rng.choice(indices, size=self.k, replace=replace).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.num_identities)
        full = (self.num_identities // self.p) * self.p
        groups = [order[i : i + self.p] for i in range(0, full, self.p)]
        rest = order[full:]
        if len(rest) and not self.drop_last:
            others = np.setdiff1d(np.arange(self.num_identities), rest)
            filler = rng.choice(others, size=self.p - len(rest), replace=False)
            groups.append(np.concatenate([rest, filler]))
        share = self.batch_size
        for group in groups:
            # Every process draws the whole global batch (the same random stream everywhere) and keeps
            # its contiguous share, so that the processes' batches, in rank order, are the global one.
            batch = [index for identity in group for index in self._draw(rng, int(identity))]
            yield batch[self.rank * share:(self.rank + 1) * share]
