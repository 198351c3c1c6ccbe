"""X-mAP_e, X-mAP_c and ADRE against a brute-force reference written from AMD-SPEC section 6."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reidexplain.metrics.explanation import adre, average_precision, x_map_common, x_map_exclusive


def _ap_reference(scores: list[float], relevant: list[bool]) -> float:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if relevant[i]:
            hits += 1
            total += hits / rank
    return total / hits if hits else math.nan


def _reference(shares: torch.Tensor, exclusive: torch.Tensor, d: torch.Tensor, d_hat: torch.Tensor,
               valid: torch.Tensor) -> tuple[float, float, float]:
    m = shares.shape[-1]
    ex_aps, co_aps, errs = [], [], []
    for idx in range(shares.shape[0]):
        if not valid[idx]:
            continue
        p = shares[idx].tolist()
        e = [bool(v) for v in exclusive[idx]]
        n = sum(e)
        if n > 0:
            ex_aps.append(_ap_reference(p, e))
        if n < m:
            relevant = [(not e[k]) and not (n == 0 and p[k] > 2 / m) for k in range(m)]
            ap = _ap_reference([-v for v in p], relevant)
            if not math.isnan(ap):
                co_aps.append(ap)
        if d[idx] > 0:
            errs.append(abs(float(d[idx]) - float(d_hat[idx])) / float(d[idx]))
    mean = lambda xs: 100 * sum(xs) / len(xs) if xs else math.nan  # noqa: E731
    return mean(ex_aps), mean(co_aps), mean(errs)


def _case(seed: int, pairs: int = 60, m: int = 7) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    raw = torch.rand(pairs, m, generator=gen) ** 3
    shares = raw / raw.sum(1, keepdim=True)
    exclusive = torch.rand(pairs, m, generator=gen) < 0.3
    exclusive[:5] = False  # same labels: the 2/M rule of X-mAP_c
    exclusive[5] = True  # all exclusive: no common attribute
    d = torch.rand(pairs, generator=gen) + 0.1
    d[6] = 0.0  # an image with itself: ADRE skips it
    d_hat = d * (1 + 0.1 * torch.randn(pairs, generator=gen))
    valid = torch.rand(pairs, generator=gen) > 0.1
    return shares, exclusive, d, d_hat, valid


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_against_brute_force(seed: int) -> None:
    shares, exclusive, d, d_hat, valid = _case(seed)
    ref_e, ref_c, ref_adre = _reference(shares, exclusive, d, d_hat, valid)
    assert float(x_map_exclusive(shares, exclusive, valid)) == pytest.approx(ref_e, rel=1e-5)
    assert float(x_map_common(shares, exclusive, valid)) == pytest.approx(ref_c, rel=1e-5)
    assert float(adre(d, d_hat, valid)) == pytest.approx(ref_adre, rel=1e-5)


def test_matrix_shapes_and_none_reduction() -> None:
    shares, exclusive, d, d_hat, valid = _case(3, pairs=60)
    grid = (6, 10)
    per_pair = x_map_exclusive(shares.view(*grid, -1), exclusive.view(*grid, -1), valid.view(grid), reduction="none")
    assert per_pair.shape == grid
    assert bool(torch.isnan(per_pair[~valid.view(grid)]).all())
    kept = per_pair[~torch.isnan(per_pair)]
    assert float(kept.mean()) == pytest.approx(float(x_map_exclusive(shares, exclusive, valid)), rel=1e-6)
    per_err = adre(d.view(grid), d_hat.view(grid), reduction="none")
    assert math.isnan(float(per_err.view(-1)[6]))  # d = 0


def test_perfect_and_worst_rankings() -> None:
    shares = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    best = torch.tensor([[True, True, False, False]])
    worst = torch.tensor([[False, False, True, True]])
    assert float(x_map_exclusive(shares, best)) == pytest.approx(100.0)
    assert float(x_map_common(shares, best)) == pytest.approx(100.0)
    assert float(x_map_exclusive(shares, worst)) == pytest.approx(100 * (1 / 3 + 2 / 4) / 2)


def test_same_labels_rule_of_common_map() -> None:
    # N = 0, M = 4: 2/M = 0.5, so the attribute with share 0.7 is not relevant and is ranked last.
    shares = torch.tensor([[0.7, 0.1, 0.1, 0.1]])
    none = torch.zeros(1, 4, dtype=torch.bool)
    assert float(x_map_common(shares, none)) == pytest.approx(100.0)
    flipped = torch.tensor([[0.1, 0.1, 0.1, 0.7]])
    assert float(x_map_common(flipped, none)) == pytest.approx(100.0)


def test_pairs_that_do_not_count() -> None:
    shares = torch.full((2, 3), 1 / 3)
    assert math.isnan(float(x_map_exclusive(shares, torch.zeros(2, 3, dtype=torch.bool))))
    assert math.isnan(float(x_map_common(shares, torch.ones(2, 3, dtype=torch.bool))))
    assert math.isnan(float(adre(torch.zeros(2), torch.ones(2))))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.integers(1, 12), st.integers(0, 10_000))
def test_average_precision_matches_reference(m: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(4, m, generator=gen)
    relevant = torch.rand(4, m, generator=gen) < 0.5
    got = average_precision(scores, relevant)
    for row in range(4):
        ref = _ap_reference(scores[row].tolist(), relevant[row].tolist())
        if math.isnan(ref):
            assert math.isnan(float(got[row]))
        else:
            assert float(got[row]) == pytest.approx(ref, rel=1e-6)
            assert 0.0 < float(got[row]) <= 1.0


def test_higher_is_better_flags() -> None:
    assert x_map_exclusive.higher_is_better is True
    assert x_map_common.higher_is_better is True
    assert adre.higher_is_better is False


def test_errors() -> None:
    shares = torch.full((2, 3), 1 / 3)
    with pytest.raises(TypeError, match="shares"):
        x_map_exclusive([[0.5, 0.5]], torch.zeros(1, 2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"exclusive.*shape"):
        x_map_common(shares, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="exclusive.*0/1"):
        x_map_exclusive(shares, torch.full((2, 3), 3))
    with pytest.raises(ValueError, match=r"valid.*\(2,\)"):
        x_map_exclusive(shares, torch.zeros(2, 3, dtype=torch.bool), valid=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="reduction"):
        adre(torch.ones(2), torch.ones(2), reduction="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"reconstructed.*\(2,\)"):
        adre(torch.ones(2), torch.ones(3))


# ------------------------------------------------------------------ unknown labels
def _pairs(seed: int, shape=(6, 5, 9)):
    gen = torch.Generator().manual_seed(seed)
    shares = torch.rand(*shape, generator=gen)
    shares = shares / shares.sum(-1, keepdim=True)
    exclusive = torch.rand(*shape, generator=gen) < 0.4
    return shares, exclusive


@pytest.mark.parametrize("metric", [x_map_exclusive, x_map_common])
def test_known_all_true_matches_no_mask(metric):
    shares, exclusive = _pairs(0)
    exclusive[0, 0] = False  # a pair with the same labels
    everything = torch.ones_like(exclusive)
    torch.testing.assert_close(metric(shares, exclusive, reduction="none"),
                               metric(shares, exclusive, reduction="none", known=everything), equal_nan=True)


@pytest.mark.parametrize("metric", [x_map_exclusive, x_map_common])
def test_unknown_entries_are_dropped_from_the_ranking(metric):
    # Scoring with a mask equals scoring the known sub-vector of each pair on its own.
    shares, exclusive = _pairs(1, (20, 8))
    gen = torch.Generator().manual_seed(2)
    known = torch.rand(20, 8, generator=gen) < 0.7
    known[0] = False
    masked = metric(shares, exclusive, reduction="none", known=known)
    assert torch.isnan(masked[0])
    for i in range(1, 20):
        keep = known[i]
        sub = shares[i, keep] / shares[i, keep].sum()
        expected = metric(sub[None], exclusive[i, keep][None], reduction="none")[0] if keep.any() else torch.tensor(
            float("nan"))
        torch.testing.assert_close(masked[i], expected, equal_nan=True)


def test_unknown_is_neither_relevant_nor_irrelevant():
    shares = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    exclusive = torch.tensor([[False, True, True, False]])
    assert float(x_map_exclusive(shares, exclusive)) < 100.0
    # Attribute 0 (common, large share) is unknown: the exclusive ones now rank first.
    known = torch.tensor([[False, True, True, True]])
    assert float(x_map_exclusive(shares, exclusive, known=known)) == pytest.approx(100.0)
    assert float(x_map_common(shares, exclusive, known=known)) == pytest.approx(100.0)
    # Every exclusive attribute unknown: the pair no longer counts for X-mAP_e.
    assert torch.isnan(x_map_exclusive(shares, exclusive, known=~exclusive))
    with pytest.raises(ValueError, match="`known`: expected a bool tensor of the shape"):
        x_map_exclusive(shares, exclusive, known=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="`known`: expected a bool or 0/1"):
        x_map_common(shares, exclusive, known=torch.full((1, 4), 0.3))
