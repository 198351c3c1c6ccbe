"""Ranked lists: a query's top-k gallery matches, each explained by AMD, at gallery scale.

What ReID users look at is a ranked list. AMD makes explaining one cheap: the per-image component
embeddings are computed once, and every query x match pair then costs ``M`` distances. This module holds

* the arithmetic, as pure functions on tensors: :func:`topk_matches` (the ``k`` nearest gallery entries
  of every query, in chunks, without a ``Q x G x M`` tensor), :func:`pair_component_distances` (the
  ``M`` component distances of the top-k pairs only) and :func:`chunk_rows` (how many rows fit a
  memory bound);
* :class:`GalleryIndex`: a gallery's per-image quantities, computed once, saved to a versioned file and
  reloaded without the images;
* :class:`RankingExplanation`: the result of :meth:`reidexplain.Explainer.explain_ranking`, with
  :meth:`~RankingExplanation.why`, :meth:`~RankingExplanation.to_dict` and
  :meth:`~RankingExplanation.plot`.

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

import hashlib
import json
import math
import pickle
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._progress import progress_bar
from .decomposition import Decomposition, decompose, shares_of
from .distance import check_metric, distance_matrix, pair_distance

__all__ = [
    "DEFAULT_MAX_MEMORY_MB",
    "INDEX_FORMAT",
    "INDEX_FORMAT_VERSION",
    "SHARD_FORMAT_VERSION",
    "GalleryIndex",
    "RankComparison",
    "RankingExplanation",
    "chunk_rows",
    "topk_matches",
    "pair_component_distances",
    "explain_topk",
    "explain_topk_sharded",
    "merge_candidates",
    "shard_bounds",
    "model_fingerprint",
    "plot_ranking",
]

DEFAULT_MAX_MEMORY_MB = 256.0
"""Default bound, in MiB, on the temporaries of the ranking arithmetic (distances and contributions)."""
INDEX_FORMAT = "reidexplain.GalleryIndex"
"""The ``"format"`` tag of a :class:`GalleryIndex` file."""
INDEX_FORMAT_VERSION = 1
"""Version of the files :meth:`GalleryIndex.save` writes for a whole gallery."""
SHARD_FORMAT_VERSION = 2
"""Version of the files :meth:`GalleryIndex.save` writes for a shard (version 1 plus its ``offset`` and
the whole gallery's ``total``), so that a reader of version 1 refuses a shard instead of taking it for a
whole gallery."""

_BYTES = 4  # float32
# Live (rows x columns) float tensors while one block of distances is computed and reduced:
# the product, the squared distances, their square root, and the mask or the top-k copy.
_DISTANCE_COPIES = 4
# Live (pairs x M x D') float tensors while one block of component distances is computed:
# the gathered query and gallery components, their difference and its square.
_COMPONENT_COPIES = 4


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


# ---------------------------------------------------------------------------------------- fingerprints
def model_fingerprint(amd: Any) -> str:
    """A hash of what a gallery's components depend on: the target's and the interpreter's weights.

    Args:
        amd: A fitted :class:`~reidexplain.interpreter.AMDModel`.

    Returns:
        A hexadecimal SHA-1 of the names, shapes and values of the target copy's and the interpreter
        network's parameters and buffers, and of the metric and attribute names.
    """
    h = hashlib.sha1()
    h.update(f"{amd.metric};{','.join(amd.schema.names)};".encode())
    for prefix, module in (("target", amd.adapter.target), ("network", amd.network)):
        for name, t in module.state_dict().items():
            h.update(f"{prefix}.{name}:{tuple(t.shape)}:{t.dtype};".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes() if t.dtype != torch.bfloat16
                     else t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def _as_ids(x: Any, name: str, length: int) -> torch.Tensor | None:
    if x is None:
        return None
    t = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x))
    if t.dim() != 1 or t.shape[0] != length:
        raise ValueError(f"`{name}`: expected {length} entries, got shape {tuple(t.shape)}")
    if t.is_floating_point() or t.dtype == torch.bool:
        raise ValueError(f"`{name}`: expected integer ids, got dtype {t.dtype}")
    return t.long()


# ---------------------------------------------------------------------------------------- gallery index
@dataclass
class GalleryIndex:
    """A gallery's per-image AMD quantities, computed once; saved and reloaded without the images.

    Build one with :meth:`reidexplain.Explainer.index_gallery`; rank queries against it with
    :meth:`reidexplain.Explainer.explain_ranking`.

    Attributes:
        embeddings: ``(G,D)`` the target's embeddings.
        components: ``(G,M,D')`` component embeddings.
        maps: ``(G,M,h,w)`` low-resolution attribute maps, or ``None`` (not stored, to bound the size).
        ids: ``(G,)`` identities, or ``None``.
        camids: ``(G,)`` cameras, or ``None``.
        attribute_names: The ``M`` names.
        metric: The target's distance.
        fingerprint: :func:`model_fingerprint` of the model that computed it.
        image_size: ``(H, W)`` of the gallery images.
        offset: Global index of the first entry: ``0`` for a whole gallery; for a shard (one process's
            contiguous part of a gallery, see :meth:`shard`) the position of its first image in the
            whole gallery. Rankings name gallery images by ``offset + local row``.
        total: Size of the whole gallery (default ``offset + len(self)``).

    Examples:
        >>> import torch
        >>> index = GalleryIndex(torch.rand(5, 4), torch.rand(5, 2, 4), None, None, None, ("a", "b"),
        ...                      "euclidean", "f00", (8, 4))
        >>> len(index), index.has_maps
        (5, False)
    """

    embeddings: torch.Tensor
    components: torch.Tensor
    maps: torch.Tensor | None
    ids: torch.Tensor | None
    camids: torch.Tensor | None
    attribute_names: tuple[str, ...]
    metric: str
    fingerprint: str
    image_size: tuple[int, int]
    offset: int = 0
    total: int | None = None

    def __post_init__(self) -> None:
        g = self.embeddings.shape[0]
        if self.embeddings.dim() != 2 or self.components.dim() != 3 or self.components.shape[0] != g:
            raise ValueError(f"GalleryIndex: expected (G,D) embeddings and (G,M,D') components, got "
                             f"{tuple(self.embeddings.shape)} and {tuple(self.components.shape)}")
        self.attribute_names = tuple(self.attribute_names)
        if self.components.shape[1] != len(self.attribute_names):
            raise ValueError(f"GalleryIndex: {self.components.shape[1]} components per image but "
                             f"{len(self.attribute_names)} attribute names")
        if self.maps is not None and tuple(self.maps.shape[:2]) != tuple(self.components.shape[:2]):
            raise ValueError(f"GalleryIndex: maps of shape {tuple(self.maps.shape)} for {g} images x "
                             f"{self.components.shape[1]} attributes")
        self.ids = _as_ids(self.ids, "ids", g)
        self.camids = _as_ids(self.camids, "camids", g)
        self.metric = check_metric(self.metric)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        self.offset = int(self.offset)
        self.total = g + self.offset if self.total is None else int(self.total)
        if self.offset < 0 or self.total < self.offset + g:
            raise ValueError(f"GalleryIndex: {g} entries from offset {self.offset} do not fit a gallery of "
                             f"{self.total}")

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def has_maps(self) -> bool:
        """Whether the low-resolution maps are stored."""
        return self.maps is not None

    @property
    def is_shard(self) -> bool:
        """Whether this is a part of a larger gallery (``offset > 0`` or ``total > len``)."""
        return self.offset != 0 or self.total != len(self)

    def shard(self, rank: int | None = None, world: int | None = None) -> GalleryIndex:
        """This process's contiguous part of the gallery (:func:`shard_bounds`), with its global offset.

        Under ``torchrun``, every process keeps only its part of the gallery; ranking against the parts
        with :meth:`reidexplain.Explainer.explain_ranking` merges the processes' top-k into the top-k
        of the whole gallery (:func:`explain_topk_sharded`).

        Args:
            rank: This process's rank (default: the process group's, else 0).
            world: The number of processes (default: the process group's, else 1).

        Returns:
            A :class:`GalleryIndex` that shares the tensors' storage (slices, no copies), with
            :attr:`offset` and :attr:`total` set.

        Raises:
            ValueError: the index is already a shard, has fewer entries than ``world``, or ``rank`` is
                not in ``[0, world)``.

        Examples:
            >>> import torch
            >>> index = GalleryIndex(torch.rand(5, 4), torch.rand(5, 2, 4), None, torch.arange(5), None,
            ...                      ("a", "b"), "euclidean", "f00", (8, 4))
            >>> part = index.shard(rank=1, world=2)
            >>> len(part), part.offset, part.total, part.ids.tolist(), part.is_shard
            (3, 2, 5, [2, 3, 4], True)
        """
        if self.is_shard:
            raise ValueError(f"shard: this index is already a shard (entries {self.offset}.."
                             f"{self.offset + len(self) - 1} of {self.total})")
        group_world, group_rank = _process_group()
        world = group_world if world is None else int(world)
        rank = group_rank if rank is None else int(rank)
        if len(self) < world:
            raise ValueError(f"shard: a gallery of {len(self)} entries cannot be cut into {world} non-empty shards")
        start, stop = shard_bounds(len(self), rank, world)
        cut = (lambda t: None if t is None else t[start:stop])  # noqa: E731
        return GalleryIndex(cut(self.embeddings), cut(self.components), cut(self.maps), cut(self.ids),
                            cut(self.camids), self.attribute_names, self.metric, self.fingerprint,
                            self.image_size, offset=start, total=len(self))

    @property
    def nbytes(self) -> int:
        """Bytes held by the index's tensors."""
        return sum(t.numel() * t.element_size() for t in (self.embeddings, self.components, self.maps,
                                                           self.ids, self.camids) if t is not None)

    def to(self, device: torch.device | str) -> GalleryIndex:
        """A copy on ``device``."""
        move = (lambda t: None if t is None else t.to(device))  # noqa: E731
        return GalleryIndex(move(self.embeddings), move(self.components), move(self.maps), self.ids,
                            self.camids, self.attribute_names, self.metric, self.fingerprint, self.image_size,
                            offset=self.offset, total=self.total)

    def save(self, path: str | Path) -> None:
        """Write the index to one file: ``torch.save`` of plain tensors, loadable with ``weights_only=True``.

        A whole gallery is written as format version :data:`INDEX_FORMAT_VERSION`; a shard as
        :data:`SHARD_FORMAT_VERSION`, with its offset and the gallery's size. Every process writes what it
        holds: under ``torchrun``, give each rank its own path (``f"gallery.{rank}.pt"``) and load each
        shard on its own rank.

        Examples:
            >>> import tempfile, torch
            >>> index = GalleryIndex(torch.rand(3, 4), torch.rand(3, 2, 4), torch.rand(3, 2, 2, 1),
            ...                      torch.tensor([1, 1, 2]), None, ("a", "b"), "cosine", "f00", (8, 4))
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     index.save(f"{tmp}/gallery.pt")
            ...     again = GalleryIndex.load(f"{tmp}/gallery.pt")
            >>> torch.equal(again.components, index.components), again.ids.tolist(), again.camids
            (True, [1, 1, 2], None)
        """
        cpu = (lambda t: None if t is None else t.detach().cpu().contiguous())  # noqa: E731
        data = {
            "format": INDEX_FORMAT, "format_version": INDEX_FORMAT_VERSION,
            "attribute_names": list(self.attribute_names), "metric": self.metric,
            "fingerprint": self.fingerprint, "image_size": list(self.image_size),
            "embeddings": cpu(self.embeddings), "components": cpu(self.components), "maps": cpu(self.maps),
            "ids": cpu(self.ids), "camids": cpu(self.camids),
        }
        if self.is_shard:
            data.update(format_version=SHARD_FORMAT_VERSION, offset=self.offset, total=self.total)
        torch.save(data, Path(path))

    @classmethod
    def load(cls, path: str | Path, explainer: Any = None, map_location: str | torch.device = "cpu") -> GalleryIndex:
        """Read a file written by :meth:`save`; with ``explainer``, check that it computed the index.

        Args:
            path: The file.
            explainer: A fitted :class:`~reidexplain.Explainer`; its schema and :func:`model_fingerprint`
                must match the file's (an index of another model would rank with the wrong components).
            map_location: Where the tensors go.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a gallery index file, another format version, or another schema or model
                than ``explainer``'s.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"path: no such file {str(path)!r}")
        try:
            data = torch.load(path, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError) as err:
            raise ValueError(f"path: {str(path)!r} is not a gallery index written by GalleryIndex.save "
                             f"({err})") from None
        if not isinstance(data, dict) or data.get("format") != INDEX_FORMAT:
            raise ValueError(f"path: {str(path)!r} is not a gallery index written by GalleryIndex.save")
        version = data.get("format_version")
        if version not in (INDEX_FORMAT_VERSION, SHARD_FORMAT_VERSION):
            raise ValueError(f"path: {str(path)!r} has gallery index format version {version!r}; this "
                             f"reidexplain reads versions {INDEX_FORMAT_VERSION} and {SHARD_FORMAT_VERSION}")
        shard = {"offset": data["offset"], "total": data["total"]} if version == SHARD_FORMAT_VERSION else {}
        index = cls(data["embeddings"], data["components"], data["maps"], data["ids"], data["camids"],
                    tuple(data["attribute_names"]), data["metric"], data["fingerprint"], tuple(data["image_size"]),
                    **shard)
        if explainer is not None:
            index.check_compatible(explainer)
        return index

    def check_compatible(self, explainer: Any) -> None:
        """Raise ``ValueError`` unless ``explainer`` (fitted) computed this index (same schema and model)."""
        amd = explainer._require_fitted("explain_ranking")
        if tuple(amd.schema.names) != self.attribute_names:
            raise ValueError(f"gallery index: its schema ({len(self.attribute_names)} attributes: "
                             f"{', '.join(self.attribute_names[:4])}, ...) differs from the explainer's "
                             f"({len(amd.schema)} attributes: {', '.join(amd.schema.names[:4])}, ...)")
        if amd.metric != self.metric:
            raise ValueError(f"gallery index: metric {self.metric!r}, the explainer's is {amd.metric!r}")
        fingerprint = model_fingerprint(amd)
        if fingerprint != self.fingerprint:
            raise ValueError(f"gallery index: model fingerprint {self.fingerprint[:12]} differs from the "
                             f"explainer's {fingerprint[:12]}: the index was computed by another target model "
                             "or interpreter; rebuild it with explainer.index_gallery(images)")


# ---------------------------------------------------------------------------------------- results
@dataclass
class RankComparison:
    """Why match ``i`` ranks above match ``j`` for one query: the difference of their contributions.

    ``differences[k] = c_k(query, match j) - c_k(query, match i)``: positive where attribute ``k`` puts
    match ``j`` farther from the query than match ``i`` (it supports the order), negative where it works
    against it. The differences sum to ``d_hat_j - d_hat_i``.

    Attributes:
        query: The query's index.
        i, j: The two ranks (0-based).
        distance_i, distance_j: Target distances of the two matches.
        reconstructed_gap: ``d_hat_j - d_hat_i``.
        attribute_names, attribute_labels: The ``M`` names and labels.
        differences: ``(M,)`` per-attribute differences.

    Examples:
        >>> import torch
        >>> c = RankComparison(0, 0, 1, 1.0, 2.0, 1.0, ("hat", "bag"), ("hat", "bag"), torch.tensor([-0.2, 1.2]))
        >>> c.ranked()[0][0], round(c.ranked()[0][1], 2)
        ('bag', 1.2)
    """

    query: int
    i: int
    j: int
    distance_i: float
    distance_j: float
    reconstructed_gap: float
    attribute_names: tuple[str, ...]
    attribute_labels: tuple[str, ...]
    differences: torch.Tensor

    def ranked(self, n: int | None = None) -> list[tuple[str, float]]:
        """``(label, difference)`` sorted by difference, largest (most in favour of the order) first."""
        order = torch.argsort(self.differences, descending=True, stable=True).tolist()
        return [(self.attribute_labels[k], float(self.differences[k])) for k in order[:n]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the ranks, distances and the sorted per-attribute differences."""
        order = torch.argsort(self.differences, descending=True, stable=True).tolist()
        return {"query": self.query, "i": self.i, "j": self.j, "distance_i": self.distance_i,
                "distance_j": self.distance_j, "reconstructed_gap": self.reconstructed_gap,
                "attributes": [{"name": self.attribute_names[k], "label": self.attribute_labels[k],
                                "difference": float(self.differences[k])} for k in order]}

    def __str__(self) -> str:
        lines = [f"query {self.query}: match {self.i} (d = {self.distance_i:.4g}) above match {self.j} "
                 f"(d = {self.distance_j:.4g}); d_hat gap {self.reconstructed_gap:+.4g}"]
        lines += [f"  {label}: {value:+.4g}" for label, value in self.ranked(5)]
        return "\n".join(lines)


def _default_upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False).clamp_min(0)


@dataclass
class RankingExplanation:
    """Each query's top-k gallery matches, ranked by the target's distance and explained by AMD.

    Attributes:
        indices: ``(Q,K)`` gallery indices of the matches, best first (``-1``: no match left, see
            :func:`topk_matches`).
        distance: ``(Q,K)`` target distances (``inf`` for an empty slot).
        reconstructed: ``(Q,K)`` interpreter distances ``d_hat``.
        contributions: ``(Q,K,M)`` per-attribute contributions (sum: ``d_hat``).
        attribute_names, attribute_labels: The ``M`` names and readable labels.
        query_ids: ``(Q,)`` identities of the queries, or ``None``.
        gallery_ids: ``(Q,K)`` identities of the matches (``-1`` for an empty slot), or ``None``.
        correct: ``(Q,K)`` whether a match has the query's identity (``None`` without ids).
        query_maps: ``(Q,M,h,w)`` low-resolution maps of the queries, or ``None``.
        match_maps: ``(U,M,h,w)`` low-resolution maps of the distinct matched gallery images, or ``None``
            when the gallery index stores no maps and no gallery images were given.
        match_slots: ``(Q,K)`` row of :attr:`match_maps` of each match (``-1`` for an empty slot).
        image_size: ``(H,W)`` the maps are brought to by :meth:`maps`.
        query_images, gallery_images: The images, kept by reference for :meth:`plot` (or ``None``).
        n_attributes: Top attributes per match in :meth:`top_attributes` and :meth:`to_dict`.
        upsample: ``(maps (B,K,h,w), (H,W)) -> (B,K,H,W)``: the adapter's geometry (bilinear by default).
        extras: Anything else; :meth:`~reidexplain.Explainer.explain_ranking` records its wall-clock
            seconds there (``"seconds"``: ``embed_gallery``, ``embed_queries``, ``ranking``, ``maps``).

    Examples:
        >>> import torch
        >>> r = RankingExplanation(torch.tensor([[2, 0]]), torch.tensor([[0.5, 0.9]]), torch.tensor([[0.5, 0.8]]),
        ...                        torch.tensor([[[0.4, 0.1], [0.2, 0.6]]]), ("hat", "bag"))
        >>> r.num_queries, r.top_k, r.top_attributes(0, 1)
        (1, 2, [('bag', 0.6000000238418579, 0.75), ('hat', 0.20000000298023224, 0.25)])
        >>> r.why(0, 1).ranked(1)[0][0]
        'bag'
    """

    indices: torch.Tensor
    distance: torch.Tensor
    reconstructed: torch.Tensor
    contributions: torch.Tensor
    attribute_names: tuple[str, ...]
    attribute_labels: tuple[str, ...] | None = None
    query_ids: torch.Tensor | None = None
    gallery_ids: torch.Tensor | None = None
    correct: torch.Tensor | None = None
    query_maps: torch.Tensor | None = None
    match_maps: torch.Tensor | None = None
    match_slots: torch.Tensor | None = None
    image_size: tuple[int, int] | None = None
    query_images: torch.Tensor | None = field(default=None, repr=False)
    gallery_images: torch.Tensor | None = field(default=None, repr=False)
    n_attributes: int = 3
    upsample: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor] = field(
        default=_default_upsample, repr=False, compare=False)
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        q, k = self.indices.shape
        m = len(self.attribute_names)
        self.attribute_names = tuple(self.attribute_names)
        self.attribute_labels = tuple(self.attribute_labels) if self.attribute_labels else self.attribute_names
        for name, shape in (("distance", (q, k)), ("reconstructed", (q, k)), ("contributions", (q, k, m))):
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name}: expected shape {shape}, got {tuple(getattr(self, name).shape)}")
        if self.match_maps is not None and (self.match_slots is None or tuple(self.match_slots.shape) != (q, k)):
            raise ValueError(f"match_slots: expected shape {(q, k)} with match_maps")

    # ------------------------------------------------------------------ access
    @property
    def num_queries(self) -> int:
        """``Q``."""
        return int(self.indices.shape[0])

    @property
    def top_k(self) -> int:
        """``K``: matches per query."""
        return int(self.indices.shape[1])

    @property
    def shares(self) -> torch.Tensor:
        """``(Q,K,M)`` shares of ``d_hat``; they sum to 1 over ``M`` (0 for an empty slot)."""
        return shares_of(self.contributions)

    @property
    def valid(self) -> torch.Tensor:
        """``(Q,K)``: whether the slot holds a match."""
        return self.indices >= 0

    @property
    def has_maps(self) -> bool:
        """Whether the matches' maps are available (the queries' always are when computed here)."""
        return self.match_maps is not None

    def _check(self, query: int, rank: int | None = None) -> None:
        if not 0 <= query < self.num_queries:
            raise IndexError(f"query_index: expected 0 <= query_index < {self.num_queries}, got {query}")
        if rank is not None and not 0 <= rank < self.top_k:
            raise IndexError(f"rank: expected 0 <= rank < {self.top_k}, got {rank}")

    def top_attributes(self, query: int, rank: int, n: int | None = None) -> list[tuple[str, float, float]]:
        """``(label, contribution, share)`` of the ``n`` (default :attr:`n_attributes`) leading attributes.

        Args:
            query: The query's index.
            rank: The match's rank (0: the best match).
            n: How many attributes.
        """
        self._check(query, rank)
        c = self.contributions[query, rank]
        s = self.shares[query, rank]
        order = torch.argsort(c, descending=True, stable=True)[: self.n_attributes if n is None else n].tolist()
        return [(self.attribute_labels[k], float(c[k]), float(s[k])) for k in order]

    def why(self, i: int, j: int, query_index: int = 0) -> RankComparison:
        """Why match ``i`` is ranked above match ``j`` (ranks, 0-based) for query ``query_index``.

        Returns:
            A :class:`RankComparison`: per attribute ``c_k(j) - c_k(i)``, positive where the attribute
            supports the order; they sum to ``d_hat_j - d_hat_i``.

        Raises:
            IndexError: a rank or query out of range.
            ValueError: an empty slot.
        """
        self._check(query_index, i)
        self._check(query_index, j)
        if not (self.valid[query_index, i] and self.valid[query_index, j]):
            raise ValueError(f"why: query {query_index} has no match at rank {i if not self.valid[query_index, i] else j}")
        diff = self.contributions[query_index, j] - self.contributions[query_index, i]
        return RankComparison(query_index, i, j, float(self.distance[query_index, i]),
                              float(self.distance[query_index, j]),
                              float(self.reconstructed[query_index, j] - self.reconstructed[query_index, i]),
                              self.attribute_names, self.attribute_labels, diff.detach().cpu())

    def maps(self, query_index: int = 0, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The maps of each match's ``n`` leading attributes, at image size, for one query.

        Returns:
            ``(attributes, query_maps, match_maps)``: ``(K,n)`` attribute indices, and the query's and the
            matches' maps of those attributes, ``(K,n,H,W)`` each (zeros for an empty slot).

        Raises:
            ValueError: the maps are not available (a gallery index without maps, and no gallery images).
        """
        self._check(query_index)
        if self.query_maps is None or self.match_maps is None or self.image_size is None:
            raise ValueError("maps: this ranking has no maps of the matches: the gallery index stores none; "
                             "pass gallery_images= to explain_ranking to compute them for the top-k only, "
                             "or build the index with store_maps=True")
        n = self.n_attributes if n is None else n
        top = torch.argsort(self.contributions[query_index], dim=1, descending=True, stable=True)[:, :n]
        slots = self.match_slots[query_index]
        q_low = self.query_maps[query_index][top]  # (K,n,h,w)
        if self.match_maps.shape[0] == 0:  # no query has any match left
            g_low = torch.zeros_like(q_low)
        else:
            g_low = self.match_maps[slots.clamp_min(0)[:, None], top] * (slots >= 0)[:, None, None, None]
        return top, self.upsample(q_low, self.image_size), self.upsample(g_low, self.image_size)

    # ------------------------------------------------------------------ export
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: per query, its matches (rank, gallery index, distances, correct, top attributes).

        Examples:
            >>> import json, torch
            >>> r = RankingExplanation(torch.tensor([[1]]), torch.tensor([[0.5]]), torch.tensor([[0.5]]),
            ...                        torch.tensor([[[0.5, 0.0]]]), ("hat", "bag"))
            >>> d = json.loads(json.dumps(r.to_dict()))
            >>> d["queries"][0]["matches"][0]["top_attributes"][0]["name"]
            'hat'
        """
        def num(x: torch.Tensor) -> float | None:
            v = float(x)
            return v if math.isfinite(v) else None

        shares = self.shares
        queries = []
        for qi in range(self.num_queries):
            matches = []
            for r in range(self.top_k):
                if not self.valid[qi, r]:
                    continue
                c = self.contributions[qi, r]
                order = torch.argsort(c, descending=True, stable=True)[: self.n_attributes].tolist()
                matches.append({
                    "rank": r + 1, "gallery_index": int(self.indices[qi, r]),
                    "distance": num(self.distance[qi, r]), "reconstructed": num(self.reconstructed[qi, r]),
                    "gallery_id": None if self.gallery_ids is None else int(self.gallery_ids[qi, r]),
                    "correct": None if self.correct is None else bool(self.correct[qi, r]),
                    "top_attributes": [{"name": self.attribute_names[k], "label": self.attribute_labels[k],
                                        "contribution": float(c[k]), "share": float(shares[qi, r, k])}
                                       for k in order],
                })
            queries.append({"query": qi, "query_id": None if self.query_ids is None else int(self.query_ids[qi]),
                            "matches": matches})
        return {"format": "reidexplain.RankingExplanation", "format_version": 1, "top_k": self.top_k,
                "attribute_names": list(self.attribute_names), "attribute_labels": list(self.attribute_labels),
                "maps": "stored" if self.has_maps else "not stored", "queries": queries}

    def save_json(self, path: str | Path) -> bool:
        """Write :meth:`to_dict` to ``path`` as JSON; a ranking merged from shards is written by rank 0 only.

        A ranking against a sharded gallery (``extras["shard"]``, see
        :meth:`reidexplain.Explainer.explain_ranking`) is the same on every process, so only the process
        of rank 0 writes it; the others return ``False`` without touching ``path``.

        Returns:
            Whether the file was written.

        Examples:
            >>> import dataclasses, tempfile, torch
            >>> r = RankingExplanation(torch.tensor([[1]]), torch.tensor([[0.5]]), torch.tensor([[0.5]]),
            ...                        torch.tensor([[[0.5, 0.0]]]), ("hat", "bag"))
            >>> on_rank_1 = dataclasses.replace(r, extras={"shard": {"rank": 1, "world": 2}})
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     r.save_json(f"{tmp}/a.json"), on_rank_1.save_json(f"{tmp}/b.json")
            (True, False)
        """
        if int(self.extras.get("shard", {}).get("rank", 0)) != 0:
            return False
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return True

    def plot(self, query_index: int = 0, **kwargs: Any) -> tuple[Any, Any]:
        """Draw the query and its matches in a row; see :func:`plot_ranking`."""
        return plot_ranking(self, query_index, **kwargs)


# ---------------------------------------------------------------------------------------- figure
def plot_ranking(ranking: RankingExplanation, query_index: int = 0, *, query_images: torch.Tensor | None = None,
                 gallery_images: torch.Tensor | None = None, alpha_overlay: float = 0.5,
                 fontsize: float = 7, title: str | None = None) -> tuple[Any, np.ndarray]:
    """The query and its top-k matches in a row, each match with its leading attribute's map.

    The query is drawn first (with the map of the attribute that leads its best match); every match
    shows its rank, distance, leading attribute and share, with that attribute's map blended over it
    (Captum's blended heat map, as :func:`reidexplain.visualization.compare` draws AMD maps). With
    identities, a green frame marks a correct match and a red one a wrong match.

    Args:
        ranking: The ranking.
        query_index: Which query.
        query_images: Query images to draw when the ranking does not hold them.
        gallery_images: Gallery images to draw when the ranking does not hold them (a ranking against
            a gallery index reloaded without its images).
        alpha_overlay: Opacity of the maps.
        fontsize: Font size of the titles.
        title: Figure title.

    Returns:
        ``(fig, axes)``: a :class:`~matplotlib.figure.Figure` (no window is opened) and a 1-D array of
        ``K + 1`` axes (the query, then the matches).

    Raises:
        ValueError: no images to draw.
        IndexError: ``query_index`` out of range.
    """
    from captum.attr import visualization as captum_viz
    from matplotlib.figure import Figure

    ranking._check(query_index)
    q_images = query_images if query_images is not None else ranking.query_images
    g_images = gallery_images if gallery_images is not None else ranking.gallery_images
    if q_images is None or g_images is None:
        raise ValueError("plot: the ranking holds no images (a gallery index has none); pass "
                         "query_images= and gallery_images=")
    k = ranking.top_k
    fig = Figure(figsize=(1.05 * (k + 1), 2.6), layout="constrained")
    axes = np.array([fig.add_subplot(1, k + 1, i + 1) for i in range(k + 1)], dtype=object)
    have_maps = ranking.has_maps and ranking.query_maps is not None
    if have_maps:
        top, q_maps, g_maps = ranking.maps(query_index, n=1)

    def draw(ax: Any, image: torch.Tensor, heat: torch.Tensor | None) -> None:
        img = image.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
        if heat is None or float(heat.abs().max()) == 0.0:
            ax.imshow(img)
        else:
            captum_viz.visualize_image_attr(heat.detach().float().cpu().numpy()[:, :, None].astype(np.float64),
                                            img, method="blended_heat_map", sign="absolute_value",
                                            plt_fig_axis=(fig, ax), use_pyplot=False, outlier_perc=2,
                                            alpha_overlay=alpha_overlay)
        ax.set_xticks([])
        ax.set_yticks([])

    qid = "" if ranking.query_ids is None else f"\nid {int(ranking.query_ids[query_index])}"
    first = ranking.valid[query_index, 0]
    draw(axes[0], q_images[query_index], q_maps[0, 0] if have_maps and first else None)
    lead = ""
    if have_maps and first:
        lead = "\n" + textwrap.shorten(ranking.attribute_labels[int(top[0, 0])], 14, placeholder=".")
    axes[0].set_title(f"query{qid}{lead}", fontsize=fontsize)
    for spine in axes[0].spines.values():
        spine.set_edgecolor("#1f77b4")
        spine.set_linewidth(2.5)
    for r in range(k):
        ax = axes[r + 1]
        if not ranking.valid[query_index, r]:
            ax.axis("off")
            continue
        gi = int(ranking.indices[query_index, r])
        label, _, share = ranking.top_attributes(query_index, r, 1)[0]
        draw(ax, g_images[gi], g_maps[r, 0] if have_maps else None)
        ax.set_title(f"#{r + 1} d={float(ranking.distance[query_index, r]):.3g}\n"
                     f"{textwrap.shorten(label, 14, placeholder='.')}\n{100 * share:.0f}%", fontsize=fontsize)
        if ranking.correct is not None:
            colour = "#2ca02c" if bool(ranking.correct[query_index, r]) else "#d62728"
            for spine in ax.spines.values():
                spine.set_edgecolor(colour)
                spine.set_linewidth(3)
    if not have_maps:
        fig.supxlabel("no maps stored for the matches", fontsize=fontsize)
    if title:
        fig.suptitle(title, fontsize=fontsize * 1.3)
    return fig, axes


# ---------------------------------------------------------------------------------------- assembly
def explain_topk(query_embeddings: torch.Tensor, query_components: torch.Tensor, index: GalleryIndex, top_k: int,
                 *, query_ids: torch.Tensor | None = None, query_camids: torch.Tensor | None = None,
                 exclude_same_camera: bool = True, max_memory_mb: float | None = None,
                 progress: bool = False) -> tuple[torch.Tensor, Decomposition]:
    """Top-k matches of every query against ``index`` and their decomposition (pure tensor arithmetic).

    :func:`topk_matches` on the embeddings, then :func:`pair_component_distances` for the ``Q x K``
    survivors only, then :func:`~reidexplain.decomposition.decompose`.

    Args:
        query_embeddings: ``(Q,D)``.
        query_components: ``(Q,M,D')``.
        index: The gallery.
        top_k: Matches per query.
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
        contributions in empty slots).

    Examples:
        >>> import torch
        >>> index = GalleryIndex(torch.eye(3), torch.eye(3)[:, None].repeat(1, 2, 1), None, None, None,
        ...                      ("a", "b"), "euclidean", "f00", (8, 4))
        >>> idx, parts = explain_topk(torch.eye(3)[:1] * 0.9, torch.eye(3)[:1, None].repeat(1, 2, 1), index, 2)
        >>> idx.tolist(), tuple(parts.contributions.shape)
        ([[0, 1]], (1, 2, 2))
    """
    exclude = exclude_same_camera and all(t is not None for t in (query_ids, query_camids, index.ids, index.camids))
    dist, idx = topk_matches(query_embeddings, index.embeddings, top_k, index.metric,
                             query_ids=query_ids if exclude else None,
                             query_camids=query_camids if exclude else None,
                             gallery_ids=index.ids if exclude else None,
                             gallery_camids=index.camids if exclude else None,
                             max_memory_mb=max_memory_mb, progress=progress)
    dk = pair_component_distances(query_components, index.components, idx, index.metric, max_memory_mb, progress)
    return idx, decompose(dist, dk)


# ---------------------------------------------------------------------------------------- shards
def _process_group() -> tuple[int, int]:
    """``(world, rank)`` of the initialised default process group, else ``(1, 0)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def _comm_device(fallback: torch.device) -> torch.device:
    """Where the collectives' tensors must live: the current CUDA device for NCCL, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu") if fallback.type != "cpu" else fallback


def _all_gather(t: torch.Tensor) -> torch.Tensor:
    """``(W, *t.shape)``: every process's ``t`` (same shape and dtype on all), in rank order."""
    device = _comm_device(t.device)
    local = t.detach().to(device).contiguous()
    parts = [torch.empty_like(local) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, local)
    return torch.stack(parts).to(t.device)


def _all_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over the processes of ``t`` (same shape on all)."""
    device = _comm_device(t.device)
    local = t.detach().to(device).contiguous()
    torch.distributed.all_reduce(local)
    return local.to(t.device)


def shard_bounds(size: int, rank: int, world: int) -> tuple[int, int]:
    """``(start, stop)`` of process ``rank``'s contiguous part of ``size`` entries cut into ``world`` parts.

    The parts follow each other in rank order and their sizes differ by at most one.

    Raises:
        ValueError: ``world < 1`` or ``rank`` not in ``[0, world)``.

    Examples:
        >>> [shard_bounds(10, r, 3) for r in range(3)]
        [(0, 3), (3, 6), (6, 10)]
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"rank: expected 0 <= rank < world, got rank {rank} of world {world}")
    return size * rank // world, size * (rank + 1) // world


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

    ``meta``: ``(W, 8)`` rows ``(offset, size, total, queries, top_k, maps, ids, camids)``.
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
                         (7, "gallery camids (some shards have them)")):
        if len({row[column] for row in rows}) > 1:
            raise ValueError(f"explain_ranking on a sharded gallery: the processes differ in their {what}: "
                             f"{[row[column] for row in rows]}")
    if expected != rows[0][2]:
        raise ValueError(f"gallery index: the shards hold {expected} entries, the gallery has {rows[0][2]}")


def explain_topk_sharded(query_embeddings: torch.Tensor, query_components: torch.Tensor, index: GalleryIndex,
                         top_k: int, *, query_ids: torch.Tensor | None = None,
                         query_camids: torch.Tensor | None = None, exclude_same_camera: bool = True,
                         max_memory_mb: float | None = None,
                         progress: bool = False) -> tuple[torch.Tensor, Decomposition, torch.Tensor | None]:
    """:func:`explain_topk` against a gallery cut into shards, one per process: the whole gallery's top-k.

    A collective: every process of the default process group calls it with the same queries and its own
    shard (:meth:`GalleryIndex.shard`); a whole index (not a shard) is ranked in this process alone. Each process ranks the queries against its shard
    (:func:`explain_topk`, ``min(top_k, shard size)`` matches), the processes exchange their ``(Q,k)``
    distances, global gallery indices, ``(Q,k,M)`` component distances and matched ids
    (``all_gather``), and every process keeps the ``top_k`` best of the ``world x k`` candidates by
    :func:`merge_candidates`: by distance, ties by global gallery index, the order
    :func:`topk_matches` gives on the whole gallery, so every process gets that same ranking. The
    component distances of a pair are computed by the process that holds the gallery image, with the
    same arithmetic as in one process.

    Args:
        query_embeddings: ``(Q,D)``, the same on every process.
        query_components: ``(Q,M,D')``, the same on every process.
        index: This process's shard, or a whole index.
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
            gallery.

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
        idx, parts = explain_topk(query_embeddings, query_components, index, top_k, query_ids=query_ids,
                                  query_camids=query_camids, exclude_same_camera=exclude_same_camera,
                                  max_memory_mb=max_memory_mb, progress=progress)
        ids = None if index.ids is None else torch.where(idx.cpu() >= 0, index.ids[idx.clamp_min(0).cpu()], -1)
        return idx, parts, ids
    if world == 1:
        raise ValueError(f"gallery index: a shard (entries {index.offset}..{index.offset + len(index) - 1} of "
                         f"{index.total}) needs the other processes' shards; call explain_ranking in every "
                         "process of a torch.distributed group (torchrun)")
    device = query_embeddings.device
    q, m = query_embeddings.shape[0], query_components.shape[1]
    meta = torch.tensor([index.offset, len(index), index.total, q, top_k, index.maps is not None,
                         index.ids is not None, index.camids is not None], dtype=torch.long)
    _check_shards(_all_gather(meta))
    if not 1 <= top_k <= index.total:
        raise ValueError(f"top_k: expected 1 <= top_k <= {index.total} (the gallery's size), got {top_k}")
    dist = torch.full((q, top_k), math.inf, device=device)
    dk = torch.zeros(q, top_k, m, device=device)
    gidx = torch.full((q, top_k), -1, dtype=torch.long, device=device)
    mids = torch.full((q, top_k), -1, dtype=torch.long, device=device)
    local_k = min(top_k, len(index))
    if local_k > 0:
        idx, parts = explain_topk(query_embeddings, query_components, index, local_k, query_ids=query_ids,
                                  query_camids=query_camids, exclude_same_camera=exclude_same_camera,
                                  max_memory_mb=max_memory_mb, progress=progress)
        valid = idx >= 0
        dist[:, :local_k] = parts.distance
        dk[:, :local_k] = parts.component_distances
        gidx[:, :local_k] = torch.where(valid, idx + index.offset, -1)
        if index.ids is not None:
            mids[:, :local_k] = torch.where(valid, index.ids.to(device)[idx.clamp_min(0)], -1)
    # (W,Q,K,...) -> (Q, W*K, ...): every process's candidates of each query, rank after rank.
    floats = _all_gather(torch.cat([dist[..., None], dk], dim=-1)).permute(1, 0, 2, 3).reshape(q, -1, m + 1)
    longs = _all_gather(torch.stack([gidx, mids], dim=-1)).permute(1, 0, 2, 3).reshape(q, -1, 2)
    pos = merge_candidates(floats[..., 0], longs[..., 0], top_k)
    floats = floats.gather(1, pos[..., None].expand(-1, -1, m + 1))
    longs = longs.gather(1, pos[..., None].expand(-1, -1, 2))
    return longs[..., 0], decompose(floats[..., 0], floats[..., 1:]), (longs[..., 1] if index.ids is not None
                                                                       else None)


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


def _unique_slots(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct valid gallery indices ``(U,)`` and the row of each slot in them ``(Q,K)`` (-1: empty)."""
    valid = indices >= 0
    used = torch.unique(indices[valid])
    slots = torch.searchsorted(used, indices.clamp_min(0).contiguous())
    return used, torch.where(valid, slots, torch.full_like(slots, -1))


def _iter_images(gallery: Any) -> Iterable[tuple[torch.Tensor, Any, Any]]:
    """``(images, ids, camids)`` per batch of a tensor or of an iterable of tensors / dicts / tuples."""
    if isinstance(gallery, torch.Tensor):
        yield gallery, None, None
        return
    for batch in gallery:
        if isinstance(batch, torch.Tensor):
            yield batch, None, None
        elif isinstance(batch, dict):
            yield batch["image"], batch.get("pid"), batch.get("camid")
        elif isinstance(batch, Sequence) and batch and isinstance(batch[0], torch.Tensor):
            yield batch[0], (batch[1] if len(batch) > 1 else None), (batch[2] if len(batch) > 2 else None)
        else:
            raise TypeError(f"gallery: expected image tensors, dicts with 'image' or tuples (images, ids, camids), "
                            f"got a batch of type {type(batch).__name__}")
