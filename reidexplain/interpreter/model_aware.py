"""Explanations true to the model, not only to the labels: the terms of AMD+ (``recipe="amd+"``).

The paper's attribute prior pushes every attribute in which two persons differ to a minimum share of
the distance, whether or not the target model looks at it, and says nothing about where a map may look.
AMD+ adds these levers, each trained only from what a real user has (images, labels, the target):

* :func:`attribute_usage`: how much the target's distance grows when attribute ``k`` differs, with the
  other attributes held fixed (a least-squares fit of the pair distances on the exclusive-attribute
  indicators), scaled to ``w_k`` in ``[0, 1]``. :func:`model_aware_prior_loss` then treats attribute
  ``k`` as exclusive only to the degree ``w_k``: an attribute the model ignores is treated as common.
* :func:`probe_loss`: a linear classifier per attribute must read attribute ``k`` from the component
  embedding ``e_k``, so the map ``A_k`` has to keep the pixels that carry it.
* :func:`recognition_loss`: with maps shared per one-hot group (``shared_maps``, see
  :class:`~reidexplain.interpreter.AttributeDecomposition`), the labels must be recognised from each
  cell's own pixels pooled where a region's map looks, so the maps point at the attributes.
* :func:`map_entropy_loss`: the normalised entropy of each map, so that maps are local.

Which of them ``recipe="amd+"`` switches on is set by the fields of
:class:`~reidexplain.interpreter.recipes.AMDPlus`.

Examples:
    >>> import torch
    >>> shares = torch.tensor([[0.4, 0.04, 0.28, 0.28]]); exclusive = torch.tensor([[True, True, False, False]])
    >>> usage = torch.tensor([1.0, 0.0, 1.0, 1.0])  # the model ignores attribute 1: no floor for it
    >>> round(float(model_aware_prior_loss(shares, exclusive, usage)), 3)
    0.2
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..distance import pair_distance
from .losses import PRIOR_WEIGHTS, KnownMask, pair_known, prior_thresholds

__all__ = ["attribute_usage", "model_aware_prior_loss", "AttributeProbes", "probe_loss", "recognition_loss",
           "map_entropy_loss"]


def attribute_usage(embeddings: torch.Tensor, attributes: torch.Tensor, metric: str = "euclidean",
                    pids: torch.Tensor | None = None, max_pairs: int = 200_000, seed: int = 0,
                    known: torch.Tensor | None = None) -> torch.Tensor:
    """Model-aware weights ``w_k``: the distance the target adds when attribute ``k`` differs.

    Over pairs of different people (all pairs when ``pids`` is ``None``), the target distance is fitted
    by least squares as ``d_ij ~ b + sum_k beta_k e_ijk`` with ``e_ij = a_i XOR a_j``; holding the other
    attributes fixed separates an attribute the model uses from one that merely co-occurs with it.
    ``w_k = clip(beta_k / max_j beta_j, 0, 1)``.

    Args:
        embeddings: ``(N,D)`` target embeddings of labelled images.
        attributes: ``(N,M)`` 0/1 labels.
        metric: The target's distance.
        pids: Optional ``(N,)`` identities: same-person pairs are left out.
        max_pairs: At most this many pairs (drawn with ``seed``) enter the fit.
        seed: Seed of that draw.
        known: Optional ``(N,M)`` bool, ``False`` where a label is unknown: a pair's entry that is unknown
            in either image enters the fit at its attribute's mean over the known entries (it then
            explains nothing of the distance).

    Returns:
        ``(M,)`` float weights in ``[0, 1]`` (all ones when no attribute adds distance).

    Raises:
        ValueError: shapes disagree or fewer than two images.

    Examples:
        >>> import torch
        >>> a = torch.randint(0, 2, (40, 3), generator=torch.Generator().manual_seed(0)).float()
        >>> emb = torch.cat([4 * a[:, :1], a[:, 1:2], torch.zeros(40, 1)], dim=1)  # ignores attribute 2
        >>> attribute_usage(emb, a).round(decimals=1)
        tensor([1.0000, 0.2000, 0.0000])
    """
    if embeddings.dim() != 2 or attributes.dim() != 2 or embeddings.shape[0] != attributes.shape[0]:
        raise ValueError(f"`embeddings`/`attributes`: expected (N,D) and (N,M) with the same N, got "
                         f"{tuple(embeddings.shape)} and {tuple(attributes.shape)}")
    n, m = attributes.shape
    if n < 2:
        raise ValueError(f"`embeddings`: expected at least two images, got {n}")
    i, j = torch.triu_indices(n, n, offset=1)
    if pids is not None:
        keep = pids.reshape(-1)[i] != pids.reshape(-1)[j]
        if keep.any():
            i, j = i[keep], j[keep]
    if i.numel() > max_pairs:
        pick = torch.randperm(i.numel(), generator=torch.Generator().manual_seed(seed))[:max_pairs]
        i, j = i[pick], j[pick]
    emb = embeddings.detach().double()
    d = pair_distance(emb[i], emb[j], metric)
    exclusive = (attributes[i] != attributes[j]).double()
    if known is not None:
        pair_known = known[i] & known[j]
        counts = pair_known.sum(0).clamp_min(1)
        means = (exclusive * pair_known).sum(0) / counts
        exclusive = torch.where(pair_known, exclusive, means.expand_as(exclusive))
    design = torch.cat([torch.ones(exclusive.shape[0], 1, dtype=torch.float64), exclusive], dim=1)
    # A small ridge keeps attributes that never differ (a constant column) from making the fit singular.
    gram = design.T @ design + 1e-6 * design.shape[0] * torch.eye(m + 1, dtype=torch.float64)
    beta = torch.linalg.solve(gram, design.T @ d)[1:]
    top = beta.max()
    if not top > 0:
        return torch.ones(m)
    return (beta / top).clamp(0.0, 1.0).float()


def model_aware_prior_loss(shares: torch.Tensor, exclusive: torch.Tensor, usage: torch.Tensor,
                           weights: tuple[float, float, float] = PRIOR_WEIGHTS,
                           known: KnownMask = None) -> torch.Tensor:
    """The attribute prior with attribute ``k`` counted as exclusive to the degree ``w_k`` (mean over pairs).

    With soft exclusivity ``e'_k = e_k w_k`` and ``N' = sum_k e'_k``: group ``ReLU(r' - sum e'_k p_k)``,
    floor ``sum e'_k ReLU(t' - p_k)``, cap ``sum (1 - e'_k) ReLU(p_k - t')`` with ``(r', t')`` from
    :func:`~reidexplain.interpreter.losses.prior_thresholds` at ``N'``. With ``w = 1`` this is exactly
    :func:`~reidexplain.interpreter.losses.attribute_prior_loss`; an ignored attribute (``w_k = 0``) is
    capped like a common one instead of being given a floor.

    Args:
        shares: ``(P,M)`` shares of each pair.
        exclusive: ``(P,M)`` bool exclusive indicators.
        usage: ``(M,)`` weights in ``[0, 1]`` (:func:`attribute_usage`).
        weights: Weights of the group, floor and cap terms.
        known: Optional known-mask of the pairs (``(P,M)`` bool or a tuple of the two images' masks):
            an attribute unknown in either image is left out of that pair's prior, ``M`` counts the
            known attributes and the shares are renormalised over them, as in
            :func:`~reidexplain.interpreter.losses.attribute_prior_terms`.

    Returns:
        A non-negative scalar.

    Raises:
        ValueError: ``usage`` is not ``(M,)`` with values in ``[0, 1]``, or a bad ``known``.

    Examples:
        >>> import torch
        >>> shares = torch.tensor([[0.7, 0.1, 0.1, 0.1]])
        >>> float(model_aware_prior_loss(shares, torch.tensor([[True, False, False, False]]), torch.ones(4)))
        0.0
    """
    m = shares.shape[-1]
    if usage.shape != (m,):
        raise ValueError(f"`usage`: expected shape ({m},), got {tuple(usage.shape)}")
    if usage.numel() and (usage.min() < 0 or usage.max() > 1):
        raise ValueError(f"`usage`: expected values in [0, 1], got [{float(usage.min())}, {float(usage.max())}]")
    mask = pair_known(known, shares.shape)
    if mask is None:
        e = exclusive.to(shares.dtype) * usage.to(shares)
        r, t = prior_thresholds(e.sum(dim=1).detach().clamp(0, m), m)
        r, t = r.to(shares), t.to(shares)
        group = F.relu(r - (e * shares).sum(dim=1))
        floor = (e * F.relu(t[:, None] - shares)).sum(dim=1)
        cap = ((1 - e) * F.relu(shares - t[:, None])).sum(dim=1)
    else:
        k = mask.to(shares.device).to(shares.dtype)
        p = shares * k
        p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-12)
        e = exclusive.to(shares.dtype) * k * usage.to(shares)
        m_known = k.sum(dim=1)
        r, t = prior_thresholds(torch.minimum(e.sum(dim=1).detach(), m_known), m_known)
        r, t = r.to(shares), t.to(shares)
        group = F.relu(r - (e * p).sum(dim=1))
        floor = (e * F.relu(t[:, None] - p)).sum(dim=1)
        cap = (k * (1 - e) * F.relu(p - t[:, None])).sum(dim=1)
    loss = weights[0] * group + weights[1] * floor + weights[2] * cap
    return loss.mean() if loss.numel() else shares.sum() * 0.0


class AttributeProbes(nn.Module):
    """One linear classifier per attribute on its (normalised) component embedding ``e_k``.

    Used only while training AMD+; not part of the saved interpreter.

    Args:
        num_attributes: ``M``.
        dim: Width ``D'`` of the component embeddings.
        scale: Logit scale of the cosine classifier.

    Examples:
        >>> import torch
        >>> AttributeProbes(3, 8)(torch.rand(2, 3, 8)).shape
        torch.Size([2, 3])
    """

    def __init__(self, num_attributes: int, dim: int, scale: float = 10.0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(num_attributes, dim) * dim ** -0.5)
        self.bias = nn.Parameter(torch.zeros(num_attributes))
        self.scale = float(scale)

    def forward(self, components: torch.Tensor) -> torch.Tensor:
        """``(B,M,D')`` component embeddings -> ``(B,M)`` logits."""
        # Normalised: the target's embeddings may be on any scale (BN-neck ~10..40, cosine ~1).
        unit = F.normalize(components, dim=-1)
        return self.scale * torch.einsum("bmd,md->bm", unit, F.normalize(self.weight, dim=-1)) + self.bias


def probe_loss(logits: torch.Tensor, attributes: torch.Tensor, known: torch.Tensor | None = None) -> torch.Tensor:
    """Class-balanced binary cross-entropy of the per-attribute probes (mean over attributes).

    Each attribute's positives and negatives weigh half each, so a rare attribute cannot be ignored by
    predicting the majority class.

    Args:
        logits: ``(B,M)`` probe logits.
        attributes: ``(B,M)`` 0/1 labels.
        known: Optional ``(B,M)`` bool, ``False`` where a label is unknown: left out (weight 0).

    Returns:
        A non-negative scalar.

    Examples:
        >>> import torch
        >>> y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> float(probe_loss(20 * (2 * y - 1), y)) < 1e-6
        True
    """
    y = attributes.to(logits)
    per = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    counted = torch.ones_like(y) if known is None else known.to(logits)
    pos = (y * counted).sum(dim=0)
    neg = counted.sum(dim=0) - pos
    w = torch.where(y > 0, 0.5 / pos.clamp_min(1), 0.5 / neg.clamp_min(1)) * counted
    # An attribute with one class only in the batch carries half the weight (its other half is absent).
    return (w * per).sum(dim=0).mean()


def recognition_loss(logits: torch.Tensor, attributes: torch.Tensor,
                     one_hot: Sequence[Sequence[int]] = (), known: torch.Tensor | None = None) -> torch.Tensor:
    """Attribute recognition from the region-pooled features of shared maps (AMD+).

    Members of a one-hot group (every person has exactly one upper colour) are recognised together with
    a class-balanced cross-entropy over the group, which every image trains; the other attributes with
    the class-balanced :func:`probe_loss`. Images whose labels break the one-hot rule skip that group.

    Args:
        logits: ``(B,M)`` recognition logits.
        attributes: ``(B,M)`` 0/1 labels.
        one_hot: Attribute indices of each one-hot group.
        known: Optional ``(B,M)`` bool, ``False`` where a label is unknown: an image skips a group with
            an unknown member, and unknown labels of the other attributes are left out.

    Returns:
        A non-negative scalar: the mean over the groups and the other attributes.

    Examples:
        >>> import torch
        >>> y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
        >>> float(recognition_loss(30 * (2 * y - 1), y, one_hot=[[0, 1]])) < 1e-6
        True
    """
    y = attributes.to(logits)
    grouped = sorted({k for group in one_hot for k in group})
    terms = []
    for group in one_hot:
        idx = list(group)
        members = y[:, idx]
        valid = members.sum(dim=1) == 1
        if known is not None:
            valid = valid & known[:, idx].all(dim=1)
        if valid.any():
            target = members[valid].argmax(dim=1)
            # Class-balanced: each colour present in the batch weighs the same, so that a frequent one
            # (black) cannot be guessed from evidence that merely co-occurs with it (dark hair).
            counts = torch.bincount(target, minlength=len(idx)).to(logits)
            weight = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
            per = F.cross_entropy(logits[valid][:, idx], target, reduction="none")
            terms.append((per * weight[target]).sum() / weight[target].sum())
    rest = [k for k in range(y.shape[1]) if k not in grouped]
    if rest:
        terms.append(probe_loss(logits[:, rest], y[:, rest], None if known is None else known[:, rest])
                     * len(rest))
    count = len(one_hot) + len(rest)
    if not terms:
        return logits.sum() * 0.0
    return torch.stack(terms).sum() / count


def map_entropy_loss(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean normalised spatial entropy of the maps: 1 for a flat map, 0 for a single peak.

    Args:
        maps: ``(B,M,h,w)`` non-negative attribute maps.
        eps: Guards ``log 0``.

    Returns:
        A scalar in ``[0, 1]``.

    Examples:
        >>> import torch
        >>> round(float(map_entropy_loss(torch.ones(1, 2, 4, 2))), 4)
        1.0
    """
    flat = maps.flatten(2)
    cells = flat.shape[-1]
    if cells < 2:
        return maps.sum() * 0.0
    q = flat / flat.sum(dim=-1, keepdim=True).clamp_min(eps)
    entropy = -(q * (q + eps).log()).sum(dim=-1)
    return (entropy / torch.log(torch.tensor(float(cells)))).mean()
