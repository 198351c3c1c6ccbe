"""Causal metrics: Spearman against scipy, counterfactual effects and sensitivity on hand-made cases."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr

from reidexplain.metrics.causal import (
    attribute_sensitivity,
    causal_agreement,
    counterfactual_effects,
    spearman_correlation,
)


def _scipy_rows(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> list[float]:
    out = []
    for xi, yi, vi in zip(x.numpy(), y.numpy(), valid.numpy(), strict=True):
        if vi.sum() < 2:
            out.append(math.nan)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on constant input and returns NaN
            out.append(float(spearmanr(xi[vi], yi[vi]).statistic))
    return out


def test_spearman_matches_scipy_with_ties_and_masks():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 4, (40, 9), generator=gen).float()  # many ties
    y = torch.randint(0, 5, (40, 9), generator=gen).float() + 0.5 * x
    valid = torch.rand(40, 9, generator=gen) < 0.7
    valid[0] = False
    valid[1] = False
    valid[1, 3] = True  # a single valid entry
    x[2] = 1.0  # constant row
    valid[2] = True
    got = spearman_correlation(x, y, valid)
    np.testing.assert_allclose(got.numpy(), _scipy_rows(x, y, valid), atol=1e-6, equal_nan=True)
    assert math.isnan(got[0]) and math.isnan(got[1]) and math.isnan(got[2])
    assert torch.isfinite(got[3:]).sum() >= 30  # the comparison was not vacuous


def test_spearman_continuous_matches_scipy():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(25, 26, generator=gen)
    y = x + torch.randn(25, 26, generator=gen)
    valid = torch.ones(25, 26, dtype=torch.bool)
    np.testing.assert_allclose(spearman_correlation(x, y).numpy(), _scipy_rows(x, y, valid), atol=1e-6)


def test_causal_agreement_hand_cases():
    contributions = torch.tensor([
        [0.5, 0.3, 0.1, 0.0],
        [0.5, 0.3, 0.1, 0.0],
        [0.1, 0.2, 0.7, 0.0],
        [0.2, 0.2, 0.2, 0.2],
    ])
    effects = torch.tensor([
        [9.0, 4.0, 2.0, 1.0],  # same order: 1
        [1.0, 2.0, 4.0, 9.0],  # reversed: -1
        [0.0, 0.3, 0.2, float("nan")],  # not measured: skipped; ranks (1,2,3) vs (1,3,2): 0.5
        [1.0, 2.0, 3.0, 4.0],  # constant contributions: undefined
    ])
    got = causal_agreement(contributions, effects)
    assert got[:3].tolist() == pytest.approx([1.0, -1.0, 0.5])
    assert math.isnan(got[3])
    assert causal_agreement.higher_is_better is True
    valid = torch.tensor([[True, True, False, False]] * 4)
    assert causal_agreement(contributions, effects, valid)[:2].tolist() == pytest.approx([1.0, -1.0])


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_spearman_invariant_to_monotone_maps_and_symmetric(seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 7, generator=gen)
    y = torch.randn(3, 7, generator=gen)
    rho = spearman_correlation(x, y)
    torch.testing.assert_close(spearman_correlation(torch.exp(3 * x), y.pow(3)), rho)
    torch.testing.assert_close(spearman_correlation(y, x), rho)
    torch.testing.assert_close(spearman_correlation(-x, y), -rho)
    assert ((rho >= -1) & (rho <= 1)).all()


def _toy_flips(batch: int = 3, num_attrs: int = 4, size: int = 4):
    """Attribute ``k`` lives in row ``k`` of the image; flipping it sets that row to 1."""
    gen = torch.Generator().manual_seed(2)
    a = torch.rand(batch, 3, size, size, generator=gen) * 0.5
    b = torch.rand(batch, 3, size, size, generator=gen) * 0.5
    flipped = a[:, None].repeat(1, num_attrs, 1, 1, 1)
    for k in range(num_attrs):
        flipped[:, k, :, k, :] = 1.0
    weight = torch.tensor([0.0, 1.0, 2.0, 4.0])[:, None]  # the toy model ignores attribute 0

    def dist(x, idx):
        return ((x - b[idx]).abs().sum(1) * weight).flatten(1).sum(1)

    return a, b, flipped, weight, dist


def test_counterfactual_effects_match_direct_computation():
    a, b, flipped, weight, dist = _toy_flips()
    got = counterfactual_effects(dist, a, flipped, batch_size=5)
    d0 = dist(a, torch.arange(3))
    for i in range(3):
        for k in range(4):
            expected = abs(dist(flipped[i, k][None], torch.tensor([i])).item() - d0[i].item())
            assert got[i, k].item() == pytest.approx(expected, rel=1e-5)
    torch.testing.assert_close(got[:, 0], torch.zeros(3), rtol=0.0, atol=1e-6)
    assert (got[:, 3] > got[:, 1]).all()
    signed = counterfactual_effects(dist, a, flipped, signed=True)
    torch.testing.assert_close(signed.abs(), got)


def test_counterfactual_effects_only_evaluates_valid_flips():
    a, b, flipped, weight, dist = _toy_flips()
    valid = torch.tensor([[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    evaluated: list[int] = []

    def counting(x, idx):
        evaluated.append(len(idx))
        return dist(x, idx)

    got = counterfactual_effects(counting, a, flipped, valid=valid, batch_size=2, progress=True)
    assert sum(evaluated) == 3 + int(valid.sum())  # originals + valid flips only
    assert torch.isnan(got[~valid]).all() and torch.isfinite(got[valid]).all()
    full = counterfactual_effects(dist, a, flipped)
    torch.testing.assert_close(got[valid], full[valid])
    # The effects feed causal_agreement: a perfect explainer of this toy model orders by weight.
    agreement = causal_agreement(weight.T.expand(3, 4), full)
    assert agreement.tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_attribute_sensitivity_hand_case():
    nan = float("nan")
    flips = torch.tensor([
        [0.04, 0.90, nan, 0.50],
        [0.06, 0.70, nan, 0.30],
    ])
    same = torch.tensor([0.4, 0.5, 0.3])  # noise floor 0.4
    out = attribute_sensitivity(flips, same)
    assert out.noise_floor.item() == pytest.approx(0.4)
    assert out.effect[[0, 1, 3]].tolist() == pytest.approx([0.05, 0.8, 0.4])
    assert out.ratio[[0, 1, 3]].tolist() == pytest.approx([0.125, 2.0, 1.0])
    assert math.isnan(out.ratio[2])
    assert out.uses.tolist() == [False, True, False, False]  # 1.0 is not above the floor
    assert out.count.tolist() == [2, 2, 0, 2]
    assert attribute_sensitivity(flips, same, threshold=0.1).uses.tolist() == [True, True, False, True]


def test_errors():
    x = torch.rand(2, 3)
    with pytest.raises(TypeError, match="contributions"):
        causal_agreement(x.tolist(), x)
    with pytest.raises(ValueError, match=r"contributions.*\(B,M\)"):
        causal_agreement(x[0], x[0])
    with pytest.raises(ValueError, match=r"effects.*\(2, 3\)"):
        causal_agreement(x, x[:, :2])
    with pytest.raises(ValueError, match=r"valid.*\(2, 3\)"):
        causal_agreement(x, x, torch.ones(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid.*NaN"):
        causal_agreement(x, x.masked_fill(torch.eye(2, 3, dtype=torch.bool), float("nan")),
                         torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid.*0/1"):
        spearman_correlation(x, x, torch.full((2, 3), 2))
    a, b, flipped, weight, dist = _toy_flips()
    with pytest.raises(TypeError, match="distance_fn.*callable"):
        counterfactual_effects(None, a, flipped)
    with pytest.raises(ValueError, match=r"flipped.*\(3, M, 3, 4, 4\)"):
        counterfactual_effects(dist, a, flipped[:, 0])
    with pytest.raises(ValueError, match=r"flipped.*\(3, M, 3, 4, 4\)"):
        counterfactual_effects(dist, a, flipped[:2])
    with pytest.raises(ValueError, match=r"valid.*\(3, 4\)"):
        counterfactual_effects(dist, a, flipped, valid=torch.ones(3, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="batch_size"):
        counterfactual_effects(dist, a, flipped, batch_size=0)
    with pytest.raises(ValueError, match=r"distance_fn.*shape \(3,\)"):
        counterfactual_effects(lambda im, i: dist(im, i).sum(), a, flipped)
    same = torch.tensor([0.4])
    with pytest.raises(ValueError, match=r"flip_distances.*\(N,M\)"):
        attribute_sensitivity(torch.rand(3), same)
    with pytest.raises(ValueError, match="flip_distances.*non-negative"):
        attribute_sensitivity(-torch.rand(2, 3), same)
    with pytest.raises(ValueError, match=r"same_person_distances.*\(K,\)"):
        attribute_sensitivity(torch.rand(2, 3), torch.rand(2, 2))
    with pytest.raises(ValueError, match=r"same_person_distances.*\(K,\)"):
        attribute_sensitivity(torch.rand(2, 3), torch.zeros(0))
    with pytest.raises(ValueError, match="same_person_distances.*finite"):
        attribute_sensitivity(torch.rand(2, 3), torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="noise floor"):
        attribute_sensitivity(torch.rand(2, 3), torch.zeros(2))
    with pytest.raises(ValueError, match="threshold"):
        attribute_sensitivity(torch.rand(2, 3), same, threshold=-1.0)
