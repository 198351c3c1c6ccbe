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
    "pair_known",
    "attribute_prior_terms",
    "attribute_prior_loss",
    "concentration_loss",
    "agreeing_pairs_cap_loss",
]

KnownMask = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None
"""A known-label mask of pairs: ``None``, a ``(P,M)`` bool tensor or a pair of ``(P,M)`` masks."""

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


def prior_thresholds(
    num_exclusive: torch.Tensor, num_attributes: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targets of the attribute prior for pairs with ``N`` exclusive attributes out of ``M``.

    ``r = sqrt(N/M)`` is the least share the exclusive attributes must take together; ``t`` separates
    the shares of exclusive (``>= t``) and common (``<= t``) attributes: for ``0 < N < M`` the geometric
    mean ``sqrt(r(1-r) / (N(M-N)))`` of the two groups' fair shares ``r/N`` and ``(1-r)/(M-N)``; for
    ``N = 0`` (same person, or same labels) the cap ``2/M``; for ``N = M`` the limit of the formula as
    ``N -> M``, ``1/(sqrt(2) M)``.

    Args:
        num_exclusive: ``(P,)`` number of exclusive attributes ``N`` of each pair (int or float).
        num_attributes: ``M``, one int for all pairs, or a ``(P,)`` tensor of per-pair counts (the
            known attributes of each pair, see :func:`attribute_prior_terms`); a pair with ``M = 0``
            gets ``r = 0`` and ``t = 0``.

    Returns:
        ``(r, t)``, two float tensors of shape ``(P,)``.

    Raises:
        ValueError: ``num_attributes < 1`` (an int) or ``< 0`` (a tensor), a tensor of another shape,
            or ``N`` outside ``[0, M]``.

    Examples:
        >>> import torch
        >>> r, t = prior_thresholds(torch.tensor([0, 1, 5, 10]), 26)
        >>> t.round(decimals=4)
        tensor([0.0769, 0.0794, 0.0484, 0.0384])
        >>> r, t = prior_thresholds(torch.tensor([1, 0]), torch.tensor([4, 0]))
        >>> r.tolist(), [round(v, 4) for v in t.tolist()]
        ([0.5, 0.0], [0.2887, 0.0])
    """
    if isinstance(num_attributes, torch.Tensor):
        return _prior_thresholds_per_pair(num_exclusive, num_attributes)
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


def _prior_thresholds_per_pair(num_exclusive: torch.Tensor, num_attributes: torch.Tensor
                               ) -> tuple[torch.Tensor, torch.Tensor]:
    n = num_exclusive.float()
    m = num_attributes.to(n.device).float()
    if m.shape != n.shape:
        raise ValueError(
            f"`num_attributes`: expected one count per pair, shape {tuple(n.shape)}, got {tuple(m.shape)}"
        )
    if m.numel() and m.min() < 0:
        raise ValueError(f"`num_attributes`: expected counts >= 0, got {float(m.min())}")
    if n.numel() and (n.min() < 0 or bool((n > m).any())):
        raise ValueError("`num_exclusive`: expected values in [0, num_attributes] for every pair")
    some = m > 0
    m_safe = torch.where(some, m, torch.ones_like(m))
    r = (n / m_safe).sqrt()
    inside = (n > 0) & (n < m)
    n_safe = torch.where(inside, n, torch.ones_like(n))
    rest_safe = torch.where(inside, m - n, torch.ones_like(n))
    t_mid = (r * (1 - r) / (n_safe * rest_safe)).clamp_min(0).sqrt()
    t = torch.where(n == 0, 2.0 / m_safe, 1.0 / (math.sqrt(2.0) * m_safe))
    t = torch.where(inside, t_mid, t)
    zero = torch.zeros_like(n)
    return torch.where(some, r, zero), torch.where(some, t, zero)


def _check_shares(shares: torch.Tensor, exclusive: torch.Tensor) -> torch.Tensor:
    if shares.dim() != 2:
        raise ValueError(f"`shares`: expected shape (P,M), got {tuple(shares.shape)}")
    if exclusive.shape != shares.shape:
        raise ValueError(
            f"`exclusive`: expected the shape of `shares` {tuple(shares.shape)}, got {tuple(exclusive.shape)}"
        )
    exclusive = as_bool_mask(exclusive, "exclusive")
    return exclusive


def pair_known(known: KnownMask, shape: torch.Size | tuple[int, ...]) -> torch.Tensor | None:
    """The ``(P,M)`` known-mask of pairs from either form the losses accept.

    Args:
        known: ``None`` (every label known), a ``(P,M)`` bool (or 0/1) tensor, ``True`` where the
            attribute is known in both images of the pair, or a tuple ``(known_a, known_b)`` of the
            two images' ``(P,M)`` masks, combined with a logical and.
        shape: The ``(P,M)`` shape of the shares.

    Returns:
        A bool ``(P,M)`` tensor, or ``None``.

    Raises:
        TypeError: ``known`` is of another type.
        ValueError: a mask of another shape or not boolean.

    Examples:
        >>> import torch
        >>> a, b = torch.tensor([[True, True]]), torch.tensor([[True, False]])
        >>> pair_known((a, b), (1, 2)).tolist()
        [[True, False]]
    """
    if known is None:
        return None
    if isinstance(known, (tuple, list)):
        if len(known) != 2:
            raise ValueError(f"`known`: expected a pair (known_a, known_b), got {len(known)} masks")
        a, b = (pair_known(k, shape) for k in known)
        return a & b  # type: ignore[operator]
    if not isinstance(known, torch.Tensor):
        raise TypeError(f"`known`: expected None, a bool tensor or a pair of them, got {type(known).__name__}")
    if tuple(known.shape) != tuple(shape):
        raise ValueError(f"`known`: expected shape {tuple(shape)} (one entry per pair and attribute), "
                         f"got {tuple(known.shape)}")
    return as_bool_mask(known, "known")


def attribute_prior_terms(
    shares: torch.Tensor, exclusive: torch.Tensor, known: KnownMask = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three unweighted terms of the attribute prior, per pair.

    * group ``ReLU(r - sum_k e_k p_k)``: the exclusive attributes together take at least ``r``;
    * floor ``sum_k e_k ReLU(t - p_k)``: each exclusive attribute takes at least ``t``;
    * cap ``sum_k (1 - e_k) ReLU(p_k - t)``: each common attribute takes at most ``t``;

    with ``r, t`` from :func:`prior_thresholds`.

    **Unknown labels.** With ``known``, an attribute unknown in either image of a pair is left out of
    that pair's prior: it is neither exclusive nor common (no floor, no cap, not in the group), ``N``
    counts the known exclusive attributes and ``M`` the known attributes of the pair, and the shares
    ``p_k`` are renormalised over the known attributes (``p_k / sum_{j known} p_j``), so that the
    thresholds ``r, t`` and the shares refer to the same attributes. With every label known this is
    the prior without ``known`` (up to rounding); a pair with no known attribute contributes 0.

    Args:
        shares: ``(P,M)`` shares ``p_k = d_k / sum_j d_j`` of each pair (rows sum to 1).
        exclusive: ``(P,M)`` bool (or 0/1), ``True`` where the two persons differ in the attribute.
        known: Optional known-mask: ``(P,M)`` bool, ``True`` where the attribute is known in both
            images, or a tuple ``(known_a, known_b)`` of the two images' ``(P,M)`` masks
            (see :func:`pair_known`). ``None``: every label is known.

    Returns:
        ``(group, floor, cap)``, each ``(P,)``, non-negative.

    Raises:
        ValueError: shapes differ or are not 2-D; ``exclusive`` or ``known`` is not binary.

    Examples:
        >>> import torch
        >>> g, f, c = attribute_prior_terms(torch.tensor([[0.7, 0.1, 0.1, 0.1]]),
        ...                                 torch.tensor([[True, False, False, False]]))
        >>> float(g), float(f), float(c)
        (0.0, 0.0, 0.0)
        >>> known = torch.tensor([[False, True, True, True]])  # the exclusive label is unknown
        >>> [round(float(v), 4) for v in attribute_prior_terms(torch.tensor([[0.7, 0.1, 0.1, 0.1]]),
        ...                                                  torch.tensor([[True, False, False, False]]),
        ...                                                  known)]
        [0.0, 0.0, 0.0]
    """
    exclusive = _check_shares(shares, exclusive)
    mask = pair_known(known, shares.shape)
    if mask is None:
        e = exclusive.to(shares.dtype)
        r, t = prior_thresholds(exclusive.sum(dim=1), shares.shape[1])
        r, t = r.to(shares.dtype), t.to(shares.dtype)
        group = F.relu(r - (e * shares).sum(dim=1))
        floor = (e * F.relu(t[:, None] - shares)).sum(dim=1)
        cap = ((1 - e) * F.relu(shares - t[:, None])).sum(dim=1)
        return group, floor, cap
    mask = mask.to(shares.device)
    k = mask.to(shares.dtype)
    e = (exclusive & mask).to(shares.dtype)
    common = (~exclusive & mask).to(shares.dtype)
    p = shares * k
    p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
    r, t = prior_thresholds(e.sum(dim=1), mask.sum(dim=1))
    r, t = r.to(shares.dtype), t.to(shares.dtype)
    some = mask.any(dim=1)
    group = torch.where(some, F.relu(r - (e * p).sum(dim=1)), torch.zeros_like(r))
    floor = (e * F.relu(t[:, None] - p)).sum(dim=1)
    cap = (common * F.relu(p - t[:, None])).sum(dim=1)
    return group, floor, cap


def attribute_prior_loss(
    shares: torch.Tensor,
    exclusive: torch.Tensor,
    weights: tuple[float, float, float] = PRIOR_WEIGHTS,
    reduction: Literal["mean", "sum", "none"] = "mean",
    known: KnownMask = None,
) -> torch.Tensor:
    """Attribute prior ``2 L_group + 10 L_floor + 10 L_cap`` (AMD-SPEC section 4).

    Pairs without exclusive attributes (``N = 0``: the same identity) only get the cap, at ``2/M``; pairs
    where every attribute is exclusive (``N = M``) only get the group and floor terms.

    Args:
        shares: ``(P,M)`` shares of each pair (rows sum to 1).
        exclusive: ``(P,M)`` bool (or 0/1) exclusive-attribute indicator ``a_i XOR a_j``.
        weights: Weights of the group, floor and cap terms. Default: :data:`PRIOR_WEIGHTS`.
        reduction: ``"mean"`` or ``"sum"`` over pairs, or ``"none"`` for the ``(P,)`` per-pair values.
        known: Optional known-mask, ``(P,M)`` bool (``True`` where the attribute is known in both
            images) or a tuple ``(known_a, known_b)`` of the two images' masks: unknown entries are
            left out of the prior (see :func:`attribute_prior_terms`). The mean still runs over all
            ``P`` pairs; a pair without any known attribute contributes 0.

    Returns:
        A non-negative scalar (or ``(P,)``); zero when every constraint holds.

    Raises:
        ValueError: bad shapes, non-binary ``exclusive`` or an unknown ``reduction``.

    Examples:
        >>> import torch
        >>> shares = torch.tensor([[0.25, 0.25, 0.25, 0.25]])
        >>> float(attribute_prior_loss(shares, torch.zeros(1, 4, dtype=torch.bool)))  # cap 2/M = 0.5
        0.0
        >>> float(attribute_prior_loss(shares, torch.ones(1, 4), known=torch.zeros(1, 4, dtype=torch.bool)))
        0.0
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"`reduction`: expected 'mean', 'sum' or 'none', got {reduction!r}")
    group, floor, cap = attribute_prior_terms(shares, exclusive, known)
    loss = weights[0] * group + weights[1] * floor + weights[2] * cap
    if reduction == "none":
        return loss
    if loss.numel() == 0:
        return shares.sum() * 0.0
    return loss.mean() if reduction == "mean" else loss.sum()


def _masked_mean(values: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the selected entries (0 when none is)."""
    return (values * select).sum() / select.sum().clamp_min(1)


def concentration_loss(shares: torch.Tensor, differs: torch.Tensor, part: float,
                       valid: torch.Tensor | None = None) -> torch.Tensor:
    """``ReLU(part * sum_k p_k - sum_{k differs} p_k)``, the mean over the pairs with a differing attribute.

    The attributes whose labels differ should carry at least ``part`` of what the attributes carry.

    Args:
        shares: ``(P,M)`` shares ``p_k`` (of the distance; they need not sum to 1).
        differs: ``(P,M)`` bool, where the pair's labels differ (and are known).
        part: The part asked, in ``[0, 1]``.
        valid: Optional ``(P,)`` bool: the pairs that count.

    Examples:
        >>> import torch
        >>> p = torch.tensor([[0.3, 0.3], [0.5, 0.5]])
        >>> round(float(concentration_loss(p, torch.tensor([[True, False], [False, False]]), 0.6)), 4)  # 0.36 - 0.3
        0.06
    """
    some = differs.any(dim=-1) if valid is None else differs.any(dim=-1) & valid
    short = F.relu(part * shares.sum(dim=-1) - (shares * differs).sum(dim=-1))
    return _masked_mean(short, some)


def agreeing_pairs_cap_loss(shares: torch.Tensor, differs: torch.Tensor, cap: float,
                            valid: torch.Tensor | None = None) -> torch.Tensor:
    """``ReLU(sum_k p_k - cap)``, the mean over the pairs whose labels all agree (two photos of one
    person, mostly): there the attributes together may carry at most ``cap`` of the distance.

    Examples:
        >>> import torch
        >>> p = torch.tensor([[0.3, 0.3], [0.5, 0.5]])
        >>> round(float(agreeing_pairs_cap_loss(p, torch.tensor([[False, False], [True, False]]), 0.25)), 4)
        0.35
    """
    agree = ~differs.any(dim=-1) if valid is None else ~differs.any(dim=-1) & valid
    return _masked_mean(F.relu(shares.sum(dim=-1) - cap), agree)
