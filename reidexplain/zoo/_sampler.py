"""A private identity-balanced batch sampler (P identities x K images) for the trainer."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import torch


class _PKBatches:
    """Yield lists of ``p * k`` dataset indices: ``p`` distinct identities, ``k`` images each.

    One pass covers every image about once: each identity's shuffled images are cut into chunks of
    ``k`` (the last chunk topped up by re-drawing from the same identity), and batches draw ``p``
    identities among those with chunks left. Identities with fewer than ``k`` images are sampled with
    replacement. The order depends only on ``seed`` and the number of passes made so far.
    """

    def __init__(self, pids: Sequence[int], p: int, k: int, seed: int = 0) -> None:
        by_pid: dict[int, list[int]] = defaultdict(list)
        for index, pid in enumerate(pids):
            by_pid[int(pid)].append(index)
        if len(by_pid) < p:
            raise ValueError(f"PK sampling: `p`={p} identities per batch, but the dataset has {len(by_pid)}")
        self._by_pid = dict(sorted(by_pid.items()))
        self.p, self.k = p, k
        self._generator = torch.Generator().manual_seed(seed)
        self._length = self._count_batches()

    def _count_batches(self) -> int:
        remaining = sorted((-(-len(v) // self.k) for v in self._by_pid.values()), reverse=True)
        batches = 0
        while len(remaining) >= self.p:
            remaining = [c - 1 if i < self.p else c for i, c in enumerate(remaining)]
            remaining = sorted((c for c in remaining if c > 0), reverse=True)
            batches += 1
        return batches

    def __len__(self) -> int:
        # An upper bound reached by the greedy count above; the random draw may end a batch or two
        # early when few identities keep chunks, which the trainer tolerates.
        return self._length

    def _chunks(self, indices: list[int]) -> list[list[int]]:
        g = self._generator
        order = [indices[i] for i in torch.randperm(len(indices), generator=g).tolist()]
        chunks = [order[i : i + self.k] for i in range(0, len(order), self.k)]
        last = chunks[-1]
        while len(last) < self.k:
            last.append(indices[int(torch.randint(len(indices), (1,), generator=g))])
        return chunks

    def __iter__(self) -> Iterator[list[int]]:
        g = self._generator
        pending = {pid: self._chunks(idx) for pid, idx in self._by_pid.items()}
        for _ in range(self._length):
            alive = [pid for pid, chunks in pending.items() if chunks]
            if len(alive) < self.p:
                return
            # Favour identities with more chunks left so that the pass does not strand them at the end.
            weights = torch.tensor([len(pending[pid]) for pid in alive], dtype=torch.float)
            chosen = torch.multinomial(weights, self.p, replacement=False, generator=g).tolist()
            batch: list[int] = []
            for i in chosen:
                batch.extend(pending[alive[i]].pop())
            yield batch
