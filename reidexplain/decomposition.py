"""AMD's decomposition of a distance into attribute contributions: the rules, in one place.

From the component distances ``d_k`` (the distance between the two images' ``k``-th component
embeddings, AMD-SPEC section 3.6):

* the reconstructed distance ``d_hat = (1/M) sum_k d_k``;
* the contributions ``c_k = d_k / M`` (they sum to ``d_hat``, in the target's distance units);
* the shares ``p_k = c_k / sum_j c_j`` (they sum to 1).

Pairs, query x gallery matrices, the evaluation and the training loop all call :func:`decompose`, so
that a change of rule is a change here.

The *linear* decomposition (AMD-SPEC section 11, :func:`linear_pair_decomposition`) is the other rule:
with maps that sum to 1 and components ``u_k`` that add up to the embedding, the target's own distance
splits exactly into signed contributions ``c_k = <u_k(a) - u_k(b), e_a - e_b> / d`` of the attributes,
of the rest of the image (``rest``) and of what the head does not split linearly (``offset``, zero for a
head that pools linearly).

Examples:
    >>> import torch
    >>> out = decompose(torch.tensor([2.0]), torch.tensor([[1.0, 3.0]]))
    >>> out.reconstructed, out.contributions, out.shares
    (tensor([2.]), tensor([[0.5000, 1.5000]]), tensor([[0.2500, 0.7500]]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .distance import distance_matrix, pair_distance

__all__ = ["Decomposition", "decompose", "shares_of", "pair_decomposition", "matrix_decomposition",
           "linear_pair_decomposition", "linear_matrix_decomposition"]


def shares_of(contributions: torch.Tensor) -> torch.Tensor:
    """Shares ``p_k = c_k / sum_j c_j`` over the last axis (0 everywhere for an all-zero row).

    Examples:
        >>> import torch
        >>> shares_of(torch.tensor([[1.0, 1.0, 2.0]]))
        tensor([[0.2500, 0.2500, 0.5000]])
    """
    return contributions / contributions.sum(dim=-1, keepdim=True).clamp_min(1e-12)


@dataclass
class Decomposition:
    """A target distance and its attribute decomposition, for any batch shape ``(...)``.

    Attributes:
        distance: ``(...)`` the target's distances ``d``.
        component_distances: ``(..., M)`` the ``d_k`` (AMD's rule; ``None`` for the linear one).
        reconstructed: ``(...)`` ``d_hat``: the contributions, plus ``rest`` when there is one.
        contributions: ``(..., M)`` ``c_k`` of the attributes.
        rest: ``(...)`` the contribution of the rest of the image (linear rule), else ``None``.
        offset: ``(...)`` the part of ``d`` the head does not split over the image (linear rule: zero
            for a head that pools linearly), else ``None``.
    """

    distance: torch.Tensor
    component_distances: torch.Tensor | None
    reconstructed: torch.Tensor
    contributions: torch.Tensor
    rest: torch.Tensor | None = None
    offset: torch.Tensor | None = None

    @property
    def shares(self) -> torch.Tensor:
        """``(..., M)`` ``c_k / d_hat``: with AMD's rule they sum to 1; with the linear rule they are
        signed and sum to 1 with the rest's share."""
        if self.rest is None:
            return shares_of(self.contributions)
        return self.contributions / self.reconstructed.clamp_min(1e-12).unsqueeze(-1)

    @property
    def unexplained(self) -> torch.Tensor | None:
        """``(...)`` ``d - sum_k c_k``: what no attribute accounts for (``rest + offset``); ``None`` for
        AMD's rule, which has no such part."""
        if self.rest is None:
            return None
        return self.distance - self.contributions.sum(dim=-1)

    @property
    def relative_error(self) -> torch.Tensor:
        """``|d - d_hat| / d`` per pair (ADRE is its mean, in percent)."""
        return (self.distance - self.reconstructed).abs() / self.distance.clamp_min(1e-12)


def decompose(distance: torch.Tensor, component_distances: torch.Tensor) -> Decomposition:
    """The decomposition of ``distance`` ``(...)`` given component distances ``(..., M)``."""
    m = component_distances.shape[-1]
    return Decomposition(distance, component_distances, component_distances.mean(dim=-1),
                         component_distances / m)


def pair_decomposition(embeddings_a: torch.Tensor, components_a: torch.Tensor, embeddings_b: torch.Tensor,
                       components_b: torch.Tensor, metric: str) -> Decomposition:
    """Row by row: ``(P,D)`` embeddings and ``(P,M,D')`` components of both sides -> ``(P,)`` pairs.

    Examples:
        >>> import torch
        >>> e = torch.rand(3, 4)
        >>> out = pair_decomposition(e, e[:, None].repeat(1, 2, 1), e.flip(0), e.flip(0)[:, None].repeat(1, 2, 1),
        ...                          "euclidean")
        >>> torch.allclose(out.reconstructed, out.distance)
        True
    """
    return decompose(pair_distance(embeddings_a, embeddings_b, metric),
                     pair_distance(components_a, components_b, metric))


def matrix_decomposition(query_embeddings: torch.Tensor, query_components: torch.Tensor,
                         gallery_embeddings: torch.Tensor, gallery_components: torch.Tensor,
                         metric: str) -> Decomposition:
    """Every query x gallery pair: ``(Q,G)`` distances, ``(Q,G,M)`` component distances."""
    d = distance_matrix(query_embeddings, gallery_embeddings, metric)
    dk = torch.stack([distance_matrix(query_components[:, k], gallery_components[:, k], metric)
                      for k in range(query_components.shape[1])], dim=-1)
    return decompose(d, dk)


def _normalised(emb: torch.Tensor, parts: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine: the embedding and its parts divided by the embedding's norm (the parts still add up)."""
    if metric == "euclidean":
        return emb, parts
    norm = emb.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return emb / norm, parts / norm.unsqueeze(-2)


def _with_offset(emb: torch.Tensor, components: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """``(..., M+2, D)``: the attribute parts, the rest's part and the offset ``e - sum of the parts``."""
    parts = torch.cat([components, rest.unsqueeze(-2)], dim=-2)
    offset = emb - parts.sum(dim=-2)
    return torch.cat([parts, offset.unsqueeze(-2)], dim=-2)


def _split(values: torch.Tensor, distance: torch.Tensor) -> Decomposition:
    m = values.shape[-1] - 2
    contributions, rest, offset = values[..., :m], values[..., m], values[..., m + 1]
    return Decomposition(distance, None, contributions.sum(dim=-1) + rest, contributions, rest, offset)


def linear_pair_decomposition(embeddings_a: torch.Tensor, components_a: torch.Tensor, rest_a: torch.Tensor,
                              embeddings_b: torch.Tensor, components_b: torch.Tensor, rest_b: torch.Tensor,
                              metric: str) -> Decomposition:
    """The linear decomposition of pair ``i`` = ``(a[i], b[i])``.

    Args:
        embeddings_a: ``(P,D)`` target embeddings ``e``.
        components_a: ``(P,M,D)`` attribute parts ``u_k`` of the embeddings.
        rest_a: ``(P,D)`` the rest's part.
        embeddings_b: ``(P,D)`` the other side's embeddings.
        components_b: ``(P,M,D)`` the other side's attribute parts.
        rest_b: ``(P,D)`` the other side's rest.
        metric: ``"euclidean"``: ``d = |e_a - e_b| = sum_k <delta_k, e_a - e_b> / d``; ``"cosine"``:
            ``1 - cos = |ê_a - ê_b|^2 / 2 = sum_k <delta^_k, ê_a - ê_b> / 2`` on parts divided by ``|e|``.

    Returns:
        A :class:`Decomposition` with ``rest`` and ``offset``; ``contributions + rest + offset`` sums to
        ``d`` (to float precision).

    Examples:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> u_a, u_b = torch.rand(2, 3, 4, generator=g), torch.rand(2, 3, 4, generator=g)
        >>> r_a, r_b = torch.rand(2, 4, generator=g), torch.rand(2, 4, generator=g)
        >>> e_a, e_b = u_a.sum(1) + r_a + 1.0, u_b.sum(1) + r_b + 1.0  # the same bias: a linear head
        >>> out = linear_pair_decomposition(e_a, u_a, r_a, e_b, u_b, r_b, "euclidean")
        >>> torch.allclose(out.contributions.sum(-1) + out.rest, out.distance), out.offset.abs().max() < 1e-5
        (True, tensor(True))
    """
    ea, pa = _normalised(embeddings_a, _with_offset(embeddings_a, components_a, rest_a), metric)
    eb, pb = _normalised(embeddings_b, _with_offset(embeddings_b, components_b, rest_b), metric)
    delta = ea - eb
    if metric == "euclidean":
        distance = pair_distance(embeddings_a, embeddings_b, metric)
        values = torch.einsum("...kd,...d->...k", pa - pb, delta) / distance.unsqueeze(-1)
    else:
        distance = delta.pow(2).sum(-1) / 2
        values = torch.einsum("...kd,...d->...k", pa - pb, delta) / 2
    return _split(values, distance)


def linear_matrix_decomposition(query_embeddings: torch.Tensor, query_components: torch.Tensor,
                                query_rest: torch.Tensor, gallery_embeddings: torch.Tensor,
                                gallery_components: torch.Tensor, gallery_rest: torch.Tensor,
                                metric: str) -> Decomposition:
    """Every query x gallery pair of :func:`linear_pair_decomposition`, from matrix products:
    ``<u(q) - u(g), e_q - e_g> = <u(q), e_q> - <u(q), e_g> - <u(g), e_q> + <u(g), e_g>``."""
    eq, pq = _normalised(query_embeddings, _with_offset(query_embeddings, query_components, query_rest), metric)
    eg, pg = _normalised(gallery_embeddings,
                         _with_offset(gallery_embeddings, gallery_components, gallery_rest), metric)
    inner = (torch.einsum("qkd,qd->qk", pq, eq)[:, None, :] - torch.einsum("qkd,gd->qgk", pq, eg)
             - torch.einsum("gkd,qd->qgk", pg, eq) + torch.einsum("gkd,gd->gk", pg, eg)[None])
    if metric == "euclidean":
        distance = distance_matrix(query_embeddings, gallery_embeddings, metric)
        values = inner / distance.unsqueeze(-1)
    else:
        distance = distance_matrix(query_embeddings, gallery_embeddings, metric)
        values = inner / 2
    return _split(values, distance)
