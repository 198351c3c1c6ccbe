r"""Faithfulness of a map to a pair distance: deletion and insertion curves (after RISE).

Petsiuk et al. (RISE, 2018) score a saliency map for a classifier by deleting pixels in the map's
order (the class score should fall fast) or inserting them into a blurred canvas (it should rise fast).
A ReID model outputs no class score but a distance ``d(a, b)`` between two persons, and the map of
image ``a`` claims to show what in ``a`` makes it differ from ``b``. The analogue used here:

* **deletion**: replace the pixels of ``a``, most relevant first, by a baseline; the distance to the
  fixed partner ``b`` should **fall** fast. Area under the normalised curve: lower is better.
* **insertion**: start from the baseline image and reveal the pixels of ``a``, most relevant first;
  the distance should **rise** fast towards ``d(a, b)``. Area: higher is better.

Curves are normalised by the distance of the unmodified pair ``d(a, b)`` (the first deletion point,
the last insertion point), so a deletion curve starts at 1 and an insertion curve ends at 1 and pairs
of different distance weigh the same in a mean.

Why the default baseline is the **partner** ``b`` itself (``baseline="partner"``): a classifier has a
neutral input (a blurred or grey image carries no class), a pair distance has none -- a grey image is
itself far from ``b``, often farther than ``a``, so deleting *any* pixels of ``a`` towards grey may
raise the distance, whatever the map says, and an insertion from grey starts at an arbitrary distance.
Pasting ``b``'s pixels at the same positions instead removes exactly the differences between the two
images: pixels where ``a`` and ``b`` agree change nothing, the deletion curve ends at ``d(b, b) = 0``
and the insertion curve starts there. A map is thus rewarded for ranking first the pixels that make the
model see two different persons. ReID crops are roughly aligned (upright pedestrians in detector boxes
of a fixed aspect ratio), so co-located pixels show comparable body parts; for badly misaligned pairs
the intermediate images are collages, but the end points stay exact. ``"blur"``, ``"mean"``,
``"zero"`` or a tensor are offered for comparison with the classification literature; their end
points differ per pair but not per method, so methods stay comparable on the same pairs.

The model enters only through ``distance_fn(images, index) -> (N,)``: the distance of each (modified)
image ``images[n]`` to the fixed partner of pair ``index[n]``. The pair index is passed because the
perturbed images of several pairs are evaluated together in chunks of ``batch_size``;
:func:`partner_distance_fn` builds such a function from a model and the partners' embeddings.

Examples:
    >>> import torch
    >>> a, b = torch.zeros(1, 3, 8, 4), torch.ones(1, 3, 8, 4)
    >>> weight = torch.zeros(8, 4); weight[:4] = 1.0  # a toy "model" that only looks at the top half
    >>> def dist(x, idx):
    ...     return ((x - b[idx]).abs().sum(1) * weight).flatten(1).sum(1)
    >>> good, bad = weight[None], 1.0 - weight[None]
    >>> curve = deletion_curve(dist, a, good, partner=b, steps=4)
    >>> curve, deletion_auc(curve)
    (tensor([[48., 24.,  0.,  0.,  0.]]), tensor([0.2500]))
    >>> deletion_auc(deletion_curve(dist, a, bad, partner=b, steps=4))
    tensor([0.7500])
    >>> insertion_auc(insertion_curve(dist, a, good, partner=b, steps=4))
    tensor([0.7500])
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn

from .._checks import check_embeddings
from ..distance import check_metric, pair_distance
from ._metric_checks import as_tensor
from ._perturbation import gaussian_blur, perturbation_curve

__all__ = [
    "DistanceFn",
    "partner_distance_fn",
    "deletion_curve",
    "insertion_curve",
    "curve_auc",
    "deletion_auc",
    "insertion_auc",
    "gaussian_blur",
]

DistanceFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``distance_fn(images (N,3,H,W), index (N,) int64) -> (N,)``: distance of ``images[n]`` to the
partner of pair ``index[n]``."""

def partner_distance_fn(
    model: nn.Module, partner_embeddings: torch.Tensor, metric: str = "euclidean"
) -> DistanceFn:
    """Build a :data:`DistanceFn` from a model and the embeddings of the fixed partners.

    Args:
        model: Maps ``(N,3,H,W)`` images to ``(N,D)`` embeddings; called as is (put it in eval mode).
        partner_embeddings: ``(B,D)``, the embedding of the partner of each pair.
        metric: ``"euclidean"`` or ``"cosine"``. Default: ``"euclidean"``.

    Returns:
        ``fn(images, index) = pair_distance(model(images), partner_embeddings[index], metric)``.

    Raises:
        TypeError: ``partner_embeddings`` is not a tensor.
        ValueError: ``partner_embeddings`` is not 2-D, or an unknown ``metric``.

    Examples:
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 2, 5))
        >>> b = torch.rand(3, 3, 4, 2)
        >>> fn = partner_distance_fn(model, model(b).detach())
        >>> fn(b[[2, 0]], torch.tensor([2, 0])).shape
        torch.Size([2])
    """
    check_metric(metric)
    partners = as_tensor(partner_embeddings, "partner_embeddings")
    if partners.dim() != 2:
        raise ValueError(f"`partner_embeddings`: expected shape (B,D), got {tuple(partners.shape)}")

    def distance_fn(images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        emb = check_embeddings(model(images), images.shape[0])
        return pair_distance(emb, partners[index].to(emb.device), metric)

    return distance_fn


def deletion_curve(
    distance_fn: DistanceFn,
    images: torch.Tensor,
    heatmaps: torch.Tensor,
    partner: torch.Tensor | None = None,
    steps: int = 20,
    baseline: str | torch.Tensor = "partner",
    batch_size: int = 64,
    blur_sigma: float | None = None,
    patch_size: int | tuple[int, int] = 1,
    progress: bool = False,
) -> torch.Tensor:
    r"""Distance to the partner while the pixels of ``a`` are replaced, most relevant first.

    With ``P = H*W`` pixels (or ``P`` patches, by their mean map value) ranked by decreasing map value
    (ties: row-major order) and ``k_t = floor(t P / T)`` for ``t = 0..T``:

    $$
    D_t = d\big(a \odot (1 - M_t) + \beta \odot M_t,\; b\big),
    $$

    where ``M_t`` marks the ``k_t`` top-ranked pixels (all channels) and ``beta`` is the baseline
    image. ``D_0 = d(a, b)``; with the partner baseline ``D_T = d(b, b) = 0``.

    Pixel-wise swaps of a noisy map build high-frequency collages that a CNN may find farther from
    ``b`` than ``a`` itself (the curve then rises above 1); ``patch_size`` (e.g. 8 at 128x64) swaps
    whole patches and keeps the intermediate images closer to natural ones.

    Args:
        distance_fn: ``(images (N,3,H,W), index (N,)) -> (N,)`` distance of each image to the partner
            of pair ``index[n]`` (see :func:`partner_distance_fn`). Called under ``torch.no_grad``.
        images: ``(B,3,H,W)`` the explained images ``a``.
        heatmaps: ``(B,1,H,W)`` or ``(B,H,W)`` their maps (signed maps: rank by signed value).
        partner: ``(B,3,H,W)`` the partner images ``b``; needed for ``baseline="partner"``.
        steps: Number ``T`` of steps; the curve has ``T + 1`` points. Default: 20.
        baseline: ``"partner"`` (paste ``b``'s pixels), ``"blur"`` (a Gaussian blur of ``a``),
            ``"mean"`` (``a``'s mean colour), ``"zero"``, or a tensor broadcastable to the images.
            Default: ``"partner"``.
        batch_size: Perturbed images per call of ``distance_fn``. Default: 64.
        blur_sigma: Std in pixels of the ``"blur"`` baseline. Default: ``0.1 * min(H, W)``.
        patch_size: Replace square (``int``) or ``(height, width)`` patches ranked by their mean map
            value instead of single pixels. Default: 1 (pixels).
        progress: Show a progress bar. Default: False.

    Returns:
        ``(B, T + 1)`` float32 distances (not normalised; see :func:`deletion_auc`).

    Raises:
        TypeError: ``distance_fn`` is not callable, or an input is not a tensor.
        ValueError: shapes disagree, ``steps``/``batch_size`` < 1, unknown ``baseline``, missing
            ``partner``, or ``distance_fn`` returns the wrong shape.

    Examples:
        >>> a, b = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
        >>> dist = lambda x, idx: (x - b[idx]).abs().flatten(1).sum(1)
        >>> deletion_curve(dist, a, torch.rand(1, 2, 2), partner=b, steps=2)
        tensor([[12.,  6.,  0.]])
    """
    return perturbation_curve(distance_fn, images, heatmaps, partner, steps, baseline, batch_size,
                               blur_sigma, progress, insertion=False, patch_size=patch_size)


def insertion_curve(
    distance_fn: DistanceFn,
    images: torch.Tensor,
    heatmaps: torch.Tensor,
    partner: torch.Tensor | None = None,
    steps: int = 20,
    baseline: str | torch.Tensor = "partner",
    batch_size: int = 64,
    blur_sigma: float | None = None,
    patch_size: int | tuple[int, int] = 1,
    progress: bool = False,
) -> torch.Tensor:
    r"""Distance to the partner while the pixels of ``a`` are revealed on the baseline, most relevant first.

    $$
    I_t = d\big(\beta \odot (1 - M_t) + a \odot M_t,\; b\big),
    $$

    with ``M_t`` as in :func:`deletion_curve`. ``I_T = d(a, b)``; with the partner baseline
    ``I_0 = d(b, b) = 0``. For a distance that is a sum over pixels, ``D_t + I_t = d(a, b)`` with the
    partner baseline; for real networks the two curves carry different information (interactions).

    Args:
        distance_fn: As in :func:`deletion_curve`.
        images: ``(B,3,H,W)`` the explained images ``a``.
        heatmaps: ``(B,1,H,W)`` or ``(B,H,W)`` their maps.
        partner: ``(B,3,H,W)`` the partner images; needed for ``baseline="partner"``.
        steps: Number ``T`` of steps. Default: 20.
        baseline: As in :func:`deletion_curve`. Default: ``"partner"``.
        batch_size: Perturbed images per call of ``distance_fn``. Default: 64.
        blur_sigma: Std in pixels of the ``"blur"`` baseline. Default: ``0.1 * min(H, W)``.
        patch_size: Replace square (``int``) or ``(height, width)`` patches ranked by their mean map
            value instead of single pixels. Default: 1 (pixels).
        progress: Show a progress bar. Default: False.

    Returns:
        ``(B, T + 1)`` float32 distances (not normalised; see :func:`insertion_auc`).

    Raises:
        TypeError: ``distance_fn`` is not callable, or an input is not a tensor.
        ValueError: as in :func:`deletion_curve`.

    Examples:
        >>> a, b = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
        >>> dist = lambda x, idx: (x - b[idx]).abs().flatten(1).sum(1)
        >>> insertion_curve(dist, a, torch.rand(1, 2, 2), partner=b, steps=2)
        tensor([[ 0.,  6., 12.]])
    """
    return perturbation_curve(distance_fn, images, heatmaps, partner, steps, baseline, batch_size,
                               blur_sigma, progress, insertion=True, patch_size=patch_size)


def curve_auc(curve: torch.Tensor, normalize: str = "none") -> torch.Tensor:
    r"""Area under curves sampled at ``T + 1`` evenly spaced fractions ``0, 1/T, .., 1`` (trapezoid rule).

    $$
    \mathrm{AUC} = \frac{1}{T} \Big( \sum_{t=0}^{T} c_t - \frac{c_0 + c_T}{2} \Big)
    $$

    Args:
        curve: ``(B, T + 1)`` with ``T >= 1``.
        normalize: Divide each curve first by its first point (``"first"``, deletion: ``d(a, b)``),
            its last point (``"last"``, insertion: ``d(a, b)``), or not (``"none"``).
            Default: ``"none"``.

    Returns:
        ``(B,)`` areas; ``NaN`` where the normalising value is 0 (``a`` and ``b`` already identical for
        the model).

    Raises:
        TypeError: ``curve`` is not a tensor.
        ValueError: ``curve`` not ``(B, T+1)`` with ``T >= 1``, or unknown ``normalize``.

    Examples:
        >>> curve_auc(torch.tensor([[4.0, 2.0, 0.0]]), normalize="first")
        tensor([0.5000])
    """
    curve = as_tensor(curve, "curve")
    if curve.dim() != 2 or curve.shape[1] < 2:
        raise ValueError(f"`curve`: expected shape (B, T+1) with T >= 1, got {tuple(curve.shape)}")
    curve = curve.float()
    if normalize in ("first", "last"):
        ref = curve[:, 0 if normalize == "first" else -1]
        curve = torch.where(ref[:, None] != 0, curve / ref[:, None], float("nan"))
    elif normalize != "none":
        raise ValueError(f"`normalize`: expected one of ('none', 'first', 'last'), got {normalize!r}")
    steps = curve.shape[1] - 1
    return (curve.sum(dim=1) - 0.5 * (curve[:, 0] + curve[:, -1])) / steps


def deletion_auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under a :func:`deletion_curve` divided by ``d(a, b)`` (its first point). Lower is better.

    A faithful map ranks first the pixels that make the model see two different persons, so the
    distance falls fast: with the partner baseline the normalised curve goes from 1 to 0 and its area
    lies in ``[0, 1]`` for a distance that only decreases (it can exceed 1 when intermediate collages
    look farther from ``b`` than ``a`` does). A random order gives about the area of a straight line,
    0.5, for a distance that is a sum over pixels.

    Args:
        curve: ``(B, T + 1)`` from :func:`deletion_curve`.

    Returns:
        ``(B,)``; ``NaN`` where ``d(a, b) = 0``.

    Examples:
        >>> deletion_auc(torch.tensor([[2.0, 0.5, 0.0]]))
        tensor([0.3750])
    """
    return curve_auc(curve, normalize="first")


deletion_auc.higher_is_better = False  # type: ignore[attr-defined]


def insertion_auc(curve: torch.Tensor) -> torch.Tensor:
    """Area under an :func:`insertion_curve` divided by ``d(a, b)`` (its last point). Higher is better.

    A faithful map reveals first the pixels that make ``a`` differ from ``b``, so the distance rises
    fast from ``d(b, b) = 0`` (partner baseline) towards ``d(a, b)``.

    Args:
        curve: ``(B, T + 1)`` from :func:`insertion_curve`.

    Returns:
        ``(B,)``; ``NaN`` where ``d(a, b) = 0``.

    Examples:
        >>> insertion_auc(torch.tensor([[0.0, 1.5, 2.0]]))
        tensor([0.6250])
    """
    return curve_auc(curve, normalize="last")


insertion_auc.higher_is_better = True  # type: ignore[attr-defined]
