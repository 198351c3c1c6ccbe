"""Ranked lists: a query's top-k gallery matches, each explained by AMD, at gallery scale.

What ReID users look at is a ranked list. AMD makes explaining one cheap: the per-image component
embeddings are computed once, and every query x match pair then costs ``M`` distances. This package holds

* the arithmetic, as pure functions on tensors: :func:`topk_matches` (the ``k`` nearest gallery entries
  of every query, in chunks, without a ``Q x G x M`` tensor), :func:`pair_component_distances` (the
  ``M`` component distances of the top-k pairs only), :func:`topk_linear_decomposition` (the linear
  decomposition of those pairs, for ``amd-subspace``, ``amd-linear``) and :func:`chunk_rows` (how many rows fit a
  memory bound);
* :class:`GalleryIndex`: a gallery's per-image quantities, computed once, saved to a versioned file and
  reloaded without the images;
* :class:`RankingExplanation`: the result of :meth:`reidexplain.Explainer.explain_ranking`, with
  :meth:`~RankingExplanation.why`, :meth:`~RankingExplanation.to_dict` and
  :meth:`~RankingExplanation.plot`.

Its modules, each importing only those above it: ``_collectives`` (the process group), ``index``
(:class:`GalleryIndex`, :func:`model_fingerprint`), ``_topk`` (the arithmetic and :func:`explain_topk`),
``distributed`` (a gallery cut into shards, one per process: :func:`explain_topk_sharded`); apart from
them, ``result`` (:class:`RankingExplanation`, :class:`RankComparison`) and ``plot``
(:func:`plot_ranking`), which compute no ranking.

Memory: the temporaries of the arithmetic stay within ``max_memory_mb`` (default
:data:`DEFAULT_MAX_MEMORY_MB`). The ``Q x G`` distances are computed a block of queries against a block
of gallery entries at a time; each block is reduced to its ``k`` best at once, so only ``Q x k``
candidates survive. The ``M``-wise contributions are computed for those ``Q x k`` pairs only, a block of
pairs at a time. The outputs (``Q x k x M`` contributions) and the index itself are not counted.

Examples:
    >>> import torch
    >>> gallery = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    >>> values, indices = topk_matches(torch.tensor([[0.9, 0.0]]), gallery, k=2)
    >>> indices.tolist(), [round(v, 3) for v in values[0].tolist()]
    ([[1, 0]], [0.1, 0.9])
"""

from __future__ import annotations

from ._topk import (
    DEFAULT_MAX_MEMORY_MB,
    chunk_rows,
    explain_topk,
    pair_component_distances,
    topk_linear_decomposition,
    topk_matches,
)
from .distributed import (
    explain_topk_sharded,
    merge_candidates,
    shard_bounds,
    shard_match_maps,  # noqa: F401  (importable here as before; not in __all__)
)
from .index import (
    INDEX_FORMAT,
    INDEX_FORMAT_VERSION,
    LINEAR_FORMAT_VERSIONS,
    SHARD_FORMAT_VERSION,
    GalleryIndex,
    model_fingerprint,
)
from .plot import plot_ranking
from .result import RankComparison, RankingExplanation

__all__ = [
    "DEFAULT_MAX_MEMORY_MB",
    "INDEX_FORMAT",
    "INDEX_FORMAT_VERSION",
    "LINEAR_FORMAT_VERSIONS",
    "SHARD_FORMAT_VERSION",
    "GalleryIndex",
    "RankComparison",
    "RankingExplanation",
    "chunk_rows",
    "topk_matches",
    "pair_component_distances",
    "topk_linear_decomposition",
    "explain_topk",
    "explain_topk_sharded",
    "merge_candidates",
    "shard_bounds",
    "model_fingerprint",
    "plot_ranking",
]
