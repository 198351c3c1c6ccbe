"""The interpreter network: activation, initial state, component embeddings, black-box head."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import AMDCustomNet, AMDFlatNet, AMDTimmToy, amd_sequential_net  # noqa: E402

from reidexplain.adapters import adapt_model  # noqa: E402
from reidexplain.attributes import AttributeSchema  # noqa: E402
from reidexplain.distance import pair_distance  # noqa: E402
from reidexplain.interpreter import (  # noqa: E402
    AMDModel,
    AttributeDecomposition,
    PaperAMD,
    attention_activation,
)

PROBE = torch.rand(4, 3, 32, 16, generator=torch.Generator().manual_seed(0))


def _model(net: torch.nn.Module, m: int, hidden: int = 256) -> AMDModel:
    return AMDModel(adapt_model(net, PROBE), PaperAMD(hidden=hidden), AttributeSchema.generic(m), "euclidean")


def test_activation_gradient_at_zero() -> None:
    # Training starts at z = 0 exactly: the gradient there must be the right-hand derivative 1/2.
    z = torch.zeros(3, requires_grad=True)
    attention_activation(z).sum().backward()
    torch.testing.assert_close(z.grad, torch.full((3,), 0.5))


def test_activation_values_and_continuity() -> None:
    z = torch.tensor([-2.0, -1e-6, 0.0, 1e-6, 3.0, 8.0])
    a = attention_activation(z)
    torch.testing.assert_close(a, torch.tensor([torch.e ** -2, 1.0, 1.0, 1.0, 2.0, 3.0]), rtol=1e-5, atol=1e-5)


@settings(max_examples=50, deadline=None, derandomize=True)
@given(st.lists(st.floats(-80, 1e6, allow_nan=False), min_size=1, max_size=16))
def test_activation_positive_with_finite_gradient(values: list[float]) -> None:
    z = torch.tensor(values, requires_grad=True)
    a = attention_activation(z)
    assert bool((a > 0).all())
    a.sum().backward()
    assert bool(torch.isfinite(z.grad).all() and (z.grad > 0).all())


def test_decomposition_layers() -> None:
    head = AttributeDecomposition(16, 5)
    assert head.conv.kernel_size == (3, 3) and head.conv.bias is None and head.conv.out_channels == 256
    assert head.classifier.kernel_size == (1, 1) and head.classifier.bias is None
    assert head.classifier.out_channels == 5


@pytest.mark.parametrize("factory", [amd_sequential_net, AMDTimmToy, AMDCustomNet])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_untrained_interpreter_reconstructs_exactly(factory, metric: str) -> None:
    model = _model(factory(), 6, hidden=32)
    with torch.no_grad():
        out = model(PROBE)
    assert out.components.shape == (4, 6, out.embeddings.shape[1])
    assert bool((out.maps == 1).all())
    d = pair_distance(out.embeddings[0], out.embeddings[1:], metric)
    d_hat = pair_distance(out.components[0:1], out.components[1:], metric).mean(dim=1)
    torch.testing.assert_close(d_hat, d, rtol=1e-4, atol=1e-6)


def test_gradients_reach_interpreter_not_target() -> None:
    model = _model(AMDTimmToy(), 3, hidden=8)
    interp = model.network
    with torch.no_grad():
        interp.decomposition.classifier.weight.normal_(0, 0.1)
    out = model(PROBE)
    pair_distance(out.components[0], out.components[1]).sum().backward()
    assert interp.decomposition.classifier.weight.grad is not None
    assert float(interp.decomposition.conv.weight.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.adapter.target.parameters())


def test_black_box_interpreter() -> None:
    model = _model(AMDFlatNet(), 4)
    assert model.network.black_box
    out = model(PROBE)
    assert out.maps.shape == (4, 4, 4, 2)
    assert out.components.shape == (4, 4, 256)
    assert out.embeddings.shape == (4, 8)
