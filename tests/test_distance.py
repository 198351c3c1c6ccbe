import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reidexplain.distance import distance_matrix, pair_distance


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 9), st.integers(0, 10_000),
       st.sampled_from(["euclidean", "cosine"]))
def test_matrix_matches_pairwise_and_is_symmetric(n, k, d, seed, metric):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, d, generator=g), torch.randn(k, d, generator=g)
    mat = distance_matrix(x, y, metric)
    ref = pair_distance(x[:, None, :], y[None, :, :], metric)
    assert torch.allclose(mat, ref, atol=1e-4)
    assert torch.allclose(distance_matrix(y, x, metric), mat.T, atol=1e-4)
    assert (mat >= -1e-6).all()


def test_identity_distance_and_finite_gradient():
    x = torch.randn(3, 5, requires_grad=True)
    d = pair_distance(x, x.detach().clone())
    assert torch.all(d < 1e-5)
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_cosine_range_and_bad_metric():
    x = torch.tensor([[1.0, 0.0]])
    assert pair_distance(x, -x, "cosine").item() == pytest.approx(2.0)
    assert pair_distance(x, 3 * x, "cosine").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="metric: expected one of"):
        pair_distance(x, x, "manhattan")
    with pytest.raises(ValueError, match="dimensions differ"):
        pair_distance(x, torch.zeros(1, 3))
