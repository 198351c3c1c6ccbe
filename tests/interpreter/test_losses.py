"""AMD losses: thresholds at their limits, hand-computed values and invariants (hypothesis)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reidexplain.interpreter.losses import (
    PRIOR_WEIGHTS,
    attribute_prior_loss,
    attribute_prior_terms,
    metric_distillation_loss,
    prior_thresholds,
)


# ------------------------------------------------------------------ thresholds
@pytest.mark.parametrize(("n", "expected"), [(1, 0.0794), (5, 0.0484), (10, 0.0384)])
def test_thresholds_market(n: int, expected: float) -> None:
    r, t = prior_thresholds(torch.tensor([n]), 26)
    assert float(t) == pytest.approx(expected, abs=5e-5)
    assert float(r) == pytest.approx(math.sqrt(n / 26))


def test_threshold_is_geometric_mean_of_fair_shares() -> None:
    m = 26
    n = torch.arange(1, m)
    r, t = prior_thresholds(n, m)
    fair_exclusive = r / n
    fair_common = (1 - r) / (m - n)
    torch.testing.assert_close(t, (fair_exclusive * fair_common).sqrt())
    assert bool((fair_common <= t).all() and (t <= fair_exclusive).all())


def test_threshold_limits() -> None:
    m = 26
    r, t = prior_thresholds(torch.tensor([0, m]), m)
    assert float(t[0]) == pytest.approx(2 / m)  # same identity: cap 2/M
    assert float(r[0]) == pytest.approx(0.0, abs=1e-7)
    assert float(r[1]) == pytest.approx(1.0)
    # N = M: the limit of the formula as N -> M, which the released code's smooth form also approaches.
    assert float(t[1]) == pytest.approx(1 / (math.sqrt(2) * m))
    _, near = prior_thresholds(torch.tensor([m - 1e-4]), m)
    assert float(near) == pytest.approx(float(t[1]), rel=1e-2)


def test_thresholds_reject_bad_counts() -> None:
    with pytest.raises(ValueError, match=r"num_exclusive.*\[0, 4\]"):
        prior_thresholds(torch.tensor([5]), 4)
    with pytest.raises(ValueError, match="num_attributes"):
        prior_thresholds(torch.tensor([0]), 0)


# ------------------------------------------------------------------ prior: hand-made cases
def test_prior_hand_computed() -> None:
    m = 4
    shares = torch.tensor([[0.1, 0.3, 0.3, 0.3]])
    exclusive = torch.tensor([[True, False, False, False]])
    r, t = (float(v) for v in prior_thresholds(torch.tensor([1]), m))
    group, floor, cap = attribute_prior_terms(shares, exclusive)
    assert float(group) == pytest.approx(r - 0.1, abs=1e-6)
    assert float(floor) == pytest.approx(t - 0.1, abs=1e-6)
    assert float(cap) == pytest.approx(3 * (0.3 - t), abs=1e-6)
    total = attribute_prior_loss(shares, exclusive)
    w = PRIOR_WEIGHTS
    assert float(total) == pytest.approx(w[0] * (r - 0.1) + w[1] * (t - 0.1) + w[2] * 3 * (0.3 - t), abs=1e-5)


def test_prior_same_identity_cap_only() -> None:
    m = 5
    shares = torch.tensor([[0.6, 0.1, 0.1, 0.1, 0.1]])
    exclusive = torch.zeros(1, m, dtype=torch.bool)
    group, floor, cap = attribute_prior_terms(shares, exclusive)
    assert float(group) == pytest.approx(0.0, abs=1e-7) and float(floor) == pytest.approx(0.0, abs=1e-7)
    assert float(cap) == pytest.approx(0.6 - 2 / m)
    uniform = torch.full((1, m), 1 / m)
    assert float(attribute_prior_loss(uniform, exclusive)) == pytest.approx(0.0, abs=1e-7)


def test_prior_all_exclusive_has_no_cap() -> None:
    m = 4
    shares = torch.tensor([[0.97, 0.01, 0.01, 0.01]])
    group, floor, cap = attribute_prior_terms(shares, torch.ones(1, m, dtype=torch.bool))
    assert float(cap) == pytest.approx(0.0, abs=1e-7)
    assert float(group) == pytest.approx(0.0, abs=1e-6)
    t = 1 / (math.sqrt(2) * m)
    assert float(floor) == pytest.approx(3 * (t - 0.01))


def test_prior_reductions_and_errors() -> None:
    shares = torch.full((3, 4), 0.25)
    exclusive = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]])
    per_pair = attribute_prior_loss(shares, exclusive, reduction="none")
    assert per_pair.shape == (3,)
    assert float(attribute_prior_loss(shares, exclusive, reduction="sum")) == pytest.approx(float(per_pair.sum()))
    assert float(attribute_prior_loss(shares, exclusive)) == pytest.approx(float(per_pair.mean()))
    with pytest.raises(ValueError, match="reduction"):
        attribute_prior_loss(shares, exclusive, reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"exclusive.*shape"):
        attribute_prior_loss(shares, exclusive[:, :3])
    with pytest.raises(ValueError, match="exclusive.*0/1"):
        attribute_prior_loss(shares, exclusive * 2)
    with pytest.raises(ValueError, match=r"shares.*\(P,M\)"):
        attribute_prior_loss(shares[0], exclusive[0])


def test_prior_gradient_pushes_exclusive_up() -> None:
    logits = torch.zeros(1, 6, requires_grad=True)
    exclusive = torch.tensor([[True, True, False, False, False, False]])
    attribute_prior_loss(logits.softmax(dim=1), exclusive).backward()
    assert bool((logits.grad[0, :2] < 0).all() and (logits.grad[0, 2:] > 0).all())


# ------------------------------------------------------------------ prior: invariants
@st.composite
def _pairs(draw: st.DrawFn) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    m = draw(st.integers(2, 30))
    bits = draw(st.lists(st.booleans(), min_size=m, max_size=m))
    weights = draw(st.lists(st.floats(0.01, 1.0), min_size=m, max_size=m))
    move = draw(st.floats(0.0, 1.0))
    return torch.tensor([bits]), torch.tensor([weights]), torch.tensor(move)


def _feasible_shares(exclusive: torch.Tensor, weights: torch.Tensor, move: torch.Tensor) -> torch.Tensor:
    """Fair shares, then part of the common attributes' mass moved onto the exclusive ones."""
    m = exclusive.shape[1]
    n = int(exclusive.sum())
    if n == 0:
        # Mix the uniform shares with random ones, little enough that no share exceeds the cap 2/M.
        q = weights / weights.sum()
        room = (1 / m) / (q - 1 / m).clamp_min(1e-9)
        lam = float(move) * min(1.0, float(room.min()))
        return (1 - lam) / m + lam * q
    r = math.sqrt(n / m)
    e = exclusive.double()
    shares = e * r / n + (1 - e) * ((1 - r) / (m - n) if n < m else 0.0)
    moved = float(move) * float(((1 - e) * shares).sum())
    shares = shares * (1 - (1 - e) * float(move))
    shares = shares + e * weights.double() / float((e * weights.double()).sum()) * moved
    return shares.float()


@settings(max_examples=150, deadline=None, derandomize=True)
@given(_pairs())
def test_prior_is_zero_when_constraints_hold(case: tuple) -> None:
    exclusive, weights, move = case
    shares = _feasible_shares(exclusive, weights, move)
    assert float(shares.sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(attribute_prior_loss(shares, exclusive)) == pytest.approx(0.0, abs=1e-5)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(_pairs())
def test_prior_is_non_negative_and_bounded(case: tuple) -> None:
    exclusive, weights, _ = case
    shares = weights / weights.sum()
    group, floor, cap = attribute_prior_terms(shares, exclusive)
    for term in (group, floor, cap):
        assert float(term) >= 0.0
    assert float(group) <= 1.0
    assert float(attribute_prior_loss(shares, exclusive)) <= sum(PRIOR_WEIGHTS) * 2


# ------------------------------------------------------------------ distillation
def test_distillation_is_scale_free_and_detaches_target() -> None:
    d = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    d_hat = torch.tensor([1.5, 2.0, 2.0], requires_grad=True)
    loss = metric_distillation_loss(d, d_hat)
    assert float(loss.detach()) == pytest.approx((0.5 + 0 + 1) / 3 / 2)
    loss.backward()
    assert d.grad is None
    assert d_hat.grad is not None
    scaled = metric_distillation_loss(d.detach() * 10, d_hat.detach() * 10)
    assert float(scaled) == pytest.approx(float(loss.detach()))


def test_distillation_errors() -> None:
    with pytest.raises(ValueError, match=r"reconstructed.*\(2,\)"):
        metric_distillation_loss(torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="empty"):
        metric_distillation_loss(torch.ones(0), torch.ones(0))


# ------------------------------------------------------------------ unknown labels (known mask)
def _random_pairs(p: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shares = torch.rand(p, m, generator=gen) ** 3
    shares = shares / shares.sum(dim=1, keepdim=True)
    exclusive = torch.rand(p, m, generator=gen) < 0.3
    return shares, exclusive


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_known_all_true_equals_no_mask(seed: int) -> None:
    shares, exclusive = _random_pairs(40, 26, seed)
    exclusive[0] = False
    exclusive[1] = True
    everything = torch.ones_like(exclusive)
    plain, masked = attribute_prior_terms(shares, exclusive), attribute_prior_terms(shares, exclusive, everything)
    for a, b in zip(plain, masked, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(
            attribute_prior_loss(shares, exclusive, reduction=reduction),
            attribute_prior_loss(shares, exclusive, reduction=reduction, known=(everything, everything)),
            rtol=1e-5, atol=1e-6,
        )


def test_known_all_false_gives_zero_loss_and_gradient() -> None:
    shares, exclusive = _random_pairs(10, 8, 3)
    shares.requires_grad_(True)
    nothing = torch.zeros_like(exclusive)
    loss = attribute_prior_loss(shares, exclusive, known=nothing)
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert shares.grad is not None and float(shares.grad.abs().sum()) == 0.0
    terms = attribute_prior_terms(shares.detach(), exclusive, nothing)
    assert all(float(term.abs().sum()) == 0.0 for term in terms)


@pytest.mark.parametrize("seed", [4, 5])
def test_unknown_entries_are_left_out_of_the_prior(seed: int) -> None:
    # Masking entries equals the prior of the sub-vocabulary of known attributes, shares renormalised.
    shares, exclusive = _random_pairs(12, 10, seed)
    gen = torch.Generator().manual_seed(seed + 100)
    known = torch.ones(12, 10, dtype=torch.bool)
    for i in range(12):
        known[i, torch.randperm(10, generator=gen)[: i % 5]] = False
    masked = attribute_prior_loss(shares, exclusive, reduction="none", known=known)
    for i in range(12):
        keep = known[i]
        sub = shares[i, keep] / shares[i, keep].sum()
        expected = attribute_prior_loss(sub[None], exclusive[i, keep][None], reduction="none")
        torch.testing.assert_close(masked[i : i + 1], expected, rtol=1e-5, atol=1e-6)


def test_unknown_exclusive_is_neither_exclusive_nor_common() -> None:
    shares = torch.tensor([[0.05, 0.65, 0.15, 0.15]])
    exclusive = torch.tensor([[True, False, False, False]])
    # Known: the tiny exclusive share is floored and the big common share capped.
    group, floor, cap = attribute_prior_terms(shares, exclusive)
    assert float(group) > 0 and float(floor) > 0 and float(cap) > 0
    # Unknown in either image: attribute 0 is out, attribute 1 is still a capped common attribute.
    known_a = torch.tensor([[False, True, True, True]])
    known_b = torch.ones(1, 4, dtype=torch.bool)
    group, floor, cap = attribute_prior_terms(shares, exclusive, (known_a, known_b))
    assert float(group) == 0.0 and float(floor) == 0.0
    p = shares[0, 1:] / shares[0, 1:].sum()
    assert float(cap) == pytest.approx(float(torch.relu(p - 2.0 / 3).sum()), abs=1e-6)
    with pytest.raises(ValueError, match=r"`known`: expected shape \(1, 4\)"):
        attribute_prior_terms(shares, exclusive, torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="`known`: expected a bool"):
        attribute_prior_loss(shares, exclusive, known=torch.full((1, 4), 0.5))
    with pytest.raises(TypeError, match="`known`"):
        attribute_prior_loss(shares, exclusive, known="all")


def test_thresholds_per_pair_counts() -> None:
    n = torch.tensor([0, 1, 3, 4, 0])
    m = torch.tensor([4, 4, 26, 4, 0])
    r, t = prior_thresholds(n, m)
    for i in range(4):
        ri, ti = prior_thresholds(n[i : i + 1], int(m[i]))
        assert float(r[i]) == pytest.approx(float(ri), abs=1e-7)
        assert float(t[i]) == pytest.approx(float(ti), abs=1e-7)
    assert float(r[4]) == 0.0 and float(t[4]) == 0.0
    with pytest.raises(ValueError, match="one count per pair"):
        prior_thresholds(n, torch.tensor([4, 4]))
    with pytest.raises(ValueError, match=r"\[0, num_attributes\]"):
        prior_thresholds(torch.tensor([5]), torch.tensor([4]))


def test_model_aware_prior_with_known() -> None:
    from reidexplain.interpreter.model_aware import model_aware_prior_loss

    shares, exclusive = _random_pairs(20, 6, 7)
    usage = torch.linspace(0.2, 1.0, 6)
    everything = torch.ones_like(exclusive)
    torch.testing.assert_close(model_aware_prior_loss(shares, exclusive, usage),
                               model_aware_prior_loss(shares, exclusive, usage, known=everything),
                               rtol=1e-5, atol=1e-6)
    assert float(model_aware_prior_loss(shares, exclusive, usage, known=~everything)) == 0.0
    torch.testing.assert_close(model_aware_prior_loss(shares, exclusive, torch.ones(6), known=everything),
                               attribute_prior_loss(shares, exclusive, known=everything), rtol=1e-5, atol=1e-6)
