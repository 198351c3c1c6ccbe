import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reidexplain.attribution import PairAttribution, normalize_maps


def _amd(batch=2, m=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    contrib = torch.rand(batch, m, generator=g) + 0.01
    return PairAttribution(
        method="amd",
        images=(torch.rand(batch, 3, 8, 4, generator=g), torch.rand(batch, 3, 8, 4, generator=g)),
        distance=contrib.sum(1) * 1.01,
        maps=(torch.rand(batch, m, 8, 4, generator=g), torch.rand(batch, m, 8, 4, generator=g)),
        attribute_names=tuple(f"a{i}" for i in range(m)),
        reconstructed=contrib.sum(1),
        contributions=contrib,
    )


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 4), st.integers(1, 6), st.integers(0, 1000))
def test_shares_sum_to_one_and_heatmaps_shape(batch, m, seed):
    a = _amd(batch, m, seed)
    assert torch.allclose(a.shares.sum(1), torch.ones(batch), atol=1e-5)
    heat_a, heat_b = a.heatmaps
    assert heat_a.shape == heat_b.shape == (batch, 1, 8, 4)
    # Share-weighted sum of maps scaled to max 1: bounded by 1 and non-negative.
    assert heat_a.min() >= 0 and heat_a.max() <= 1 + 1e-5


def test_top_orders_by_contribution():
    a = _amd()
    a.contributions = torch.tensor([[0.1, 0.7, 0.2], [0.5, 0.1, 0.4]])
    assert [n for n, _, _ in a.top(2)] == ["a1", "a2"]
    assert [n for n, _, _ in a.top(3, pair=1)] == ["a0", "a2", "a1"]
    assert a.top(1)[0][2] == pytest.approx(0.7)
    with pytest.raises(IndexError):
        a.top(1, pair=5)


def test_indexing_to_dict_and_baseline_without_contributions():
    a = _amd(batch=3)
    one = a[1]
    assert len(one) == 1 and torch.equal(one.contributions[0], a.contributions[1])
    json.dumps(a.to_dict())
    base = PairAttribution("saliency", a.images, a.distance, tuple(m[:, :1] for m in a.maps))
    assert base.shares is None and not base.has_contributions
    assert base.heatmaps[0] is base.maps[0]
    with pytest.raises(ValueError, match="maps only"):
        base.top()
    assert "contributions" not in base.to_dict()


def test_shape_validation():
    a = _amd()
    with pytest.raises(ValueError, match="distance: expected shape"):
        PairAttribution("x", a.images, torch.zeros(3), a.maps)
    with pytest.raises(ValueError, match="maps_a"):
        PairAttribution("x", a.images, a.distance, (torch.zeros(2, 1, 4, 4), a.maps[1]))


def test_normalize_maps_peak_is_one():
    m = torch.rand(2, 3, 5, 5) * 7
    assert torch.allclose(normalize_maps(m).flatten(2).amax(2), torch.ones(2, 3))
