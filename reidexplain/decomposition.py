"""AMD's decomposition of a distance into attribute contributions: the rules, in one place.

From the component distances ``d_k`` (the distance between the two images' ``k``-th component
embeddings, AMD-SPEC section 3.6):

* the reconstructed distance ``d_hat = (1/M) sum_k d_k``;
* the contributions ``c_k = d_k / M`` (they sum to ``d_hat``, in the target's distance units);
* the shares ``p_k = c_k / sum_j c_j`` (they sum to 1).

Pairs, query x gallery matrices, the evaluation and the training loop all call :func:`decompose`, so
that a change of rule is a change here.

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

__all__ = ["Decomposition", "decompose", "shares_of", "pair_decomposition", "matrix_decomposition"]


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
        component_distances: ``(..., M)`` the ``d_k``.
        reconstructed: ``(...)`` ``d_hat``.
        contributions: ``(..., M)`` ``c_k``, summing to ``d_hat``.
    """

    distance: torch.Tensor
    component_distances: torch.Tensor
    reconstructed: torch.Tensor
    contributions: torch.Tensor

    @property
    def shares(self) -> torch.Tensor:
        """``(..., M)`` shares of ``d_hat``; they sum to 1."""
        return shares_of(self.contributions)

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
