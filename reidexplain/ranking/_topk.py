"""The ranking arithmetic, as pure functions on tensors: top-k matches in blocks within a memory bound,
the component distances (AMD's rule) or the linear decomposition (``amd-subspace``, ``amd-linear``) of the top-k
pairs only, and their decomposition (:func:`explain_topk`).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from .._progress import progress_bar
from ..decomposition import Decomposition, decompose, linear_pair_decomposition
from ..distance import check_metric, distance_matrix, pair_distance
from .index import GalleryIndex

__all__ = ["DEFAULT_MAX_MEMORY_MB", "chunk_rows", "topk_matches", "pair_component_distances",
           "topk_linear_decomposition", "explain_topk"]

DEFAULT_MAX_MEMORY_MB = 256.0
"""Default bound, in MiB, on the temporaries of the ranking arithmetic (distances and contributions)."""

_BYTES = 4  # float32
# Live (rows x columns) float tensors while one block of distances is computed and reduced:
# the product, the squared distances, their square root, and the mask or the top-k copy.
_DISTANCE_COPIES = 4
# Live (pairs x M x D') float tensors while one block of component distances is computed:
# the gathered query and gallery components, their difference and its square.
_COMPONENT_COPIES = 4
# Live (pairs x (M+2) x D) float tensors while one block of the linear decomposition is computed: the
# gathered parts of both sides, each side's parts with its rest and offset appended (for cosine, divided
# by the embedding's norm, one more copy), and their difference.
_LINEAR_COPIES = 6

# ---------------------------------------------------------------------------------------- arithmetic
def chunk_rows(bytes_per_row: int, max_memory_mb: float | None = None, total: int | None = None) -> int:
    """How many rows of ``bytes_per_row`` bytes fit in ``max_memory_mb`` MiB (at least 1, at most ``total``).

    Args:
        bytes_per_row: Bytes of temporaries one row needs.
        max_memory_mb: The bound; default :data:`DEFAULT_MAX_MEMORY_MB`.
        total: The number of rows there are (the result never exceeds it).

    Raises:
        ValueError: a bound that is not positive.

    Examples:
        >>> chunk_rows(1024, max_memory_mb=1), chunk_rows(1024, max_memory_mb=1, total=10)
        (1024, 10)
        >>> chunk_rows(10**9, max_memory_mb=1)  # one row is always allowed
        1
    """
    bound = DEFAULT_MAX_MEMORY_MB if max_memory_mb is None else float(max_memory_mb)
    if not bound > 0:
        raise ValueError(f"max_memory_mb: expected a positive number, got {max_memory_mb!r}")
    rows = max(1, int(bound * 2**20) // max(1, int(bytes_per_row)))
    return rows if total is None else max(1, min(rows, int(total)))


def _excluded(query_ids: torch.Tensor | None, query_camids: torch.Tensor | None, gallery_ids: torch.Tensor | None,
              gallery_camids: torch.Tensor | None) -> torch.Tensor | None:
    """``(q,g)`` Market-1501 exclusion: same identity and same camera (``None`` without all four)."""
    if query_ids is None or gallery_ids is None or query_camids is None or gallery_camids is None:
        return None
    return (query_ids[:, None] == gallery_ids[None]) & (query_camids[:, None] == gallery_camids[None])


def _smallest(d: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest of each row of ``d`` ``(R,C)``, ties by column: ``(values, columns)``, columns ascending.

    :func:`torch.topk` leaves open which of several equal values it keeps at the ``k``-th place; here
    the leftmost ones are kept, so that the result does not depend on how a row is cut into blocks
    (the columns are in gallery order). Rows whose ``k``-th value is ``inf`` are left as they are (those
    slots are empty whichever entries fill them).

    Examples:
        >>> _smallest(torch.tensor([[2.0, 1.0, 1.0, 1.0]]), 2)[1].tolist()
        [[1, 2]]
    """
    values, columns = torch.topk(d, k, dim=1, largest=False, sorted=False)
    kth = values.amax(dim=1, keepdim=True)
    fix = torch.isfinite(kth[:, 0]) & ((d <= kth).sum(dim=1) > k)
    if bool(fix.any()):
        rows = torch.nonzero(fix)[:, 0]
        sub, t = d[rows], kth[rows]
        below = sub < t
        ties = sub == t
        keep = below | (ties & (ties.cumsum(dim=1) <= k - below.sum(dim=1, keepdim=True)))
        columns[rows] = torch.nonzero(keep)[:, 1].reshape(-1, k)
        values[rows] = sub.gather(1, columns[rows])
    columns, order = torch.sort(columns, dim=1)
    return values.gather(1, order), columns


def topk_matches(query_embeddings: torch.Tensor, gallery_embeddings: torch.Tensor, k: int,
                 metric: str = "euclidean", *, query_ids: torch.Tensor | None = None,
                 query_camids: torch.Tensor | None = None, gallery_ids: torch.Tensor | None = None,
                 gallery_camids: torch.Tensor | None = None, max_memory_mb: float | None = None,
                 progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest gallery entries of every query, computed in blocks.

    A block of queries is compared with a block of gallery entries at a time (the two block sizes are
    chosen so that the block's temporaries fit ``max_memory_mb``); each block is reduced to its ``k``
    best at once and merged with the best found so far, so the ``Q x G`` matrix never exists. The
    distances of the ``k`` survivors are then recomputed pair by pair (:func:`~reidexplain.distance.pair_distance`,
    the rule :meth:`~reidexplain.Explainer.explain` uses) and the survivors sorted by them.

    With all four of ``query_ids``, ``query_camids``, ``gallery_ids`` and ``gallery_camids``, gallery
    entries of the query's identity seen by the query's camera are excluded (Market-1501 protocol).
    A query with fewer than ``k`` entries left gets index ``-1`` and distance ``inf`` in the last slots.

    Ties: of equal block distances at the ``k``-th place the lowest gallery index survives, and equal
    pair distances are ordered by gallery index, so the result does not depend on the block sizes
    (nor on how the gallery is cut into shards).

    Args:
        query_embeddings: ``(Q,D)``.
        gallery_embeddings: ``(G,D)``.
        k: Matches per query (at most ``G``).
        metric: ``"euclidean"`` or ``"cosine"``.
        query_ids: ``(Q,)`` integer identities, or ``None``.
        query_camids: ``(Q,)`` integer cameras, or ``None``.
        gallery_ids: ``(G,)`` integer identities, or ``None``.
        gallery_camids: ``(G,)`` integer cameras, or ``None``.
        max_memory_mb: Bound on the temporaries (default :data:`DEFAULT_MAX_MEMORY_MB`).
        progress: Show a progress bar over the query blocks.

    Returns:
        ``(distances, indices)``, both ``(Q,k)``, sorted by distance, ascending.

    Raises:
        ValueError: ``k`` not in ``[1, G]``, embeddings of different widths, a bad metric.

    Examples:
        >>> import torch
        >>> g = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
        >>> d, i = topk_matches(torch.tensor([[1.1], [2.9]]), g, k=2, max_memory_mb=1e-5)
        >>> i.tolist()
        [[1, 2], [3, 2]]
        >>> ids, cams = torch.tensor([7, 7, 8, 8]), torch.tensor([0, 1, 0, 1])
        >>> topk_matches(torch.tensor([[1.1]]), g, k=2, query_ids=torch.tensor([7]),
        ...              query_camids=torch.tensor([1]), gallery_ids=ids, gallery_camids=cams)[1].tolist()
        [[2, 0]]
    """
    check_metric(metric)
    if query_embeddings.dim() != 2 or gallery_embeddings.dim() != 2 or \
            query_embeddings.shape[1] != gallery_embeddings.shape[1]:
        raise ValueError(f"embeddings: expected (Q,D) and (G,D), got {tuple(query_embeddings.shape)} and "
                         f"{tuple(gallery_embeddings.shape)}")
    q, g = query_embeddings.shape[0], gallery_embeddings.shape[0]
    if not 1 <= k <= g:
        raise ValueError(f"top_k: expected 1 <= top_k <= {g} (the gallery's size), got {k}")
    device = query_embeddings.device
    if metric == "cosine":  # normalise once, not once per block
        query_embeddings = F.normalize(query_embeddings, dim=1)
        gallery_embeddings = F.normalize(gallery_embeddings, dim=1)
    width = query_embeddings.shape[1]
    # Gallery entries per block: as many as one query row may use, at most 8192; query rows per block:
    # what the bound leaves for rows of that width (plus the k survivors and their exact distances).
    columns = chunk_rows(_DISTANCE_COPIES * _BYTES, max_memory_mb, min(g, 8192))
    rows = chunk_rows(_DISTANCE_COPIES * _BYTES * (columns + 2 * k + k * width), max_memory_mb, q)
    out_d = torch.empty(q, k, device=device)
    out_i = torch.empty(q, k, dtype=torch.long, device=device)

    def part(t: torch.Tensor | None, sl: slice) -> torch.Tensor | None:
        return None if t is None else t[sl].to(device)

    for start in progress_bar(range(0, q, rows), desc="ranking", enabled=progress, unit="block"):
        qs = slice(start, start + rows)
        qe = query_embeddings[qs]
        run_d = torch.empty((qe.shape[0], 0), device=device)
        run_i = torch.empty((qe.shape[0], 0), dtype=torch.long, device=device)
        for gs in range(0, g, columns):
            cs = slice(gs, gs + columns)
            d = distance_matrix(qe, gallery_embeddings[cs], metric)
            mask = _excluded(part(query_ids, qs), part(query_camids, qs), part(gallery_ids, cs),
                             part(gallery_camids, cs))
            if mask is not None:
                d = d.masked_fill(mask, math.inf)
            # Equal distances at the k-th place: the lowest gallery index survives (the running
            # candidates are kept in gallery order, so "leftmost" is "lowest index").
            d, i = _smallest(d, min(k, d.shape[1]))
            run_d, run_i = torch.cat([run_d, d], dim=1), torch.cat([run_i, i + gs], dim=1)
            if run_d.shape[1] > k:
                run_d, pick = _smallest(run_d, k)
                run_i = run_i.gather(1, pick)
        missing = torch.isinf(run_d)
        # The survivors' distances pair by pair, then sorted by them, ties by gallery index (a fixed
        # order whatever the block sizes).
        by_index = torch.argsort(run_i.masked_fill(missing, g), dim=1, stable=True)
        run_i, missing = run_i.gather(1, by_index), missing.gather(1, by_index)
        safe = run_i.masked_fill(missing, 0)
        exact = pair_distance(qe[:, None].expand(-1, k, -1), gallery_embeddings[safe], metric)
        exact = exact.masked_fill(missing, math.inf)
        order = torch.argsort(exact, dim=1, stable=True)
        out_d[qs] = exact.gather(1, order)
        out_i[qs] = run_i.gather(1, order).masked_fill(missing.gather(1, order), -1)
    return out_d, out_i


def pair_component_distances(query_components: torch.Tensor, gallery_components: torch.Tensor,
                             indices: torch.Tensor, metric: str = "euclidean",
                             max_memory_mb: float | None = None, progress: bool = False) -> torch.Tensor:
    """Component distances ``d_k`` of the pairs ``(query q, gallery indices[q, j])`` only.

    Args:
        query_components: ``(Q,M,D')``.
        gallery_components: ``(G,M,D')``.
        indices: ``(Q,K)`` gallery indices; ``-1`` marks an empty slot (its distances are 0).
        metric: ``"euclidean"`` or ``"cosine"``.
        max_memory_mb: Bound on the temporaries (default :data:`DEFAULT_MAX_MEMORY_MB`).
        progress: Show a progress bar over the blocks of pairs.

    Returns:
        ``(Q,K,M)`` component distances.

    Examples:
        >>> import torch
        >>> qc = torch.zeros(1, 2, 3); gc = torch.arange(12.0).reshape(2, 2, 3)
        >>> pair_component_distances(qc, gc, torch.tensor([[1, -1]])).shape
        torch.Size([1, 2, 2])
    """
    check_metric(metric)
    q, k = indices.shape
    m, width = query_components.shape[1], query_components.shape[2]
    if gallery_components.shape[1:] != (m, width):
        raise ValueError(f"components: expected (G,{m},{width}) gallery components, got "
                         f"{tuple(gallery_components.shape)}")
    flat = indices.reshape(-1)
    queries = torch.arange(q, device=indices.device).repeat_interleave(k)
    out = torch.zeros(q * k, m, device=query_components.device)
    pairs = chunk_rows(_COMPONENT_COPIES * _BYTES * m * width, max_memory_mb, max(1, q * k))
    for start in progress_bar(range(0, q * k, pairs), desc="contributions", enabled=progress, unit="block"):
        idx = flat[start:start + pairs]
        valid = idx >= 0
        a = query_components[queries[start:start + pairs]]
        b = gallery_components[idx.clamp_min(0)]
        out[start:start + pairs] = pair_distance(a, b, metric) * valid[:, None]
    return out.reshape(q, k, m)


def topk_linear_decomposition(query_embeddings: torch.Tensor, query_components: torch.Tensor,
                              query_rest: torch.Tensor, gallery_embeddings: torch.Tensor,
                              gallery_components: torch.Tensor, gallery_rest: torch.Tensor,
                              indices: torch.Tensor, metric: str = "euclidean",
                              max_memory_mb: float | None = None, progress: bool = False) -> Decomposition:
    """The linear decomposition of the pairs ``(query q, gallery indices[q, j])`` only.

    :func:`~reidexplain.decomposition.linear_pair_decomposition` (the rule
    :meth:`~reidexplain.Explainer.explain` uses for ``amd-subspace``, ``amd-linear``) on the gathered pairs, a
    block of pairs at a time, the blocks sized so that their temporaries fit ``max_memory_mb``.

    Args:
        query_embeddings: ``(Q,D)``.
        query_components: ``(Q,M,D)`` the queries' attribute parts ``u_k``.
        query_rest: ``(Q,D)`` the queries' rest-of-image parts.
        gallery_embeddings: ``(G,D)``.
        gallery_components: ``(G,M,D)``.
        gallery_rest: ``(G,D)``.
        indices: ``(Q,K)`` gallery indices; ``-1`` marks an empty slot (distance ``inf``, everything else 0).
        metric: ``"euclidean"`` or ``"cosine"``.
        max_memory_mb: Bound on the temporaries (default :data:`DEFAULT_MAX_MEMORY_MB`).
        progress: Show a progress bar over the blocks of pairs.

    Returns:
        A :class:`~reidexplain.decomposition.Decomposition` of ``(Q,K)`` distances, rests and offsets and
        ``(Q,K,M)`` signed contributions; ``contributions + rest + offset`` sums to the distance.

    Raises:
        ValueError: parts whose shapes do not fit the embeddings, a bad metric.

    Examples:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> u, r = torch.rand(4, 2, 3, generator=g), torch.rand(4, 3, generator=g)
        >>> parts = topk_linear_decomposition(u[:1].sum(1) + r[:1], u[:1], r[:1], u.sum(1) + r, u, r,
        ...                                   torch.tensor([[2, -1]]))
        >>> torch.allclose(parts.contributions[0, 0].sum() + parts.rest[0, 0], parts.distance[0, 0])
        True
        >>> parts.distance[0, 1], parts.contributions[0, 1].tolist()
        (tensor(inf), [0.0, 0.0])
    """
    check_metric(metric)
    q, k = indices.shape
    m, width = query_components.shape[1], query_components.shape[2]
    for name, t, shape in (("query_components", query_components, (q, m, query_embeddings.shape[1])),
                           ("query_rest", query_rest, tuple(query_embeddings.shape)),
                           ("gallery_components", gallery_components, (gallery_embeddings.shape[0], m, width)),
                           ("gallery_rest", gallery_rest, tuple(gallery_embeddings.shape))):
        if tuple(t.shape) != shape:
            raise ValueError(f"{name}: expected shape {shape} (parts of the embeddings), got {tuple(t.shape)}")
    flat = indices.reshape(-1)
    queries = torch.arange(q, device=indices.device).repeat_interleave(k)
    device = query_components.device
    distance = torch.full((q * k,), math.inf, device=device)
    values = torch.zeros(q * k, m + 2, device=device)  # the contributions, the rest and the offset
    pairs = chunk_rows(_LINEAR_COPIES * _BYTES * (m + 2) * width, max_memory_mb, max(1, q * k))
    for start in progress_bar(range(0, q * k, pairs), desc="contributions", enabled=progress, unit="block"):
        idx = flat[start:start + pairs]
        valid = idx >= 0
        a, b = queries[start:start + pairs], idx.clamp_min(0)
        parts = linear_pair_decomposition(query_embeddings[a], query_components[a], query_rest[a],
                                          gallery_embeddings[b], gallery_components[b], gallery_rest[b], metric)
        distance[start:start + pairs] = parts.distance.masked_fill(~valid, math.inf)
        block = torch.cat([parts.contributions, parts.rest[:, None], parts.offset[:, None]], dim=1)
        values[start:start + pairs] = block * valid[:, None]
    values = values.reshape(q, k, m + 2)
    contributions, rest, offset = values[..., :m], values[..., m], values[..., m + 1]
    return Decomposition(distance.reshape(q, k), None, contributions.sum(dim=-1) + rest, contributions, rest,
                         offset)


def _check_rest(query_rest: torch.Tensor | None, index: GalleryIndex) -> None:
    """Raise ``ValueError`` unless the queries and the index both have a rest (linear rule) or neither."""
    if query_rest is not None and index.rest is None:
        raise ValueError("query_rest: the queries come with the rest-of-image parts of the linear decomposition "
                         "(amd-subspace, amd-linear), and the gallery index has none (an index built by another "
                         "recipe, or before reidexplain kept them): rebuild it with index_gallery")
    if query_rest is None and index.rest is not None:
        raise ValueError("query_rest: the gallery index holds the rest-of-image parts of the linear "
                         "decomposition (amd-subspace, amd-linear); pass the queries' (Components.rest) as "
                         "query_rest, or their decomposition would be AMD's rule on the parts u_k")


# ---------------------------------------------------------------------------------------- assembly
def explain_topk(query_embeddings: torch.Tensor, query_components: torch.Tensor, index: GalleryIndex, top_k: int,
                 *, query_rest: torch.Tensor | None = None, query_ids: torch.Tensor | None = None,
                 query_camids: torch.Tensor | None = None, exclude_same_camera: bool = True,
                 max_memory_mb: float | None = None, progress: bool = False) -> tuple[torch.Tensor, Decomposition]:
    """Top-k matches of every query against ``index`` and their decomposition (pure tensor arithmetic).

    :func:`topk_matches` on the embeddings, then, for the ``Q x K`` survivors only, either AMD's rule
    (:func:`pair_component_distances`, then :func:`~reidexplain.decomposition.decompose`) or, when the
    queries and the index have the rest-of-image parts of a linear decomposition
    (``amd-subspace``, ``amd-linear``), the linear rule (:func:`topk_linear_decomposition`), whose contributions
    are signed and leave an unexplained part.

    Args:
        query_embeddings: ``(Q,D)``.
        query_components: ``(Q,M,D')``.
        index: The gallery.
        top_k: Matches per query.
        query_rest: ``(Q,D)`` the queries' rest-of-image parts (:class:`~reidexplain.interpreter.Components`
            ``.rest``): the linear rule; the index must then have its :attr:`~GalleryIndex.rest` too.
            ``None``: AMD's rule, for an index without one.
        query_ids: ``(Q,)`` identities of the queries.
        query_camids: ``(Q,)`` cameras of the queries; with the query ids, the index's ids and camids
            and ``exclude_same_camera``, gallery entries of the query's identity and camera are excluded
            (Market-1501 protocol).
        exclude_same_camera: Apply that exclusion.
        max_memory_mb: Bound on the temporaries (default :data:`DEFAULT_MAX_MEMORY_MB`).
        progress: Show progress bars.

    Returns:
        ``(indices, decomposition)``: ``(Q,K)`` gallery indices (``-1``: empty slot) and a
        :class:`~reidexplain.decomposition.Decomposition` of ``(Q,K)`` and ``(Q,K,M)`` tensors (zero
        contributions in empty slots). Its ``distance`` is the ranking's (what :func:`topk_matches`
        sorted by); under the linear rule it has ``rest`` and ``offset``, and ``unexplained`` is
        ``distance - sum_k c_k`` (``inf`` in empty slots).

    Raises:
        ValueError: a ``query_rest`` without the index's rest, or the other way round (the two rules
            cannot be mixed); and as :func:`topk_matches`.

    Examples:
        >>> import torch
        >>> index = GalleryIndex(torch.eye(3), torch.eye(3)[:, None].repeat(1, 2, 1), None, None, None,
        ...                      ("a", "b"), "euclidean", "f00", (8, 4))
        >>> idx, parts = explain_topk(torch.eye(3)[:1] * 0.9, torch.eye(3)[:1, None].repeat(1, 2, 1), index, 2)
        >>> idx.tolist(), tuple(parts.contributions.shape)
        ([[0, 1]], (1, 2, 2))
    """
    _check_rest(query_rest, index)
    exclude = exclude_same_camera and all(t is not None for t in (query_ids, query_camids, index.ids, index.camids))
    dist, idx = topk_matches(query_embeddings, index.embeddings, top_k, index.metric,
                             query_ids=query_ids if exclude else None,
                             query_camids=query_camids if exclude else None,
                             gallery_ids=index.ids if exclude else None,
                             gallery_camids=index.camids if exclude else None,
                             max_memory_mb=max_memory_mb, progress=progress)
    if query_rest is not None:
        parts = topk_linear_decomposition(query_embeddings, query_components, query_rest, index.embeddings,
                                          index.components, index.rest, idx, index.metric, max_memory_mb,
                                          progress)
        # The ranking's distances (what the matches are sorted by), not the rule's recomputation of them.
        return idx, dataclasses.replace(parts, distance=dist)
    dk = pair_component_distances(query_components, index.components, idx, index.metric, max_memory_mb, progress)
    return idx, decompose(dist, dk)


def _unique_slots(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct valid gallery indices ``(U,)`` and the row of each slot in them ``(Q,K)`` (-1: empty)."""
    valid = indices >= 0
    used = torch.unique(indices[valid])
    slots = torch.searchsorted(used, indices.clamp_min(0).contiguous())
    return used, torch.where(valid, slots, torch.full_like(slots, -1))
