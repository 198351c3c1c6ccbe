"""Localisation metrics: does an explanation map look where the attributes really are?

The synthetic persons know, for every image, which pixels carry which attribute (``masks``, bool
``(M,H,W)``). These functions score one map per image against one ground-truth mask per image:

* :func:`pointing_game` -- is the map's peak inside the mask? (Zhang et al., 2016)
* :func:`relevance_mass` -- which fraction of the map's positive mass lies inside the mask?
  (Arras et al., 2022)

and two helpers implement the fair comparison of AMD-SPEC section 10: every method (one map per image)
is scored on the union of the masks of the attributes that differ between the two persons
(:func:`exclusive_union_mask`), and AMD's per-attribute maps are scored per attribute
(:func:`per_attribute_localization`).

Images whose mask is empty have no ground truth: their score is ``NaN``, and :func:`reduce_scores`
averages over the others. All functions are vectorised over the batch; none needs a gradient.

Examples:
    >>> import torch
    >>> heat = torch.zeros(2, 4, 4); heat[0, 1, 1] = 1.0; heat[1, 3, 3] = 1.0
    >>> mask = torch.zeros(2, 4, 4, dtype=torch.bool); mask[:, :2, :2] = True
    >>> pointing_game(heat, mask)
    tensor([1., 0.])
    >>> relevance_mass(heat, mask)
    tensor([1., 0.])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .._checks import normalize_labels
from ._metric_checks import as_tensor, check_binary, check_heatmaps, check_masks

__all__ = [
    "pointing_game",
    "relevance_mass",
    "reduce_scores",
    "exclusive_union_mask",
    "per_attribute_localization",
    "dilate_masks",
]

_TIES = ("first", "any", "expected")


def _check_tolerance(tolerance: object) -> float:
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)):
        raise TypeError(f"`tolerance`: expected a number of pixels, got {type(tolerance).__name__}")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f"`tolerance`: expected a finite number >= 0 (pixels), got {tolerance}")
    return float(tolerance)


def dilate_masks(masks: torch.Tensor, tolerance: float) -> torch.Tensor:
    """Grow bool masks ``(B,H,W)`` by a disc: keep every pixel within ``tolerance`` pixels of the mask.

    A pixel ``p`` is kept if some mask pixel ``q`` has ``||p - q||_2 <= tolerance`` (Euclidean distance
    between pixel centres), the usual pointing-game tolerance (15 px in Zhang et al. at 224 px).

    Args:
        masks: Bool ``(B,H,W)``.
        tolerance: Radius in pixels, ``>= 0``; ``0`` returns the masks unchanged.

    Returns:
        Bool ``(B,H,W)``.

    Raises:
        ValueError: negative or non-finite ``tolerance``, or ``masks`` not 3-D.

    Examples:
        >>> m = torch.zeros(1, 5, 5, dtype=torch.bool); m[0, 2, 2] = True
        >>> int(dilate_masks(m, 1).sum()), int(dilate_masks(m, 1.5).sum())
        (5, 9)
    """
    radius = _check_tolerance(tolerance)
    masks = check_binary(as_tensor(masks, "masks"), "masks")
    if masks.dim() != 3:
        raise ValueError(f"`masks`: expected shape (B,H,W), got {tuple(masks.shape)}")
    r = int(math.floor(radius))
    if r == 0:
        return masks
    offsets = torch.arange(-r, r + 1, dtype=torch.float32)
    disc = (offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2
    # A convolution with the disc counts mask pixels within reach; any count > 0 is a hit.
    counts = F.conv2d(masks[:, None].float(), disc[None, None].float(), padding=r)
    return counts[:, 0] > 0.5


def pointing_game(
    heatmaps: torch.Tensor,
    masks: torch.Tensor,
    tolerance: float = 0,
    ties: str = "first",
) -> torch.Tensor:
    r"""Pointing game: 1 if the map's maximum lies inside the (dilated) mask, else 0.

    $$
    \mathrm{hit}_i = \mathbb{1}\left[\arg\max_p h_i(p) \in \mathrm{dilate}(m_i, \tau)\right]
    $$

    The maximum is the most *positive* value (signed maps are not made absolute: a negative
    attribution argues against the distance). Ties between maximal pixels, common with flat or clipped
    maps, are resolved by ``ties``:

    * ``"first"`` (default): the first maximal pixel in row-major order (what ``argmax`` returns);
      deterministic, but a constant map then "points" at the top-left corner.
    * ``"any"``: a hit if any maximal pixel is inside. Beware: a constant map always hits.
    * ``"expected"``: the fraction of maximal pixels inside the mask, i.e. the expected hit under a
      uniformly random tie break; a constant map scores the mask's area fraction (chance level).
      The result is then in ``[0, 1]`` instead of ``{0, 1}``.

    Args:
        heatmaps: ``(B,1,H,W)`` or ``(B,H,W)`` maps, finite.
        masks: Bool (or 0/1) ``(B,H,W)`` ground-truth regions.
        tolerance: Radius in pixels by which the masks are grown (:func:`dilate_masks`). Default: 0.
        ties: ``"first"``, ``"any"`` or ``"expected"``. Default: ``"first"``.

    Returns:
        Float ``(B,)``: 1.0 for a hit, 0.0 for a miss, ``NaN`` where the mask is empty (no ground
        truth; skipped by :func:`reduce_scores`). Higher is better.

    Raises:
        TypeError: an input is not a tensor, or ``tolerance`` is not a number.
        ValueError: wrong shapes, non-binary masks, negative ``tolerance`` or unknown ``ties``.

    Examples:
        >>> heat = torch.tensor([[[0.0, 0.2, 0.9, 0.1]]])  # (B=1, H=1, W=4)
        >>> mask = torch.tensor([[[False, True, False, False]]])
        >>> pointing_game(heat, mask), pointing_game(heat, mask, tolerance=1)
        (tensor([0.]), tensor([1.]))
    """
    h = check_heatmaps(heatmaps)
    m = check_masks(masks, tuple(h.shape), "masks")
    if ties not in _TIES:
        raise ValueError(f"`ties`: expected one of {_TIES}, got {ties!r}")
    empty = ~m.flatten(1).any(dim=1)
    inside = dilate_masks(m, tolerance).flatten(1)
    flat = h.flatten(1)
    is_max = flat == flat.amax(dim=1, keepdim=True)
    if ties == "first":
        position = torch.arange(flat.shape[1]).expand_as(flat)
        first = torch.where(is_max, position, flat.shape[1]).amin(dim=1, keepdim=True)
        score = inside.gather(1, first)[:, 0].float()
    elif ties == "any":
        score = (is_max & inside).any(dim=1).float()
    else:
        score = (is_max & inside).sum(dim=1).float() / is_max.sum(dim=1).float()
    return score.masked_fill(empty, float("nan"))


pointing_game.higher_is_better = True  # type: ignore[attr-defined]


def relevance_mass(heatmaps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    r"""Relevance mass accuracy: the fraction of the map's positive mass that lies inside the mask.

    $$
    \mathrm{RMA}_i = \frac{\sum_{p \in m_i} \max(h_i(p), 0)}{\sum_p \max(h_i(p), 0)}
    $$

    Only the positive part of a signed map counts (the evidence *for* the distance); a map with no
    positive value scores 0 (it points nowhere). Unlike the pointing game it rewards maps that put all
    their mass, not just their peak, on the right region; a uniform map scores the mask's area
    fraction.

    Args:
        heatmaps: ``(B,1,H,W)`` or ``(B,H,W)`` maps, finite.
        masks: Bool (or 0/1) ``(B,H,W)`` ground-truth regions.

    Returns:
        Float ``(B,)`` in ``[0, 1]``; ``NaN`` where the mask is empty. Higher is better.

    Raises:
        TypeError: an input is not a tensor.
        ValueError: wrong shapes or non-binary masks.

    Examples:
        >>> heat = torch.tensor([[[3.0, 1.0, -5.0, 0.0]]])
        >>> mask = torch.tensor([[[True, False, True, False]]])
        >>> relevance_mass(heat, mask)
        tensor([0.7500])
    """
    h = check_heatmaps(heatmaps)
    m = check_masks(masks, tuple(h.shape), "masks")
    positive = h.clamp_min(0).flatten(1)
    total = positive.sum(dim=1)
    inside = (positive * m.flatten(1)).sum(dim=1)
    score = torch.where(total > 0, inside / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)
    return score.masked_fill(~m.flatten(1).any(dim=1), float("nan"))


relevance_mass.higher_is_better = True  # type: ignore[attr-defined]


def reduce_scores(scores: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Reduce per-image scores, skipping ``NaN`` (images without ground truth).

    Args:
        scores: Any shape, typically ``(B,)`` from :func:`pointing_game` or :func:`relevance_mass`.
        reduction: ``"mean"`` (``NaN`` if every score is ``NaN``), ``"sum"``, or ``"none"``.
            Default: ``"mean"``.

    Returns:
        A 0-d tensor, or ``scores`` unchanged for ``"none"``.

    Raises:
        TypeError: ``scores`` is not a tensor.
        ValueError: unknown ``reduction``.

    Examples:
        >>> reduce_scores(torch.tensor([1.0, float("nan"), 0.0, 1.0]))
        tensor(0.6667)
    """
    scores = as_tensor(scores, "scores")
    if reduction == "none":
        return scores
    if reduction == "mean":
        return torch.nanmean(scores.float())
    if reduction == "sum":
        return torch.nansum(scores.float())
    raise ValueError(f"`reduction`: expected one of ('mean', 'sum', 'none'), got {reduction!r}")


def exclusive_union_mask(
    attrs_a: torch.Tensor, attrs_b: torch.Tensor, masks: torch.Tensor
) -> torch.Tensor:
    """Union of the masks of the attributes on which two persons differ, for one image of each pair.

    This is the ground truth on which every method is scored in the fair comparison of AMD-SPEC
    section 10: a single-map method (a Captum baseline, or AMD's share-weighted heat map) should look
    at what makes the two persons different, i.e. at the exclusive attributes ``a XOR b``.

    Args:
        attrs_a: ``(B,M)`` 0/1 attributes of the images whose masks are given.
        attrs_b: ``(B,M)`` 0/1 attributes of their partners.
        masks: Bool ``(B,M,H,W)`` per-attribute masks of the ``attrs_a`` images.

    Returns:
        Bool ``(B,H,W)``; all False for a pair without exclusive attributes (e.g. same identity), which
        the localisation metrics then skip as ``NaN``.

    Raises:
        TypeError: an input is not a tensor.
        ValueError: shapes disagree or labels are not binary.

    Examples:
        >>> masks = torch.zeros(1, 3, 2, 2, dtype=torch.bool)
        >>> masks[0, 0, 0, 0] = masks[0, 1, 1, 1] = masks[0, 2, 0, 1] = True
        >>> exclusive_union_mask(torch.tensor([[1, 0, 1]]), torch.tensor([[0, 0, 1]]), masks)
        tensor([[[ True, False],
                 [False, False]]])
    """
    a = normalize_labels(as_tensor(attrs_a, "attrs_a"), name="attrs_a")
    b = normalize_labels(as_tensor(attrs_b, "attrs_b"), num_attributes=a.shape[1], name="attrs_b")
    if a.shape != b.shape:
        raise ValueError(f"`attrs_b`: expected the shape of `attrs_a` {tuple(a.shape)}, got {tuple(b.shape)}")
    masks = as_tensor(masks, "masks")
    if masks.dim() != 4 or tuple(masks.shape[:2]) != tuple(a.shape):
        raise ValueError(
            f"`masks`: expected shape ({a.shape[0]}, {a.shape[1]}, H, W), got {tuple(masks.shape)}"
        )
    masks = check_binary(masks, "masks")
    exclusive = a != b
    return (masks & exclusive[:, :, None, None]).any(dim=1)


def per_attribute_localization(
    maps: torch.Tensor,
    masks: torch.Tensor,
    select: torch.Tensor | None = None,
    tolerance: float = 0,
    ties: str = "first",
) -> dict[str, torch.Tensor]:
    """Localisation of per-attribute maps (AMD's attribute maps), per attribute.

    Map ``k`` of image ``i`` is scored against mask ``k`` of image ``i`` with :func:`pointing_game`
    and :func:`relevance_mass`; scores are then averaged over the images selected for attribute ``k``
    (typically those where ``k`` is exclusive to the pair, or simply present: a map of an absent
    attribute has no ground truth). Images whose mask ``k`` is empty are skipped as well.

    Args:
        maps: ``(B,M,H,W)`` one map per attribute.
        masks: Bool ``(B,M,H,W)`` ground truth per attribute.
        select: Bool ``(B,M)``, which ``(image, attribute)`` cells to score. Default: all.
        tolerance: Pointing-game tolerance in pixels. Default: 0.
        ties: Pointing-game tie rule (see :func:`pointing_game`). Default: ``"first"``.

    Returns:
        ``{"pointing": (M,), "relevance_mass": (M,), "count": (M,)}``: mean scores per attribute
        (``NaN`` where no image counted) and the number of images that counted (int64).

    Raises:
        TypeError: an input is not a tensor.
        ValueError: shapes disagree or masks are not binary.

    Examples:
        >>> maps = torch.zeros(2, 2, 2, 2); maps[:, 0, 0, 0] = 1.0; maps[:, 1, 0, 0] = 1.0
        >>> masks = torch.zeros(2, 2, 2, 2, dtype=torch.bool)
        >>> masks[:, 0, 0, 0] = True; masks[:, 1, 1, 1] = True
        >>> out = per_attribute_localization(maps, masks, select=torch.tensor([[1, 1], [1, 0]]))
        >>> out["pointing"], out["count"]
        (tensor([1., 0.]), tensor([2, 1]))
    """
    maps = as_tensor(maps, "maps")
    if maps.dim() != 4:
        raise ValueError(f"`maps`: expected shape (B,M,H,W), got {tuple(maps.shape)}")
    batch, num_attrs, height, width = maps.shape
    masks = check_masks(masks, tuple(maps.shape), "masks")
    if select is None:
        select = torch.ones(batch, num_attrs, dtype=torch.bool)
    select = check_masks(select, (batch, num_attrs), "select")
    flat_maps = maps.reshape(batch * num_attrs, height, width)
    flat_masks = masks.reshape(batch * num_attrs, height, width)
    out: dict[str, torch.Tensor] = {}
    for key, scores in (
        ("pointing", pointing_game(flat_maps, flat_masks, tolerance=tolerance, ties=ties)),
        ("relevance_mass", relevance_mass(flat_maps, flat_masks)),
    ):
        scores = scores.reshape(batch, num_attrs).masked_fill(~select, float("nan"))
        out[key] = torch.nanmean(scores, dim=0)
        out["count"] = (~torch.isnan(scores)).sum(dim=0)
    return out
