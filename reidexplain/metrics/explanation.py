"""Explanation metrics of AMD (paper Table 1, AMD-SPEC section 6), as pure functions.

* :func:`x_map_exclusive` (X-mAP_e): rank the ``M`` attributes of a pair by share, descending; the
  relevant ones are those in which the two persons differ; average precision, mean over pairs with at
  least one exclusive attribute.
* :func:`x_map_common` (X-mAP_c): rank by share, ascending; the relevant ones are the common attributes;
  mean over pairs with at least one common attribute. For a pair without exclusive attributes, a common
  attribute whose share exceeds ``2/M`` counts as not relevant.
* :func:`adre` (average distance reconstruction error): ``mean |d - d_hat| / d``.

All three return percentages. Each takes an optional ``valid`` mask so that pairs of an image with
itself can be left out, and ``reduction="none"`` gives per-pair values (``NaN`` where a pair does not
count) so that large query x gallery sets can be scored in chunks. The two X-mAPs also take an
optional ``known`` mask ``(..., M)`` (``True`` where the attribute's label is known in both images of
the pair): an unknown entry is neither relevant nor irrelevant, it is left out of the ranking.

Examples:
    >>> import torch
    >>> shares = torch.tensor([[0.6, 0.3, 0.1]])
    >>> exclusive = torch.tensor([[True, False, False]])
    >>> float(x_map_exclusive(shares, exclusive)), float(x_map_common(shares, exclusive))
    (100.0, 100.0)
    >>> round(float(adre(torch.tensor([2.0]), torch.tensor([1.9]))), 2)
    5.0
"""

from __future__ import annotations

from typing import Literal

import torch

from .._checks import as_bool_mask

__all__ = ["average_precision", "x_map_exclusive", "x_map_common", "adre"]

Reduction = Literal["mean", "none"]


def _check(shares: torch.Tensor, exclusive: torch.Tensor, valid: torch.Tensor | None,
           known: torch.Tensor | None = None) -> tuple:
    if not isinstance(shares, torch.Tensor):
        raise TypeError(f"`shares`: expected a torch.Tensor, got {type(shares).__name__}")
    if not isinstance(exclusive, torch.Tensor):
        raise TypeError(f"`exclusive`: expected a torch.Tensor, got {type(exclusive).__name__}")
    if shares.dim() < 1 or shares.shape[-1] < 1:
        raise ValueError(f"`shares`: expected shape (..., M) with M >= 1, got {tuple(shares.shape)}")
    if exclusive.shape != shares.shape:
        raise ValueError(
            f"`exclusive`: expected the shape of `shares` {tuple(shares.shape)}, got {tuple(exclusive.shape)}"
        )
    exclusive = as_bool_mask(exclusive, "exclusive")
    valid = _check_valid(valid, shares.shape[:-1])
    if known is not None:
        if not isinstance(known, torch.Tensor) or known.shape != shares.shape:
            got = tuple(known.shape) if isinstance(known, torch.Tensor) else type(known).__name__
            raise ValueError(f"`known`: expected a bool tensor of the shape of `shares` {tuple(shares.shape)}, "
                             f"got {got}")
        known = as_bool_mask(known, "known").to(exclusive.device)
    return shares.float(), exclusive, valid, known


def _check_valid(valid: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    if valid is None:
        return None
    if not isinstance(valid, torch.Tensor) or valid.shape != shape:
        got = tuple(valid.shape) if isinstance(valid, torch.Tensor) else type(valid).__name__
        raise ValueError(f"`valid`: expected a bool tensor of shape {tuple(shape)}, got {got}")
    return valid.bool()


def _reduce(values: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    if reduction == "none":
        return values
    if reduction != "mean":
        raise ValueError(f"`reduction`: expected 'mean' or 'none', got {reduction!r}")
    counted = ~torch.isnan(values)
    if not counted.any():
        return values.new_tensor(float("nan"))
    return values[counted].mean()


def average_precision(scores: torch.Tensor, relevant: torch.Tensor,
                      known: torch.Tensor | None = None) -> torch.Tensor:
    """Average precision of ranking the last axis by ``scores``, descending.

    Ties are broken by position (stable sort), so results are deterministic. Items outside ``known``
    are left out of the ranking (neither relevant nor irrelevant).

    Args:
        scores: ``(..., M)`` ranking scores.
        relevant: ``(..., M)`` bool, the relevant items.
        known: Optional ``(..., M)`` bool, the items that take part in the ranking.

    Returns:
        ``(...)`` AP in ``[0, 1]``; ``NaN`` where no (known) item is relevant.

    Examples:
        >>> import torch
        >>> ap = average_precision(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([True, False, True]))
        >>> round(float(ap), 4)
        0.8333
        >>> float(average_precision(torch.tensor([0.9, 0.8, 0.1]), torch.tensor([True, False, True]),
        ...                         known=torch.tensor([True, False, True])))
        1.0
    """
    order = torch.argsort(scores, dim=-1, descending=True, stable=True)
    if known is not None:
        relevant = relevant & known
        # Unknown items go last (a second stable sort keeps the score order within each part), where
        # they cannot lower the precision at any relevant item.
        unknown_sorted = (~known).gather(-1, order).to(torch.uint8)
        order = order.gather(-1, torch.argsort(unknown_sorted, dim=-1, stable=True))
    rel = relevant.gather(-1, order).float()
    hits = rel.cumsum(dim=-1)
    ranks = torch.arange(1, rel.shape[-1] + 1, device=rel.device, dtype=rel.dtype)
    num_relevant = rel.sum(dim=-1)
    ap = (hits / ranks * rel).sum(dim=-1) / num_relevant.clamp_min(1)
    return torch.where(num_relevant > 0, ap, torch.full_like(ap, float("nan")))


def x_map_exclusive(
    shares: torch.Tensor,
    exclusive: torch.Tensor,
    valid: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """X-mAP_e in percent: do the exclusive attributes get the largest shares?

    Args:
        shares: ``(..., M)`` attribute shares (or contributions: only the order matters).
        exclusive: ``(..., M)`` bool, ``True`` where the two persons' labels differ.
        valid: Optional ``(...)`` bool mask of the pairs to score (e.g. not an image with itself).
        reduction: ``"mean"`` (a scalar) or ``"none"`` (per pair, ``NaN`` for pairs that do not count:
            invalid or without known exclusive attributes).
        known: Optional ``(..., M)`` bool, ``True`` where the attribute is known in both images; the
            other entries are left out of the ranking. ``None``: every label is known.

    Returns:
        The score in ``[0, 100]`` (``NaN`` if no pair counts).

    Raises:
        TypeError: inputs are not tensors.
        ValueError: shapes differ, ``exclusive`` is not binary, or an unknown ``reduction``.

    Examples:
        >>> import torch
        >>> score = x_map_exclusive(torch.tensor([[0.1, 0.7, 0.2]]), torch.tensor([[True, True, False]]))
        >>> round(float(score), 2)
        83.33
        >>> float(x_map_exclusive(torch.tensor([[0.1, 0.7, 0.2]]), torch.tensor([[True, True, False]]),
        ...                       known=torch.tensor([[False, True, True]])))
        100.0
    """
    shares, exclusive, valid, known = _check(shares, exclusive, valid, known)
    ap = average_precision(shares, exclusive, known) * 100.0
    if valid is not None:
        ap = torch.where(valid, ap, torch.full_like(ap, float("nan")))
    return _reduce(ap, reduction)


def x_map_common(
    shares: torch.Tensor,
    exclusive: torch.Tensor,
    valid: torch.Tensor | None = None,
    reduction: Reduction = "mean",
    known: torch.Tensor | None = None,
) -> torch.Tensor:
    """X-mAP_c in percent: do the common attributes get the smallest shares?

    For a pair without exclusive attributes, a common attribute whose share exceeds ``2/M`` (twice its
    fair share) counts as not relevant.

    Args:
        shares: ``(..., M)`` attribute shares (rows summing to 1).
        exclusive: ``(..., M)`` bool, ``True`` where the two persons' labels differ.
        valid: Optional ``(...)`` bool mask of the pairs to score.
        reduction: ``"mean"`` or ``"none"`` (per pair, ``NaN`` for pairs that do not count: invalid or
            without known common attributes).
        known: Optional ``(..., M)`` bool, ``True`` where the attribute is known in both images. Unknown
            entries are left out of the ranking; "without exclusive attributes" and the ``2/M`` test
            then refer to the known attributes (``M`` known ones, shares renormalised over them).

    Returns:
        The score in ``[0, 100]`` (``NaN`` if no pair counts).

    Raises:
        TypeError: inputs are not tensors.
        ValueError: shapes differ, ``exclusive`` is not binary, or an unknown ``reduction``.

    Examples:
        >>> import torch
        >>> float(x_map_common(torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([[False, False, False]])))
        100.0
        >>> float(x_map_common(torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([[False, False, False]]),
        ...                    known=torch.tensor([[False, False, False]])))
        nan
    """
    shares, exclusive, valid, known = _check(shares, exclusive, valid, known)
    if known is None:
        m = shares.shape[-1]
        common = ~exclusive
        same_labels = ~exclusive.any(dim=-1, keepdim=True)
        relevant = common & ~(same_labels & (shares > 2.0 / m))
    else:
        common = ~exclusive & known
        same_labels = ~(exclusive & known).any(dim=-1, keepdim=True)
        m_known = known.sum(dim=-1, keepdim=True).to(shares.dtype)
        known_total = (shares * known).sum(dim=-1, keepdim=True)
        # share / known_total > 2 / m_known, without dividing.
        relevant = common & ~(same_labels & (shares * m_known > 2.0 * known_total))
    ap = average_precision(-shares, relevant, known) * 100.0
    # A pair without common attributes does not count even if nothing is relevant for another reason.
    ap = torch.where(common.any(dim=-1), ap, torch.full_like(ap, float("nan")))
    if valid is not None:
        ap = torch.where(valid, ap, torch.full_like(ap, float("nan")))
    return _reduce(ap, reduction)


def adre(
    distance: torch.Tensor,
    reconstructed: torch.Tensor,
    valid: torch.Tensor | None = None,
    reduction: Reduction = "mean",
) -> torch.Tensor:
    """Average distance reconstruction error ``mean |d - d_hat| / d`` in percent.

    Pairs with ``d <= 0`` (an image with itself) do not count.

    Args:
        distance: ``(...)`` the target model's distances.
        reconstructed: ``(...)`` the interpreter's distances ``d_hat``.
        valid: Optional ``(...)`` bool mask of the pairs to score.
        reduction: ``"mean"`` or ``"none"`` (per pair, ``NaN`` where a pair does not count).

    Returns:
        The error in percent (lower is better).

    Raises:
        TypeError: inputs are not tensors.
        ValueError: shapes differ or an unknown ``reduction``.

    Examples:
        >>> import torch
        >>> round(float(adre(torch.tensor([1.0, 2.0]), torch.tensor([1.1, 2.0]))), 2)
        5.0
    """
    for name, t in (("distance", distance), ("reconstructed", reconstructed)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"`{name}`: expected a torch.Tensor, got {type(t).__name__}")
    if distance.shape != reconstructed.shape:
        raise ValueError(
            f"`reconstructed`: expected the shape of `distance` {tuple(distance.shape)}, "
            f"got {tuple(reconstructed.shape)}"
        )
    valid = _check_valid(valid, distance.shape)
    d = distance.float()
    err = (d - reconstructed.float()).abs() / d.clamp_min(1e-30) * 100.0
    keep = d > 0 if valid is None else (d > 0) & valid
    err = torch.where(keep, err, torch.full_like(err, float("nan")))
    return _reduce(err, reduction)


x_map_exclusive.higher_is_better = True  # type: ignore[attr-defined]
x_map_common.higher_is_better = True  # type: ignore[attr-defined]
adre.higher_is_better = False  # type: ignore[attr-defined]
