"""PKSampler: P distinct identities x K images per batch, every identity once per epoch."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from reidexplain.data.sampler import PKSampler


@st.composite
def pk_setups(draw):
    sizes = draw(st.lists(st.integers(1, 7), min_size=1, max_size=14))
    pids = [100 + identity for identity, size in enumerate(sizes) for _ in range(size)]
    order = draw(st.permutations(range(len(pids))))
    pids = [pids[i] for i in order]  # ids interleaved, as in a folder sorted by file name
    p = draw(st.integers(1, len(sizes)))
    k = draw(st.integers(1, 5))
    return pids, p, k, draw(st.integers(0, 2**31)), draw(st.booleans()), draw(st.integers(0, 50))


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(pk_setups())
def test_pk_invariants(setup):
    pids, p, k, seed, drop_last, epoch = setup
    sampler = PKSampler(pids, p=p, k=k, seed=seed, drop_last=drop_last)
    sampler.set_epoch(epoch)
    batches = list(sampler)
    num_ids = len(set(pids))
    assert len(batches) == len(sampler) == (num_ids // p if drop_last else -(-num_ids // p))
    visited = Counter()
    for batch in batches:
        assert len(batch) == p * k == sampler.batch_size
        assert all(0 <= i < len(pids) for i in batch)
        batch_pids = [pids[i] for i in batch]
        counts = Counter(batch_pids)
        assert len(counts) == p and set(counts.values()) == {k}
        # The K images of one identity are adjacent.
        assert all(batch_pids[j] == batch_pids[j - j % k] for j in range(len(batch)))
        for pid in counts:
            size = pids.count(pid)
            chosen = [i for i in batch if pids[i] == pid]
            if size >= k:  # replacement only when an identity has too few images
                assert len(set(chosen)) == k
            else:
                assert set(chosen) <= {i for i, q in enumerate(pids) if q == pid}
        visited.update(counts.keys())
    if drop_last:
        assert len(visited) == (num_ids // p) * p and set(visited.values()) <= {1}
    else:
        assert len(visited) == num_ids  # every identity, a few twice to fill the last batch
        assert max(visited.values()) <= 2
        assert sum(v == 2 for v in visited.values()) == len(batches) * p - num_ids
    assert list(sampler) == batches  # same seed and epoch: same batches


def test_determinism_and_reshuffling():
    pids = [i // 4 for i in range(4 * 30)]
    a = PKSampler(pids, p=6, k=4, seed=3)
    b = PKSampler(list(reversed(pids)), p=6, k=4, seed=3)
    assert list(a) == list(a)
    ids = lambda s, ps: [sorted({ps[i] for i in batch}) for batch in s]  # noqa: E731
    assert ids(a, pids) == ids(b, list(reversed(pids)))  # independent of the item order
    first = list(a)
    a.set_epoch(1)
    second = list(a)
    assert first != second
    a.set_epoch(0)
    assert list(a) == first
    assert list(PKSampler(pids, p=6, k=4, seed=4)) != first
    # Over 30 epochs each pair of identities shares a batch sometimes, not in a fixed pattern.
    together = Counter()
    for epoch in range(30):
        a.set_epoch(epoch)
        for batch in a:
            group = sorted({pids[i] for i in batch})
            together.update((x, y) for x in group for y in group if x < y)
    assert len(together) > 0.9 * (30 * 29 / 2)


def test_drop_last_and_fill():
    pids = [i // 2 for i in range(14)]  # 7 identities
    assert len(PKSampler(pids, p=3, k=2)) == 2
    sampler = PKSampler(pids, p=3, k=2, drop_last=False)
    assert len(sampler) == 3
    batches = list(sampler)
    assert {pids[i] for b in batches for i in b} == set(range(7))
    assert all(len({pids[i] for i in b}) == 3 for b in batches)


def test_with_dataloader_and_tensor_pids():
    pids = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    sampler = PKSampler(pids, p=2, k=3, seed=0)
    loader = DataLoader(TensorDataset(torch.arange(10), pids), batch_sampler=sampler)
    batches = list(loader)
    assert len(batches) == 2
    for indices, batch_pids in batches:
        assert torch.equal(pids[indices], batch_pids)
        assert sorted(Counter(batch_pids.tolist()).values()) == [3, 3]


def test_errors():
    with pytest.raises(ValueError, match="p: expected an int >= 1, got 0"):
        PKSampler([0, 1], p=0, k=2)
    with pytest.raises(ValueError, match="k: expected an int >= 1, got -1"):
        PKSampler([0, 1], p=1, k=-1)
    with pytest.raises(TypeError, match="p: expected an int, got float"):
        PKSampler([0, 1], p=2.0, k=2)
    with pytest.raises(ValueError, match="needs p=6 distinct identities but only 3 are present in 5"):
        PKSampler([0, 0, 1, 2, 2], p=6, k=4)
