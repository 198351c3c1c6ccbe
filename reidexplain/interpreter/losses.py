"""The two AMD losses as pure functions on tensors (AMD-SPEC section 4).

* :func:`metric_distillation_loss`: the interpreter's distance ``d_hat`` must reproduce the target's
  distance ``d``; an L1 loss divided by the batch's mean target distance, so that the same weight works
  for a cosine model (distances ~0..2) and a BN-neck Euclidean model (distances ~10..40).
* :func:`attribute_prior_loss`: the attributes in which two persons differ (the *exclusive* ones) must
  carry the distance; the attributes they share (the *common* ones) must not.

Both take the quantities of a set of pairs and know nothing about networks.

Examples:
    >>> import torch
    >>> d = torch.tensor([2.0, 4.0]); d_hat = torch.tensor([2.0, 3.0])
    >>> round(float(metric_distillation_loss(d, d_hat)), 4)  # mean |d - d_hat| = 0.5, mean d = 3
    0.1667
    >>> shares = torch.full((1, 4), 0.25); exclusive = torch.tensor([[True, False, False, False]])
    >>> float(attribute_prior_loss(shares, exclusive)) > 0  # the exclusive attribute takes too little
    True
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from .._checks import as_bool_mask

__all__ = [
    "PRIOR_WEIGHTS",
    "metric_distillation_loss",
    "prior_thresholds",
    "attribute_prior_terms",
    "attribute_prior_loss",
]

PRIOR_WEIGHTS: tuple[float, float, float] = (2.0, 10.0, 10.0)
"""Weights of the group, floor and cap terms in :func:`attribute_prior_loss` (AMD-SPEC section 4; the
released code counts the group term twice, once from each side of the pair)."""


def metric_distillation_loss(
    distance: torch.Tensor, reconstructed: torch.Tensor, eps: float = 1e-12
) -> torch.Tensor:
    """Scale-free L1 distillation loss ``mean |d - d_hat| / mean d`` (``d`` detached).

    Args:
        distance: ``(P,)`` the target model's distances of ``P`` pairs. Treated as a constant.
        reconstructed: ``(P,)`` the interpreter's distances ``d_hat`` of the same pairs.
        eps: Lower bound of the normaliser, for a batch of identical images.

    Returns:
        A scalar tensor (0 when ``d_hat == d``).

    Raises:
        ValueError: the two tensors differ in shape or are empty.

    Examples:
        >>> import torch
        >>> float(metric_distillation_loss(torch.tensor([1.0, 3.0]), torch.tensor([1.0, 3.0])))
        0.0
    """
    if distance.shape != reconstructed.shape:
        raise ValueError(
            f"`reconstructed`: expected the shape of `distance` {tuple(distance.shape)}, "
            f"got {tuple(reconstructed.shape)}"
        )
    if distance.numel() == 0:
        raise ValueError("`distance`: expected at least one pair, got an empty tensor")
    d = distance.detach()
    return (d - reconstructed).abs().mean() / d.mean().clamp_min(eps)


def prior_thresholds(num_exclusive: torch.Tensor, num_attributes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of the attribute prior for pairs with ``N`` exclusive attributes out of ``M``.

    ``r = sqrt(N/M)`` is the least share the exclusive attributes must take together; ``t`` separates
    the shares of exclusive (``>= t``) and common (``<= t``) attributes: for ``0 < N < M`` the geometric
    mean ``sqrt(r(1-r) / (N(M-N)))`` of the two groups' fair shares ``r/N`` and ``(1-r)/(M-N)``; for
    ``N = 0`` (same person, or same labels) the cap ``2/M``; for ``N = M`` the limit of the formula as
    ``N -> M``, ``1/(sqrt(2) M)``.

    Args:
        num_exclusive: ``(P,)`` number of exclusive attributes ``N`` of each pair (int or float).
        num_attributes: ``M``.

    Returns:
        ``(r, t)``, two float tensors of shape ``(P,)``.

    Raises:
        ValueError: ``num_attributes < 1`` or ``N`` outside ``[0, M]``.

    Examples:
        >>> import torch
        >>> r, t = prior_thresholds(torch.tensor([0, 1, 5, 10]), 26)
        >>> t.round(decimals=4)
        tensor([0.0769, 0.0794, 0.0484, 0.0384])
    """
    m = int(num_attributes)
    if m < 1:
        raise ValueError(f"`num_attributes`: expected >= 1, got {num_attributes}")
    n = num_exclusive.float()
    if n.numel() and (n.min() < 0 or n.max() > m):
        raise ValueError(f"`num_exclusive`: expected values in [0, {m}], got [{float(n.min())}, {float(n.max())}]")
    r = (n / m).sqrt()
    inside = (n > 0) & (n < m)
    # Safe denominators: the formula is only used where 0 < N < M.
    n_safe = torch.where(inside, n, torch.ones_like(n))
    rest_safe = torch.where(inside, m - n, torch.ones_like(n))
    t_mid = (r * (1 - r) / (n_safe * rest_safe)).clamp_min(0).sqrt()
    t = torch.where(n == 0, torch.full_like(n, 2.0 / m), torch.full_like(n, 1.0 / (math.sqrt(2.0) * m)))
    t = torch.where(inside, t_mid, t)
    return r, t


def _check_shares(shares: torch.Tensor, exclusive: torch.Tensor) -> torch.Tensor:
    if shares.dim() != 2:
        raise ValueError(f"`shares`: expected shape (P,M), got {tuple(shares.shape)}")
    if exclusive.shape != shares.shape:
        raise ValueError(
            f"`exclusive`: expected the shape of `shares` {tuple(shares.shape)}, got {tuple(exclusive.shape)}"
        )
    exclusive = as_bool_mask(exclusive, "exclusive")
    return exclusive


def attribute_prior_terms(
    shares: torch.Tensor, exclusive: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three unweighted terms of the attribute prior, per pair.

    * group ``ReLU(r - sum_k e_k p_k)``: the exclusive attributes together take at least ``r``;
    * floor ``sum_k e_k ReLU(t - p_k)``: each exclusive attribute takes at least ``t``;
    * cap ``sum_k (1 - e_k) ReLU(p_k - t)``: each common attribute takes at most ``t``;

    with ``r, t`` from :func:`prior_thresholds`.

    Args:
        shares: ``(P,M)`` shares ``p_k = d_k / sum_j d_j`` of each pair (rows sum to 1).
        exclusive: ``(P,M)`` bool (or 0/1), ``True`` where the two persons differ in the attribute.

    Returns:
        ``(group, floor, cap)``, each ``(P,)``, non-negative.

    Raises:
        ValueError: shapes differ or are not 2-D; ``exclusive`` is not binary.

    Examples:
        >>> import torch
        >>> g, f, c = attribute_prior_terms(torch.tensor([[0.7, 0.1, 0.1, 0.1]]),
        ...                                 torch.tensor([[True, False, False, False]]))
        >>> float(g), float(f), float(c)
        (0.0, 0.0, 0.0)
    """
    exclusive = _check_shares(shares, exclusive)
    e = exclusive.to(shares.dtype)
    r, t = prior_thresholds(exclusive.sum(dim=1), shares.shape[1])
    r, t = r.to(shares.dtype), t.to(shares.dtype)
    group = F.relu(r - (e * shares).sum(dim=1))
    floor = (e * F.relu(t[:, None] - shares)).sum(dim=1)
    cap = ((1 - e) * F.relu(shares - t[:, None])).sum(dim=1)
    return group, floor, cap


def attribute_prior_loss(
    shares: torch.Tensor,
    exclusive: torch.Tensor,
    weights: tuple[float, float, float] = PRIOR_WEIGHTS,
    reduction: Literal["mean", "sum", "none"] = "mean",
) -> torch.Tensor:
    """Attribute prior ``2 L_group + 10 L_floor + 10 L_cap`` (AMD-SPEC section 4).

    Pairs without exclusive attributes (``N = 0``: the same identity) only get the cap, at ``2/M``; pairs
    where every attribute is exclusive (``N = M``) only get the group and floor terms.

    Args:
        shares: ``(P,M)`` shares of each pair (rows sum to 1).
        exclusive: ``(P,M)`` bool (or 0/1) exclusive-attribute indicator ``a_i XOR a_j``.
        weights: Weights of the group, floor and cap terms. Default: :data:`PRIOR_WEIGHTS`.
        reduction: ``"mean"`` or ``"sum"`` over pairs, or ``"none"`` for the ``(P,)`` per-pair values.

    Returns:
        A non-negative scalar (or ``(P,)``); zero when every constraint holds.

    Raises:
        ValueError: bad shapes, non-binary ``exclusive`` or an unknown ``reduction``.

    Examples:
        >>> import torch
        >>> shares = torch.tensor([[0.25, 0.25, 0.25, 0.25]])
        >>> float(attribute_prior_loss(shares, torch.zeros(1, 4, dtype=torch.bool)))  # cap 2/M = 0.5
        0.0
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"`reduction`: expected 'mean', 'sum' or 'none', got {reduction!r}")
    group, floor, cap = attribute_prior_terms(shares, exclusive)
    loss = weights[0] * group + weights[1] * floor + weights[2] * cap
    if reduction == "none":
        return loss
    if loss.numel() == 0:
        return shares.sum() * 0.0
    return loss.mean() if reduction == "mean" else loss.sum()
