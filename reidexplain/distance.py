"""Distances between embeddings, shared by the interpreter, the baselines and the metrics.

Euclidean distance is **not squared** and keeps an epsilon inside the square root, so that the gradient
of ``d(x, x)`` is finite (AMD-SPEC section 2). Cosine distance is ``1 - cos`` on L2-normalised
embeddings.

Examples:
    >>> import torch
    >>> x = torch.tensor([[3.0, 4.0]]); y = torch.zeros(1, 2)
    >>> pair_distance(x, y)
    tensor([5.])
    >>> distance_matrix(x, torch.cat([x, y]), metric="euclidean")
    tensor([[1.0000e-06, 5.0000e+00]])
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["Metric", "EPS", "check_metric", "pair_distance", "distance_matrix"]

Metric = Literal["euclidean", "cosine"]
EPS = 1e-12
_METRICS = ("euclidean", "cosine")


def check_metric(metric: str) -> str:
    """Return ``metric`` if it is supported, else raise ``ValueError``."""
    if metric not in _METRICS:
        raise ValueError(f"metric: expected one of {_METRICS}, got {metric!r}")
    return metric


def pair_distance(x: torch.Tensor, y: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """Row-wise distance between ``x`` and ``y``, both ``(..., D)``; returns ``(...)``."""
    check_metric(metric)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"embeddings: dimensions differ, {tuple(x.shape)} and {tuple(y.shape)}")
    if metric == "euclidean":
        return ((x - y).pow(2).sum(dim=-1)).clamp_min(EPS).sqrt()
    return 1.0 - (F.normalize(x, dim=-1) * F.normalize(y, dim=-1)).sum(dim=-1)


def distance_matrix(x: torch.Tensor, y: torch.Tensor, metric: str = "euclidean") -> torch.Tensor:
    """All distances between rows of ``x`` ``(N,D)`` and rows of ``y`` ``(K,D)``; returns ``(N,K)``.

    Computed with matrix products, not an ``(N,K,D)`` difference tensor.
    """
    check_metric(metric)
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"embeddings: expected (N,D) and (K,D), got {tuple(x.shape)} and {tuple(y.shape)}")
    if metric == "euclidean":
        sq = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * x @ y.T
        return sq.clamp_min(EPS).sqrt()
    return 1.0 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
