"""Attribute subspaces: the target's own distance split exactly along directions of its embedding space.

An orthonormal basis ``q_1 .. q_r`` of the embedding space (by default one direction per attribute,
along which the embedding moves when that attribute changes, completed by the leading principal
directions of the training embeddings, then rotated by a learned orthogonal matrix) and a soft
assignment ``s_jk >= 0``, ``sum_k s_jk = 1`` of each direction ``j`` to the ``M`` attributes and the rest
give one symmetric, positive semi-definite operator per attribute, ``P_k = sum_j s_jk q_j q_j^T``, and
``sum_k P_k + P_rest = I`` (the rest also takes the ``D - r`` directions outside the basis). For a pair
with ``delta = e_a - e_b`` and ``d = |delta|``,

.. math:: d = \\sum_k \\frac{\\delta^T P_k \\delta}{d} + \\frac{\\delta^T P_{rest} \\delta}{d}

exactly, for any model, with every term ``>= 0``. Those are the linear rule's contributions
(:func:`~reidexplain.decomposition.linear_pair_decomposition`) of the parts ``u_k = P_k e``: the rest of
the library (pairs, matrices, ranked lists) needs nothing else. With the cosine distance the same holds
for the normalised embeddings (``1 - cos = |delta^|^2 / 2``).

The basis and the assignment are fitted once, on the target's embeddings of the training images, to
the attribute prior on the shares ``c_k / d``: the attributes whose labels differ take their part of
the distance along their directions, and what no attribute accounts for (pose, light, camera) stays in
the rest. They decide *how much*; *where* each attribute is in the image is the job of the maps
(:class:`~reidexplain.interpreter.recipes.SubspaceAMD`).

Examples:
    >>> import torch
    >>> spaces = AttributeSubspaces(dim=6, num_attributes=2, rank=4)
    >>> e = torch.randn(3, 6)
    >>> parts, rest = spaces(e)
    >>> parts.shape, bool(torch.allclose(parts.sum(1) + rest, e, atol=1e-6))
    (torch.Size([3, 2, 6]), True)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._progress import progress_bar
from .losses import agreeing_pairs_cap_loss, attribute_prior_loss, concentration_loss
from .model_aware import model_aware_prior_loss

__all__ = ["AttributeSubspaces", "fit_subspaces", "attribute_directions", "direction_usage", "USAGE_MEASURES", "DEFAULT_RANK", "SUBSPACE_INITS"]

DEFAULT_RANK = 256
"""Directions the basis spans at most (the leading principal directions of the training embeddings)."""
SUBSPACE_INITS = ("regression", "principal")
"""Where :func:`fit_subspaces` starts: ``"regression"``, each attribute on its own direction of
:func:`attribute_directions` (the rest of the basis: principal directions); ``"principal"``, the
leading principal directions, each shared equally by every part."""
USAGE_MEASURES = ("contrast", "directions")
"""How the model-aware prior of :class:`~reidexplain.interpreter.recipes.SubspaceAMD` measures each
attribute's use: ``"contrast"``, :func:`~reidexplain.interpreter.model_aware.attribute_usage`;
``"directions"``, :func:`direction_usage`."""
INIT_LOGIT = 3.0
"""Initial assignment logit of an attribute on its own direction with ``init="regression"`` (the other
``M`` parts at 0: with 26 attributes, it starts with 44 % of that direction)."""


class AttributeSubspaces(nn.Module):
    """The fitted basis ``(r,D)`` and assignment ``(r,M+1)`` (buffers: nothing here is trained by backprop).

    Starts with the first ``r`` standard directions, each shared equally by the ``M + 1`` parts, so that
    before :func:`fit_subspaces` every attribute gets ``1/(M+1)`` of the distance within that span.

    Args:
        dim: ``D``, the width of the embeddings.
        num_attributes: ``M``.
        rank: ``r <= D``; default :data:`DEFAULT_RANK` (or ``D`` if smaller).
    """

    def __init__(self, dim: int, num_attributes: int, rank: int | None = None) -> None:
        super().__init__()
        r = min(int(dim), DEFAULT_RANK if rank is None else int(rank))
        if r < 1:
            raise ValueError(f"rank: expected at least 1 direction, got {rank}")
        self.register_buffer("basis", torch.eye(r, int(dim)))
        self.register_buffer("assignment", torch.full((r, num_attributes + 1), 1.0 / (num_attributes + 1)))

    @property
    def num_attributes(self) -> int:
        """``M``."""
        return self.assignment.shape[1] - 1

    def forward(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B,D)`` embeddings -> ``(B,M,D)`` attribute parts ``P_k e`` and the ``(B,D)`` rest ``e - sum``."""
        coords = embeddings @ self.basis.T.to(embeddings)  # (B,r)
        weights = self.assignment[:, :-1].to(embeddings)  # (r,M)
        parts = torch.einsum("br,rm,rd->bmd", coords, weights, self.basis.to(embeddings))
        return parts, embeddings - parts.sum(dim=1)

    def shares(self, delta: torch.Tensor) -> torch.Tensor:
        """``(P,M+1)`` parts ``delta^T P_k delta / |delta|^2`` of a difference (the last: the rest)."""
        coords = (delta @ self.basis.T.to(delta)).pow(2)
        total = delta.pow(2).sum(-1, keepdim=True).clamp_min(1e-24)
        attributes = coords @ self.assignment[:, :-1].to(delta)
        return torch.cat([attributes, total - attributes.sum(-1, keepdim=True)], dim=-1) / total


def attribute_directions(embeddings: torch.Tensor, attributes: torch.Tensor, pids: torch.Tensor | None = None,
                         known: torch.Tensor | None = None, ridge: float = 1e-3) -> torch.Tensor:
    """``(M,D)`` orthonormal directions, one per attribute, along which the embedding moves with it.

    The embeddings are fitted by ridge regression on the centred labels, ``e ~ mean + sum_k a_k w_k``
    (per identity when ``pids`` are given: the mean embedding and label of each person, which averages
    out pose, light and camera), so that ``w_k`` is the change of the embedding when attribute ``k``
    changes with the others held fixed. The rows returned are the orthonormal directions closest to the
    ``w_k`` (``U V^T`` of their singular value decomposition). An unknown label counts as the mean.

    Args:
        embeddings: ``(N,D)`` embeddings.
        attributes: ``(N,M)`` 0/1 labels, ``M <= D``.
        pids: Optional ``(N,)`` identities.
        known: Optional ``(N,M)`` bool, ``False`` where a label is unknown.
        ridge: Ridge penalty, relative to the mean variance of the labels (keeps the fit defined when
            labels are collinear, as the colours of a one-hot group are).

    Returns:
        ``(M,D)`` rows of unit norm, orthogonal to each other.

    Raises:
        ValueError: more attributes than embedding dimensions, or shapes that do not match.

    Examples:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> labels = torch.randint(0, 2, (200, 2), generator=g).float()
        >>> emb = labels @ torch.tensor([[3.0, 0, 0, 0], [0, 0, 2.0, 0]]) + 0.1 * torch.randn(200, 4, generator=g)
        >>> directions = attribute_directions(emb, labels)
        >>> directions.abs().argmax(dim=1).tolist()  # attribute 0 moves along axis 0, attribute 1 along 2
        [0, 2]
    """
    weights = _ridge_weights(embeddings, attributes, pids, known, ridge)
    u, _, vh = torch.linalg.svd(weights, full_matrices=False)
    return (u @ vh).float()


def direction_usage(embeddings: torch.Tensor, attributes: torch.Tensor, pids: torch.Tensor | None = None,
                    known: torch.Tensor | None = None, ridge: float = 1e-3) -> torch.Tensor:
    """``(M,)`` usage weights in ``[0, 1]``: how far the embedding moves with each attribute, relative to
    the attribute it moves with most (the norms of the ridge coefficients of
    :func:`attribute_directions`, over their maximum).

    For the model-aware prior of :class:`~reidexplain.interpreter.recipes.SubspaceAMD`
    (``usage_measure="directions"``). On the reference model these norms rank the attributes as the
    model's measured sensitivity does with Spearman 0.90 (against 0.58 for
    :func:`~reidexplain.interpreter.model_aware.attribute_usage`).

    Args:
        embeddings: ``(N,D)`` embeddings.
        attributes: ``(N,M)`` 0/1 labels, ``M <= D``.
        pids: Optional ``(N,)`` identities (per-person means, as :func:`attribute_directions`).
        known: Optional ``(N,M)`` bool, ``False`` where a label is unknown.
        ridge: Ridge penalty, relative to the mean variance of the labels.

    Raises:
        ValueError: as :func:`attribute_directions`.

    Examples:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> labels = torch.randint(0, 2, (200, 2), generator=g).float()
        >>> emb = labels @ torch.tensor([[3.0, 0, 0, 0], [0, 0, 1.0, 0]]) + 0.1 * torch.randn(200, 4, generator=g)
        >>> [round(w, 1) for w in direction_usage(emb, labels).tolist()]
        [1.0, 0.3]
    """
    norms = _ridge_weights(embeddings, attributes, pids, known, ridge).norm(dim=1)
    return (norms / norms.max().clamp_min(1e-12)).float()


def _ridge_weights(embeddings: torch.Tensor, attributes: torch.Tensor, pids: torch.Tensor | None,
                   known: torch.Tensor | None, ridge: float) -> torch.Tensor:
    """``(M,D)`` ridge coefficients ``w_k`` of the (per-person mean) embeddings on the centred labels."""
    emb = embeddings.detach().double().cpu()
    labels = attributes.detach().double().cpu()
    if emb.dim() != 2 or labels.dim() != 2 or labels.shape[0] != emb.shape[0]:
        raise ValueError(f"embeddings/attributes: expected (N,D) and (N,M), got {tuple(emb.shape)} and "
                         f"{tuple(labels.shape)}")
    m, dim = labels.shape[1], emb.shape[1]
    if m > dim:
        raise ValueError(f"attributes: {m} attributes need at least {m} embedding dimensions, got {dim}")
    if known is not None:
        mask = known.detach().bool().cpu()
        mean = (labels * mask).sum(0) / mask.sum(0).clamp_min(1)
        labels = labels.where(mask, mean.expand_as(labels))
    if pids is not None:
        _, inverse = torch.unique(pids.detach().cpu(), return_inverse=True)
        people = int(inverse.max()) + 1
        count = torch.zeros(people, dtype=torch.float64).index_add_(0, inverse, torch.ones_like(emb[:, 0]))
        emb = torch.zeros(people, dim, dtype=torch.float64).index_add_(0, inverse, emb) / count[:, None]
        labels = torch.zeros(people, m, dtype=torch.float64).index_add_(0, inverse, labels) / count[:, None]
    x = labels - labels.mean(0)
    y = emb - emb.mean(0)
    gram = x.T @ x
    scale = float(gram.diagonal().mean()) if m else 0.0
    weights = torch.linalg.solve(gram + ridge * max(scale, 1e-12) * torch.eye(m, dtype=torch.float64), x.T @ y)
    return weights


def _batches(n: int, pids: torch.Tensor | None, size: int, generator: torch.Generator):
    """Index batches: ``P x 4`` images of ``P`` identities when the pids are known, else ``size`` at random."""
    if pids is not None:
        ids, inverse = torch.unique(pids, return_inverse=True)
        members = [torch.nonzero(inverse == i)[:, 0] for i in range(len(ids))]
        members = [m for m in members if len(m) > 1]
    while True:
        if pids is not None and len(members) >= 2:
            pick = torch.randperm(len(members), generator=generator)[: max(2, size // 4)]
            yield torch.cat([members[int(i)][torch.randperm(len(members[int(i)]), generator=generator)[:4]]
                             for i in pick])
        else:
            yield torch.randperm(n, generator=generator)[:size]


def fit_subspaces(spaces: AttributeSubspaces, embeddings: torch.Tensor, attributes: torch.Tensor,
                  metric: str = "euclidean", pids: torch.Tensor | None = None, known: torch.Tensor | None = None,
                  usage: torch.Tensor | None = None, steps: int = 1500, lr: float = 1e-2, batch_size: int = 64,
                  prior_weight: float = 1.0, prior_weights: tuple[float, float, float] = (2.0, 1.0, 10.0),
                  concentration: float = 0.6, concentration_weight: float = 5.0,
                  same_cap: float = 0.25, same_weight: float = 2.0, init: str = "regression", seed: int = 0,
                  progress: bool = False) -> dict[str, float]:
    """Fit ``spaces`` (in place) to the target's embeddings of the training images.

    The basis starts (``init="regression"``) with each attribute on its own direction of
    :func:`attribute_directions`, completed by the leading principal directions of the embeddings
    outside those (``"principal"``: the leading principal directions alone, each shared equally). It is
    rotated by an orthogonal matrix learned together with the assignment (a softmax over the ``M + 1`` parts per direction),
    minimising over the pairs of each batch, with ``p_k = delta^T P_k delta / |delta|^2``:

    * the attribute prior (:func:`~reidexplain.interpreter.losses.attribute_prior_loss`, or the
      model-aware one with ``usage``) on ``p`` (the rest counts in the total);
    * ``concentration_weight * ReLU(concentration * sum_k p_k - sum_{k differs} p_k)`` over pairs whose
      labels differ: the attributes that differ carry that part of what the attributes carry;
    * ``same_weight * ReLU(sum_k p_k - same_cap)`` over pairs whose labels all agree (mostly two photos
      of one person): there the distance is pose, light and camera, the rest's.

    Args:
        spaces: The module to fit.
        embeddings: ``(N,D)`` target embeddings.
        attributes: ``(N,M)`` 0/1 labels.
        metric: ``"euclidean"`` or ``"cosine"`` (the embeddings are then normalised first).
        pids: ``(N,)`` identities: batches of 4 photos per person (else random batches).
        known: ``(N,M)`` bool, ``False`` where a label is unknown (left out of the pair's terms).
        usage: ``(M,)`` weights in ``[0, 1]`` for the model-aware prior; ``None``: the paper's prior.
        steps: Optimiser steps. On one thread of a 2-core machine busy with four other jobs, 1500 steps
            took 65 s on 1200 embeddings of width 128 (the reference model) and 208 s on 3000 of width
            2048 (a ResNet-50's; random embeddings, the basis of rank 256).
        lr: Adam's learning rate.
        batch_size: Images per batch.
        prior_weight: Weight of the attribute prior.
        prior_weights: Weights of its group, floor and cap terms. The paper's are ``(2, 10, 10)``; a
            floor of 1 lets the attributes the model moves most along take more than the others (on
            the reference model: attribute agreement 0.51 against 0.43, X-mAP_e 78.2 against 79.6).
        concentration: The part asked of the differing attributes.
        concentration_weight: Its weight (0: off).
        same_cap: The most the attributes may take on pairs whose labels all agree.
        same_weight: Its weight (0: off).
        init: Where the fit starts, one of :data:`SUBSPACE_INITS`. On the reference model (the default
            recipe, 3 fit seeds, ``benchmarks/bench_truthful.py``) ``"regression"`` gave X-mAP_e
            79.0 +- 0.2 against 78.1 +- 0.3 (90.1 against 88.3 on the attributes the model uses),
            X-mAP_c 96.9 against 96.3 and attribute agreement 0.58 +- 0.01 against 0.43 +- 0.02, at the
            same concentration (61.5 % against 61.1 %). It needs ``M`` below the rank (else
            ``"principal"`` is used).
        seed: Seed of the batches.
        progress: Show a progress bar.

    Returns:
        ``{"loss", "prior", "concentration", "same"}`` means over the last 100 steps.

    Raises:
        ValueError: fewer than 2 embeddings, shapes that do not match ``spaces``, or an unknown ``init``.
    """
    if init not in SUBSPACE_INITS:
        raise ValueError(f"init: expected one of {SUBSPACE_INITS}, got {init!r}")
    emb = embeddings.detach().float().cpu()
    if metric == "cosine":
        emb = F.normalize(emb, dim=-1)
    labels = attributes.detach().float().cpu()
    n, dim = emb.shape
    r, m = spaces.basis.shape[0], spaces.num_attributes
    if n < 2:
        raise ValueError(f"embeddings: at least 2 are needed to fit the subspaces, got {n}")
    if dim != spaces.basis.shape[1] or labels.shape != (n, m):
        raise ValueError(f"embeddings/attributes: expected (N,{spaces.basis.shape[1]}) and (N,{m}), got "
                         f"{tuple(emb.shape)} and {tuple(labels.shape)}")
    # The leading principal directions of the embeddings (the differences between images lie there).
    centred = emb - emb.mean(dim=0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    principal = vh[:r]
    if principal.shape[0] < r:  # fewer images than directions: complete the basis
        extra = torch.linalg.qr(torch.cat([principal, torch.eye(dim)[: r]]).T)[0].T
        principal = extra[:r]
    own = 0
    if init == "regression" and m < r:  # else the attributes' directions alone would fill the basis
        directions = attribute_directions(emb, labels, pids, known)
        outside = principal - (principal @ directions.T) @ directions
        principal = torch.cat([directions, torch.linalg.svd(outside, full_matrices=False)[2][: r - m]])
        own = m
    # Coordinates in the principal basis, once: each step then costs the same whatever D.
    coords = emb @ principal.T  # (N,r)
    rotation = nn.utils.parametrizations.orthogonal(nn.Linear(r, r, bias=False))
    with torch.no_grad():
        rotation.weight = torch.eye(r)
    logits = nn.Parameter(torch.zeros(r, m + 1))
    with torch.no_grad():
        logits[:own, :m] += INIT_LOGIT * torch.eye(own, m)
    optimizer = torch.optim.Adam([*rotation.parameters(), logits], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    batches = _batches(n, None if pids is None else pids.detach().cpu(), batch_size, generator)
    known_cpu = None if known is None else known.detach().bool().cpu()
    usage_cpu = None if usage is None else torch.as_tensor(usage, dtype=torch.float32).cpu()
    tail: dict[str, list[float]] = {"loss": [], "prior": [], "concentration": [], "same": []}
    with progress_bar(total=steps, enabled=progress, desc="attribute subspaces", unit="step") as bar:
        for _ in range(int(steps)):
            idx = next(batches)
            i, j = torch.triu_indices(len(idx), len(idx), offset=1)
            a, b = idx[i], idx[j]
            total = (emb[a] - emb[b]).pow(2).sum(-1).clamp_min(1e-24)
            keep = total > 1e-12  # a pair of identical embeddings has nothing to split
            rotated = (coords[a] - coords[b]) @ rotation.weight.T
            p = rotated.pow(2) @ logits.softmax(dim=-1)[:, :m] / total[:, None]
            differs = labels[a] != labels[b]
            pair_known = None if known_cpu is None else (known_cpu[a], known_cpu[b])
            if usage_cpu is None:
                prior = attribute_prior_loss(p[keep], differs[keep], weights=prior_weights,
                                             known=None if pair_known is None else
                                             (pair_known[0][keep], pair_known[1][keep]))
            else:
                prior = model_aware_prior_loss(p[keep], differs[keep], usage_cpu, weights=prior_weights,
                                               known=None if pair_known is None else
                                               (pair_known[0][keep], pair_known[1][keep]))
            counted = differs if known_cpu is None else differs & pair_known[0] & pair_known[1]
            conc = concentration_loss(p, counted, concentration, valid=keep)
            same = agreeing_pairs_cap_loss(p, differs, same_cap, valid=keep)
            loss = prior_weight * prior + concentration_weight * conc + same_weight * same
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for key, value in (("loss", loss), ("prior", prior), ("concentration", conc), ("same", same)):
                tail[key] = (tail[key] + [float(value.detach())])[-100:]
            bar.update(1)
    with torch.no_grad():
        spaces.basis.copy_(rotation.weight @ principal)
        spaces.assignment.copy_(logits.softmax(dim=-1))
    return {key: float(sum(v) / len(v)) if v else math.nan for key, v in tail.items()}
