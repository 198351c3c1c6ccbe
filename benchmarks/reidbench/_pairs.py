"""Pairs of different people with at least one exclusive attribute, and their ground truth."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from reidexplain.data import SyntheticPersons

__all__ = ["PairSet", "sample_pairs", "build_pair_set"]


def sample_pairs(query_pids: Sequence[int], gallery_pids: Sequence[int], query_attrs: torch.Tensor,
                 gallery_attrs: torch.Tensor, num_pairs: int, seed: int = 0,
                 exclude: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """Seeded query x gallery pairs of two different people that differ in at least one attribute.

    Queries are visited in a random order, each with one random eligible gallery image, so the pairs
    spread over as many queries as possible; when ``num_pairs`` exceeds the queries, the order is
    drawn again. Pairs in ``exclude`` (and duplicates) are never returned.

    Args:
        query_pids: Person ids of the query images.
        gallery_pids: Person ids of the gallery images.
        query_attrs: ``(Q,M)`` 0/1 labels of the queries.
        gallery_attrs: ``(G,M)`` 0/1 labels of the gallery.
        num_pairs: How many pairs to draw.
        seed: Seed of the draw.
        exclude: ``(query_index, gallery_index)`` pairs not to draw again.

    Returns:
        ``num_pairs`` ``(query_index, gallery_index)`` tuples, or fewer if fewer are eligible.

    Raises:
        ValueError: ``num_pairs < 1`` or label shapes that do not match the ids.

    Examples:
        >>> import torch
        >>> attrs = torch.tensor([[0, 1], [1, 1], [0, 1]])
        >>> sorted(sample_pairs([0, 1, 2], [0, 1, 2], attrs, attrs, 10))  # only 4 pairs differ
        [(0, 1), (1, 0), (1, 2), (2, 1)]
    """
    if isinstance(num_pairs, bool) or not isinstance(num_pairs, int) or num_pairs < 1:
        raise ValueError(f"num_pairs: expected an int >= 1, got {num_pairs!r}")
    qp = torch.as_tensor(list(query_pids))
    gp = torch.as_tensor(list(gallery_pids))
    if query_attrs.shape[0] != len(qp) or gallery_attrs.shape[0] != len(gp):
        raise ValueError(f"attributes: expected {len(qp)} query and {len(gp)} gallery rows, got "
                         f"{query_attrs.shape[0]} and {gallery_attrs.shape[0]}")
    eligible = (qp[:, None] != gp[None, :]) & (query_attrs[:, None, :] != gallery_attrs[None, :, :]).any(-1)
    for q, g in exclude:
        eligible[q, g] = False
    rng = np.random.default_rng(seed)
    pairs: list[tuple[int, int]] = []
    while len(pairs) < num_pairs and bool(eligible.any()):
        for q in rng.permutation(len(qp)).tolist():
            candidates = eligible[q].nonzero()[:, 0]
            if len(candidates) == 0:
                continue
            g = int(candidates[int(rng.integers(len(candidates)))])
            eligible[q, g] = False
            pairs.append((q, g))
            if len(pairs) == num_pairs:
                break
    return pairs


@dataclass
class PairSet:
    """Images, labels and masks of ``P`` pairs ``(a_i, b_i)``: ``a`` from the query, ``b`` from the gallery.

    Attributes:
        pairs: The ``(query_index, gallery_index)`` of every pair.
        images_a, images_b: ``(P,3,H,W)``.
        attrs_a, attrs_b: ``(P,M)`` float 0/1 labels.
        masks_a, masks_b: Bool ``(P,M,H,W)`` where each attribute is decided in each image.

    Examples:
        >>> import torch
        >>> images, masks = torch.zeros(1, 3, 8, 4), torch.ones(1, 2, 8, 4, dtype=torch.bool)
        >>> ps = PairSet([(0, 3)], images, images, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]),
        ...              masks, masks)
        >>> len(ps), ps.exclusive.tolist()
        (1, [[True, False]])
    """

    pairs: list[tuple[int, int]]
    images_a: torch.Tensor
    images_b: torch.Tensor
    attrs_a: torch.Tensor
    attrs_b: torch.Tensor
    masks_a: torch.Tensor
    masks_b: torch.Tensor

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def exclusive(self) -> torch.Tensor:
        """Bool ``(P,M)``: the attributes in which the two persons of each pair differ."""
        return self.attrs_a != self.attrs_b

    def chunk(self, start: int, stop: int) -> PairSet:
        """The pairs ``start .. stop - 1`` as a new :class:`PairSet`."""
        sl = slice(start, stop)
        return PairSet(self.pairs[sl], self.images_a[sl], self.images_b[sl], self.attrs_a[sl],
                       self.attrs_b[sl], self.masks_a[sl], self.masks_b[sl])


def build_pair_set(query_set: SyntheticPersons, gallery_set: SyntheticPersons,
                   pairs: Sequence[tuple[int, int]]) -> PairSet:
    """Render the images and masks of ``pairs`` (datasets created with ``with_masks=True``).

    Args:
        query_set: Dataset the first index of every pair points into.
        gallery_set: Dataset the second index points into.
        pairs: ``(query_index, gallery_index)`` tuples.

    Returns:
        A :class:`PairSet`.

    Raises:
        ValueError: empty ``pairs``, or datasets without masks.

    Examples:
        >>> from reidexplain.data import synthetic_splits
        >>> splits = synthetic_splits(1, 3, 2, image_size=(64, 32))
        >>> ps = build_pair_set(splits["query"], splits["gallery"], [(0, 1)])
        >>> ps.masks_a.shape
        torch.Size([1, 26, 64, 32])
    """
    if not pairs:
        raise ValueError("pairs: expected at least one pair, got none")
    items_a = [query_set[q] for q, _ in pairs]
    items_b = [gallery_set[g] for _, g in pairs]
    if "masks" not in items_a[0] or "masks" not in items_b[0]:
        raise ValueError("query_set, gallery_set: expected datasets created with with_masks=True")

    def stack(items: list, key: str) -> torch.Tensor:
        return torch.stack([it[key] for it in items])

    return PairSet(list(pairs), stack(items_a, "image"), stack(items_b, "image"),
                   stack(items_a, "attributes"), stack(items_b, "attributes"),
                   stack(items_a, "masks").bool(), stack(items_b, "masks").bool())
