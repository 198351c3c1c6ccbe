"""The results of a ranking: :class:`RankingExplanation` (each query's explained top-k) and
:class:`RankComparison` (why one match ranks above another). They hold tensors; they compute no ranking.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._resize import upsample_maps
from ..attribution import summary_text
from ..decomposition import shares_of
from .plot import plot_ranking

__all__ = ["RankComparison", "RankingExplanation"]

# ---------------------------------------------------------------------------------------- results
@dataclass
class RankComparison:
    """Why match ``i`` ranks above match ``j`` for one query: the difference of their contributions.

    ``differences[k] = c_k(query, match j) - c_k(query, match i)``: positive where attribute ``k`` puts
    match ``j`` farther from the query than match ``i`` (it supports the order), negative where it works
    against it. With AMD's rule the differences sum to ``d_hat_j - d_hat_i``; with the linear rule
    (``amd-subspace``, ``amd-linear``) they sum, with :attr:`unexplained_gap`, to ``d_j - d_i``.

    Attributes:
        query: The query's index.
        i, j: The two ranks (0-based).
        distance_i, distance_j: Target distances of the two matches.
        reconstructed_gap: ``d_hat_j - d_hat_i``.
        attribute_names, attribute_labels: The ``M`` names and labels.
        differences: ``(M,)`` per-attribute differences.
        unexplained_gap: ``u_j - u_i``, the difference of the two matches' unexplained parts (the part of
            the gap no attribute accounts for), for a ranking that has them; else ``None``.

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
    unexplained_gap: float | None = None

    def ranked(self, n: int | None = None) -> list[tuple[str, float]]:
        """``(label, difference)`` sorted by difference, largest (most in favour of the order) first."""
        order = torch.argsort(self.differences, descending=True, stable=True).tolist()
        return [(self.attribute_labels[k], float(self.differences[k])) for k in order[:n]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the ranks, distances and the sorted per-attribute differences."""
        order = torch.argsort(self.differences, descending=True, stable=True).tolist()
        out = {"query": self.query, "i": self.i, "j": self.j, "distance_i": self.distance_i,
               "distance_j": self.distance_j, "reconstructed_gap": self.reconstructed_gap,
               "attributes": [{"name": self.attribute_names[k], "label": self.attribute_labels[k],
                               "difference": float(self.differences[k])} for k in order]}
        if self.unexplained_gap is not None:
            out["unexplained_gap"] = self.unexplained_gap
        return out

    def __str__(self) -> str:
        unexplained = "" if self.unexplained_gap is None else f", unexplained gap {self.unexplained_gap:+.4g}"
        lines = [f"query {self.query}: match {self.i} (d = {self.distance_i:.4g}) above match {self.j} "
                 f"(d = {self.distance_j:.4g}); d_hat gap {self.reconstructed_gap:+.4g}{unexplained}"]
        lines += [f"  {label}: {value:+.4g}" for label, value in self.ranked(5)]
        return "\n".join(lines)


def _default_upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return upsample_maps(maps, size)


@dataclass
class RankingExplanation:
    """Each query's top-k gallery matches, ranked by the target's distance and explained by AMD.

    Attributes:
        indices: ``(Q,K)`` gallery indices of the matches, best first (``-1``: no match left, see
            :func:`topk_matches`).
        distance: ``(Q,K)`` target distances (``inf`` for an empty slot).
        reconstructed: ``(Q,K)`` interpreter distances ``d_hat``.
        contributions: ``(Q,K,M)`` per-attribute contributions: with AMD's rule non-negative, summing to
            ``d_hat``; with the linear rule (``amd-subspace``, ``amd-linear``) signed, summing with
            :attr:`unexplained` to ``distance``.
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
        unexplained: ``(Q,K)`` the part of each match's distance no attribute accounts for
            (``distance - contributions.sum(-1)``, 0 for an empty slot) under the linear rule; ``None``
            for AMD's rule, which has no such part.

    Examples:
        >>> import torch
        >>> r = RankingExplanation(torch.tensor([[2, 0]]), torch.tensor([[0.5, 0.9]]), torch.tensor([[0.5, 0.8]]),
        ...                        torch.tensor([[[0.4, 0.1], [0.2, 0.6]]]), ("hat", "bag"))
        >>> r.num_queries, r.top_k, r.top_attributes(0, 1)
        (1, 2, [('bag', 0.6000000238418579, 0.75), ('hat', 0.20000000298023224, 0.25)])
        >>> r.why(0, 1).ranked(1)[0][0]
        'bag'
        >>> linear = RankingExplanation(torch.tensor([[2]]), torch.tensor([[2.0]]), torch.tensor([[1.8]]),
        ...                             torch.tensor([[[0.8, 0.4]]]), ("upper red", "backpack"),
        ...                             unexplained=torch.tensor([[0.8]]))
        >>> linear.summary(0, 0)
        'mostly upper red (40 %) and backpack (20 %); 40 % unexplained'
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
    unexplained: torch.Tensor | None = None

    def __post_init__(self) -> None:
        q, k = self.indices.shape
        m = len(self.attribute_names)
        self.attribute_names = tuple(self.attribute_names)
        self.attribute_labels = tuple(self.attribute_labels) if self.attribute_labels else self.attribute_names
        for name, shape in (("distance", (q, k)), ("reconstructed", (q, k)), ("contributions", (q, k, m)),
                            ("unexplained", (q, k))):
            if getattr(self, name) is not None and tuple(getattr(self, name).shape) != shape:
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
        """``(Q,K,M)`` shares per attribute (0 for an empty slot): of ``d_hat``, summing to 1 over ``M``
        (AMD's rule), or, with an unexplained part, ``contributions / distance``: signed, summing to 1
        with :attr:`unexplained_share`."""
        if self.unexplained is None:
            return shares_of(self.contributions)
        return self.contributions / self.distance.clamp_min(1e-12).unsqueeze(-1)

    @property
    def unexplained_share(self) -> torch.Tensor | None:
        """``(Q,K)`` :attr:`unexplained` over the distance (0 for an empty slot; ``None`` without an
        unexplained part)."""
        if self.unexplained is None:
            return None
        return torch.where(self.valid, self.unexplained / self.distance.clamp_min(1e-12),
                           torch.zeros_like(self.unexplained))

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

        The share is of :attr:`shares`: of ``d_hat`` (AMD's rule) or, signed, of the distance (linear
        rule; the rest is :attr:`unexplained_share`).

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

    def summary(self, query_index: int = 0, rank: int = 0, k: int = 2) -> str:
        """One line in words for a match: its leading attributes and their shares, and the unexplained part.

        Worded as :meth:`reidexplain.attribution.PairAttribution.summary`
        (:func:`~reidexplain.attribution.summary_text`): "mostly upper red (41 %) and backpack (18 %);
        22 % unexplained".

        Args:
            query_index: The query's index.
            rank: The match's rank (0: the best match).
            k: How many leading attributes (only those with a positive share are named).

        Raises:
            IndexError: a rank or query out of range.
        """
        self._check(query_index, rank)
        if not self.valid[query_index, rank]:
            return "no match"
        rest = None if self.unexplained is None else float(self.unexplained_share[query_index, rank])
        leading = self.top_attributes(query_index, rank, k)
        return summary_text([(label, share) for label, _, share in leading], rest)

    def why(self, i: int, j: int, query_index: int = 0) -> RankComparison:
        """Why match ``i`` is ranked above match ``j`` (ranks, 0-based) for query ``query_index``.

        Returns:
            A :class:`RankComparison`: per attribute ``c_k(j) - c_k(i)``, positive where the attribute
            supports the order; they sum to ``d_hat_j - d_hat_i`` (AMD's rule), or, with the comparison's
            ``unexplained_gap`` ``u_j - u_i``, to ``d_j - d_i`` (linear rule).

        Raises:
            IndexError: a rank or query out of range.
            ValueError: an empty slot.
        """
        self._check(query_index, i)
        self._check(query_index, j)
        if not (self.valid[query_index, i] and self.valid[query_index, j]):
            raise ValueError(f"why: query {query_index} has no match at rank {i if not self.valid[query_index, i] else j}")
        diff = self.contributions[query_index, j] - self.contributions[query_index, i]
        gap = None if self.unexplained is None else \
            float(self.unexplained[query_index, j] - self.unexplained[query_index, i])
        return RankComparison(query_index, i, j, float(self.distance[query_index, i]),
                              float(self.distance[query_index, j]),
                              float(self.reconstructed[query_index, j] - self.reconstructed[query_index, i]),
                              self.attribute_names, self.attribute_labels, diff.detach().cpu(), gap)

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

        With an unexplained part (linear rule), every match also has ``"unexplained"`` and
        ``"unexplained_share"``, and its attributes' shares are signed shares of the distance.

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

        shares, unexplained_share = self.shares, self.unexplained_share
        queries = []
        for qi in range(self.num_queries):
            matches = []
            for r in range(self.top_k):
                if not self.valid[qi, r]:
                    continue
                c = self.contributions[qi, r]
                order = torch.argsort(c, descending=True, stable=True)[: self.n_attributes].tolist()
                match = {
                    "rank": r + 1, "gallery_index": int(self.indices[qi, r]),
                    "distance": num(self.distance[qi, r]), "reconstructed": num(self.reconstructed[qi, r]),
                    "gallery_id": None if self.gallery_ids is None else int(self.gallery_ids[qi, r]),
                    "correct": None if self.correct is None else bool(self.correct[qi, r]),
                    "top_attributes": [{"name": self.attribute_names[k], "label": self.attribute_labels[k],
                                        "contribution": float(c[k]), "share": float(shares[qi, r, k])}
                                       for k in order],
                }
                if self.unexplained is not None:
                    match.update(unexplained=num(self.unexplained[qi, r]),
                                 unexplained_share=num(unexplained_share[qi, r]))
                matches.append(match)
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
