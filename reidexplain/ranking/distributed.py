"""Ranking against a gallery cut into shards, one per process (``torchrun``): every process gets the whole
gallery's top-k.

:func:`shard_bounds` cuts a gallery, :func:`explain_topk_sharded` ranks the queries against every shard and
merges the processes' candidates (:func:`merge_candidates`), :func:`shard_match_maps` gathers the matched
images' maps from the shards that hold them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..decomposition import Decomposition, decompose
from ._collectives import _all_gather, _all_sum, _process_group, shard_bounds
from ._topk import _check_rest, explain_topk
from .index import GalleryIndex

__all__ = ["shard_bounds", "merge_candidates", "explain_topk_sharded", "shard_match_maps"]

def merge_candidates(distances: torch.Tensor, indices: torch.Tensor, k: int) -> torch.Tensor:
    """Positions of the ``k`` best of each row's candidates, by distance, ties by gallery index.

    The rule :func:`topk_matches` orders its survivors by, so merging the processes' top-k lists of
    disjoint parts of a gallery gives the top-k of the whole gallery. Empty candidates (index ``-1``)
    come last.

    Args:
        distances: ``(Q,C)`` candidate distances.
        indices: ``(Q,C)`` their global gallery indices (``-1``: empty).
        k: How many to keep (at most ``C``).

    Returns:
        ``(Q,k)`` positions in ``[0, C)``, best first.

    Examples:
        >>> import torch
        >>> merge_candidates(torch.tensor([[0.5, 0.2, 0.5, float("inf")]]), torch.tensor([[7, 3, 2, -1]]), 3)
        tensor([[1, 2, 0]])
    """
    missing = indices < 0
    key = indices.masked_fill(missing, torch.iinfo(torch.long).max)
    by_index = torch.argsort(key, dim=1, stable=True)
    d = distances.masked_fill(missing, math.inf).gather(1, by_index)
    order = torch.argsort(d, dim=1, stable=True)
    return by_index.gather(1, order)[:, :k]


def _check_shards(meta: torch.Tensor) -> None:
    """Raise ``ValueError`` (the same on every process) unless the gathered shard descriptions fit.

    ``meta``: ``(W, 9)`` rows ``(offset, size, total, queries, top_k, maps, ids, camids, rest)``.
    """
    rows = meta.tolist()
    expected = 0
    for rank, (offset, size, *_rest) in enumerate(rows):
        if offset != expected:
            raise ValueError(f"gallery index: the shards must be contiguous parts of one gallery in rank "
                             f"order; rank {rank} holds entries from {offset}, expected from {expected} "
                             "(build them with GalleryIndex.shard() or index_gallery(..., shard=True))")
        expected += size
    for column, what in ((2, "gallery sizes"), (3, "numbers of queries"), (4, "top_k"),
                         (5, "stored maps (some shards have them, some not)"), (6, "gallery ids (some shards have them)"),
                         (7, "gallery camids (some shards have them)"),
                         (8, "rest-of-image parts of the linear decomposition (some shards have them)")):
        if len({row[column] for row in rows}) > 1:
            raise ValueError(f"explain_ranking on a sharded gallery: the processes differ in their {what}: "
                             f"{[row[column] for row in rows]}")
    if expected != rows[0][2]:
        raise ValueError(f"gallery index: the shards hold {expected} entries, the gallery has {rows[0][2]}")


def explain_topk_sharded(query_embeddings: torch.Tensor, query_components: torch.Tensor, index: GalleryIndex,
                         top_k: int, *, query_rest: torch.Tensor | None = None,
                         query_ids: torch.Tensor | None = None, query_camids: torch.Tensor | None = None,
                         exclude_same_camera: bool = True, max_memory_mb: float | None = None,
                         progress: bool = False) -> tuple[torch.Tensor, Decomposition, torch.Tensor | None]:
    """:func:`explain_topk` against a gallery cut into shards, one per process: the whole gallery's top-k.

    A collective: every process of the default process group calls it with the same queries and its own
    shard (:meth:`GalleryIndex.shard`); a whole index (not a shard) is ranked in this process alone. Each process ranks the queries against its shard
    (:func:`explain_topk`, ``min(top_k, shard size)`` matches), the processes exchange their ``(Q,k)``
    distances, global gallery indices, ``(Q,k,M)`` component distances (under the linear rule: the
    ``(Q,k,M)`` contributions and the ``(Q,k)`` rests and offsets) and matched ids (``all_gather``), and
    every process keeps the ``top_k`` best of the ``world x k`` candidates by :func:`merge_candidates`:
    by distance, ties by global gallery index, the order :func:`topk_matches` gives on the whole
    gallery, so every process gets that same ranking. The decomposition of a pair is computed by the
    process that holds the gallery image, with the same arithmetic as in one process.

    Args:
        query_embeddings: ``(Q,D)``, the same on every process.
        query_components: ``(Q,M,D')``, the same on every process.
        index: This process's shard, or a whole index.
        query_rest: ``(Q,D)`` the queries' rest-of-image parts, for the linear rule (as for
            :func:`explain_topk`; every shard must then have its rest), the same on every process.
        top_k: Matches per query (at most the whole gallery's size).
        query_ids: ``(Q,)`` identities of the queries (as for :func:`explain_topk`).
        query_camids: ``(Q,)`` cameras of the queries; with the ids, the Market-1501 exclusion.
        exclude_same_camera: Apply that exclusion.
        max_memory_mb: Bound on each process's temporaries (default :data:`DEFAULT_MAX_MEMORY_MB`).
        progress: Show progress bars.

    Returns:
        ``(indices, decomposition, match_ids)``: ``(Q,K)`` global gallery indices (``-1``: empty slot),
        the :class:`~reidexplain.decomposition.Decomposition` of those pairs, and the ``(Q,K)``
        identities of the matches (``-1`` for an empty slot; ``None`` when the shards hold no ids).

    Raises:
        ValueError: on every process alike: shards that are not contiguous parts of one gallery in rank
            order, processes with different numbers of queries or ``top_k``, ``top_k`` larger than the
            gallery, shards of which some have a rest and some not, a ``query_rest`` without the shards'
            rest or the other way round.

    Examples:
        >>> import torch
        >>> index = GalleryIndex(torch.eye(3), torch.eye(3)[:, None].repeat(1, 2, 1), None, None, None,
        ...                      ("a", "b"), "euclidean", "f00", (8, 4))
        >>> idx, parts, _ = explain_topk_sharded(torch.eye(3)[:1] * 0.9, torch.eye(3)[:1, None].repeat(1, 2, 1),
        ...                                      index, 2)  # one process: explain_topk
        >>> idx.tolist()
        [[0, 1]]
    """
    world, _ = _process_group()
    if not index.is_shard:
        idx, parts = explain_topk(query_embeddings, query_components, index, top_k, query_rest=query_rest,
                                  query_ids=query_ids, query_camids=query_camids,
                                  exclude_same_camera=exclude_same_camera, max_memory_mb=max_memory_mb,
                                  progress=progress)
        ids = None if index.ids is None else torch.where(idx.cpu() >= 0, index.ids[idx.clamp_min(0).cpu()], -1)
        return idx, parts, ids
    if world == 1:
        raise ValueError(f"gallery index: a shard (entries {index.offset}..{index.offset + len(index) - 1} of "
                         f"{index.total}) needs the other processes' shards; call explain_ranking in every "
                         "process of a torch.distributed group (torchrun)")
    device = query_embeddings.device
    q, m = query_embeddings.shape[0], query_components.shape[1]
    meta = torch.tensor([index.offset, len(index), index.total, q, top_k, index.maps is not None,
                         index.ids is not None, index.camids is not None, index.rest is not None],
                        dtype=torch.long)
    _check_shards(_all_gather(meta))
    _check_rest(query_rest, index)  # after the shards agree on their rest: the same answer on every process
    if not 1 <= top_k <= index.total:
        raise ValueError(f"top_k: expected 1 <= top_k <= {index.total} (the gallery's size), got {top_k}")
    linear = query_rest is not None
    # Per candidate: its distance, then AMD's M component distances, or the linear rule's M
    # contributions, its rest and its offset.
    width = 1 + m + (2 if linear else 0)
    floats = torch.zeros(q, top_k, width, device=device)
    floats[..., 0] = math.inf
    gidx = torch.full((q, top_k), -1, dtype=torch.long, device=device)
    mids = torch.full((q, top_k), -1, dtype=torch.long, device=device)
    local_k = min(top_k, len(index))
    if local_k > 0:
        idx, parts = explain_topk(query_embeddings, query_components, index, local_k, query_rest=query_rest,
                                  query_ids=query_ids, query_camids=query_camids,
                                  exclude_same_camera=exclude_same_camera, max_memory_mb=max_memory_mb,
                                  progress=progress)
        valid = idx >= 0
        floats[:, :local_k, 0] = parts.distance
        if linear:
            floats[:, :local_k, 1:m + 1] = parts.contributions
            floats[:, :local_k, m + 1] = parts.rest
            floats[:, :local_k, m + 2] = parts.offset
        else:
            floats[:, :local_k, 1:] = parts.component_distances
        gidx[:, :local_k] = torch.where(valid, idx + index.offset, -1)
        if index.ids is not None:
            mids[:, :local_k] = torch.where(valid, index.ids.to(device)[idx.clamp_min(0)], -1)
    # (W,Q,K,...) -> (Q, W*K, ...): every process's candidates of each query, rank after rank.
    floats = _all_gather(floats).permute(1, 0, 2, 3).reshape(q, -1, width)
    longs = _all_gather(torch.stack([gidx, mids], dim=-1)).permute(1, 0, 2, 3).reshape(q, -1, 2)
    pos = merge_candidates(floats[..., 0], longs[..., 0], top_k)
    floats = floats.gather(1, pos[..., None].expand(-1, -1, width))
    longs = longs.gather(1, pos[..., None].expand(-1, -1, 2))
    if linear:
        contributions, rest = floats[..., 1:m + 1], floats[..., m + 1]
        parts = Decomposition(floats[..., 0], None, contributions.sum(dim=-1) + rest, contributions, rest,
                              floats[..., m + 2])
    else:
        parts = decompose(floats[..., 0], floats[..., 1:])
    return longs[..., 0], parts, (longs[..., 1] if index.ids is not None else None)


def shard_match_maps(index: GalleryIndex, used: torch.Tensor, shape: tuple[int, ...],
                     embed: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """The ``(U,M,h,w)`` maps of the matched gallery images ``used`` (global indices), from every shard.

    A collective: each process fills the rows of the images its shard holds (from the shard's maps, or
    ``embed(local rows)`` when it stores none) and the processes sum them (``all_reduce``), so every
    process gets all rows. A whole index (not a shard) gives its own rows, without a collective.

    Args:
        index: This process's shard.
        used: ``(U,)`` global gallery indices (the same on every process).
        shape: ``(M,h,w)`` of one image's maps.
        embed: ``local rows (n,) -> (n,M,h,w)`` maps, for a shard that stores no maps.

    Examples:
        >>> import torch
        >>> index = GalleryIndex(torch.rand(3, 4), torch.rand(3, 2, 4), torch.rand(3, 2, 2, 1), None, None,
        ...                      ("a", "b"), "euclidean", "f00", (8, 4))
        >>> torch.equal(shard_match_maps(index, torch.tensor([2, 0]), (2, 2, 1)), index.maps[[2, 0]])
        True
    """
    device = index.components.device
    out = torch.zeros((used.shape[0], *shape), device=device)
    owned = (used >= index.offset) & (used < index.offset + len(index))
    rows = (used[owned] - index.offset).to(device)
    if rows.numel():
        out[owned.to(device)] = index.maps[rows] if index.maps is not None else embed(rows).to(device)
    return _all_sum(out) if index.is_shard else out
