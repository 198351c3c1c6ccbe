r"""Causal metrics: does an explanation agree with what the *model* does, not just with the labels?

X-mAP (AMD-SPEC section 6) checks that the attributes an explainer ranks first are those the labels
say differ. Labels are not the model: a model may ignore a hat that the labels mark as different. The
synthetic renderer can re-render a person with one attribute flipped (same pose, camera and light),
which measures what each attribute does to the model's distance. Three functions use it:

* :func:`counterfactual_effects` -- the change of the pair distance when one attribute of image ``a``
  is flipped: $\Delta_k = |d(a^{(k)}, b) - d(a, b)|$;
* :func:`causal_agreement` -- Spearman rank correlation, per pair, between an explainer's
  per-attribute contributions and those effects (higher is better);
* :func:`attribute_sensitivity` -- which attributes the model uses at all: the mean embedding
  change of a one-attribute flip relative to the distance between two photos of the same person.

Examples:
    >>> import torch
    >>> contributions = torch.tensor([[0.5, 0.3, 0.1, 0.0]])
    >>> effects = torch.tensor([[0.9, 0.4, 0.2, 0.1]])
    >>> causal_agreement(contributions, effects)
    tensor([1.])
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from .._checks import check_images
from .._progress import progress_bar
from ._metric_checks import as_tensor, check_masks

__all__ = [
    "spearman_correlation",
    "causal_agreement",
    "counterfactual_effects",
    "attribute_sensitivity",
    "AttributeSensitivity",
]


def _average_ranks(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    # Pairwise comparisons are O(M^2) per row, cheap for M <= ~100 attributes and fully vectorised.
    others = valid[:, None, :]
    smaller = ((x[:, None, :] < x[:, :, None]) & others).sum(dim=-1)
    equal = ((x[:, None, :] == x[:, :, None]) & others).sum(dim=-1)
    # 1-based rank of the first tied element is smaller + 1, of the last smaller + equal: take the mean.
    return smaller + (equal + 1) / 2.0


def spearman_correlation(
    x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    r"""Spearman rank correlation of each row of ``x`` with the same row of ``y``, over valid entries.

    Ranks are computed among the valid entries of a row, ties get their average rank, and the result is
    the Pearson correlation of the ranks:

    $$
    \rho = \frac{\sum_k (r_k - \bar r)(s_k - \bar s)}
        {\sqrt{\sum_k (r_k - \bar r)^2 \sum_k (s_k - \bar s)^2}}
    $$

    Args:
        x: ``(B,M)`` scores.
        y: ``(B,M)`` scores.
        valid: Bool ``(B,M)``, the entries to use. Default: where both are finite.

    Returns:
        ``(B,)`` float32 in ``[-1, 1]``; ``NaN`` where fewer than 2 entries are valid or either row is
        constant over them.

    Raises:
        TypeError: an input is not a tensor.
        ValueError: shapes disagree, or a valid entry is not finite.

    Examples:
        >>> spearman_correlation(torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[30.0, 20.0, 10.0]]))
        tensor([-1.])
    """
    x = as_tensor(x, "x")
    y = as_tensor(y, "y")
    if x.dim() != 2:
        raise ValueError(f"`x`: expected shape (B,M), got {tuple(x.shape)}")
    if y.shape != x.shape:
        raise ValueError(f"`y`: expected the shape of `x` {tuple(x.shape)}, got {tuple(y.shape)}")
    x, y = x.double(), y.double()
    if valid is None:
        valid = torch.isfinite(x) & torch.isfinite(y)
    else:
        valid = check_masks(valid, tuple(x.shape), "valid")
        if not (torch.isfinite(x[valid]).all() and torch.isfinite(y[valid]).all()):
            raise ValueError("`valid`: some valid entries are NaN or inf; mark them invalid")
    x = torch.where(valid, x, 0.0)
    y = torch.where(valid, y, 0.0)
    count = valid.sum(dim=1).double()
    n = count.clamp_min(1.0)[:, None]
    rx = torch.where(valid, _average_ranks(x, valid), 0.0)
    ry = torch.where(valid, _average_ranks(y, valid), 0.0)
    cx = torch.where(valid, rx - rx.sum(dim=1, keepdim=True) / n, 0.0)
    cy = torch.where(valid, ry - ry.sum(dim=1, keepdim=True) / n, 0.0)
    sxx, syy = (cx * cx).sum(dim=1), (cy * cy).sum(dim=1)
    # Ranks are multiples of 1/2, so a constant row gives an exactly zero spread.
    defined = (count >= 2) & (sxx > 0) & (syy > 0)
    rho = (cx * cy).sum(dim=1) / (sxx * syy).sqrt().clamp_min(1e-300)
    return torch.where(defined, rho.clamp(-1.0, 1.0), float("nan")).float()


def causal_agreement(
    contributions: torch.Tensor, effects: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Per pair, the Spearman correlation between the explainer's contributions and the model's effects.

    ``contributions[i, k]`` is what the explainer says attribute ``k`` adds to the distance of pair
    ``i`` (AMD's ``c_k``, or any per-attribute score); ``effects[i, k]`` is what flipping ``k`` does to
    the model's distance (:func:`counterfactual_effects`). A rank correlation is used because the two are
    in different units (a share of ``d_hat`` against a change of ``d``) and only their order is
    comparable. 1: the explainer orders the attributes exactly as the model reacts to them; 0: no
    relation. Computed over the attributes whose effect was measured for that pair (``valid``).

    Args:
        contributions: ``(B,M)`` per-attribute contributions.
        effects: ``(B,M)`` counterfactual distance changes.
        valid: Bool ``(B,M)``, the sampled attributes. Default: where both are finite (so the ``NaN`` of
            unmeasured effects are skipped).

    Returns:
        ``(B,)`` in ``[-1, 1]``; ``NaN`` where fewer than 2 attributes are valid or either side is
        constant over them. Higher is better.

    Raises:
        TypeError: an input is not a tensor.
        ValueError: shapes disagree, or a valid entry is not finite.

    Examples:
        >>> causal_agreement(torch.tensor([[0.1, 0.2, 0.7]]), torch.tensor([[0.0, 0.3, 0.2]]))
        tensor([0.5000])
    """
    contributions = as_tensor(contributions, "contributions")
    effects = as_tensor(effects, "effects")
    if contributions.dim() != 2:
        raise ValueError(f"`contributions`: expected shape (B,M), got {tuple(contributions.shape)}")
    if effects.shape != contributions.shape:
        raise ValueError(
            f"`effects`: expected the shape of `contributions` {tuple(contributions.shape)}, "
            f"got {tuple(effects.shape)}"
        )
    return spearman_correlation(contributions, effects, valid)


causal_agreement.higher_is_better = True  # type: ignore[attr-defined]


def _checked_distances(out: object, expected: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (expected,):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"`distance_fn`: expected a tensor of shape ({expected},), got {got}")
    return out.detach().float().cpu()


def counterfactual_effects(
    distance_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    flipped: torch.Tensor,
    valid: torch.Tensor | None = None,
    signed: bool = False,
    batch_size: int = 64,
    progress: bool = False,
) -> torch.Tensor:
    r"""Change of each pair's distance when one attribute of image ``a`` is flipped.

    $$
    \Delta_{ik} = \big| d(a_i^{(k)}, b_i) - d(a_i, b_i) \big|
    $$

    where ``a_i^{(k)}`` is ``a_i`` re-rendered with attribute ``k`` flipped and everything else (pose,
    camera, light) unchanged, and ``b_i`` the fixed partner. The renderer is not called here: pass its
    images (``dataset.render(identity, nuisance, flip=name)`` for the synthetic persons).

    Args:
        distance_fn: ``(images (N,3,H,W), index (N,)) -> (N,)``, the distance of ``images[n]`` to the
            partner of pair ``index[n]`` (as in :func:`~reidexplain.metrics.faithfulness.deletion_curve`).
            Called under ``torch.no_grad``.
        images: ``(B,3,H,W)`` the original images ``a``.
        flipped: ``(B,M,3,H,W)``, ``flipped[i, k]`` is ``a_i`` with attribute ``k`` flipped.
        valid: Bool ``(B,M)``, the flips to evaluate (the others are not computed). Default: all.
        signed: Return ``d(a^{(k)}, b) - d(a, b)`` instead of its absolute value. Default: False.
        batch_size: Images per call of ``distance_fn``. Default: 64.
        progress: Show a progress bar. Default: False.

    Returns:
        ``(B,M)`` float32 effects, ``NaN`` where not ``valid``.

    Raises:
        TypeError: ``distance_fn`` is not callable, or an input is not a tensor.
        ValueError: shapes disagree, ``batch_size`` < 1, or ``distance_fn`` returns the wrong shape.

    Examples:
        >>> a, b = torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2)
        >>> flipped = torch.stack([a.clone(), a.clone()], dim=1); flipped[0, 1, :, 0, 0] = 1.0
        >>> dist = lambda x, idx: (x - b[idx]).abs().flatten(1).sum(1)
        >>> counterfactual_effects(dist, a, flipped)
        tensor([[0., 3.]])
    """
    if not callable(distance_fn):
        raise TypeError(
            f"`distance_fn`: expected a callable (images, index) -> (N,), got {type(distance_fn).__name__}"
        )
    images = check_images(images, "images")
    flipped = as_tensor(flipped, "flipped")
    batch = images.shape[0]
    if flipped.dim() != 5 or flipped.shape[0] != batch or flipped.shape[2:] != images.shape[1:]:
        raise ValueError(
            f"`flipped`: expected shape ({batch}, M, {', '.join(map(str, images.shape[1:]))}), "
            f"got {tuple(flipped.shape)}"
        )
    num_attrs = flipped.shape[1]
    if valid is None:
        valid = torch.ones(batch, num_attrs, dtype=torch.bool)
    valid = check_masks(valid, (batch, num_attrs), "valid")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size`: expected an int >= 1, got {batch_size!r}")

    pair_idx, attr_idx = valid.nonzero(as_tuple=True)
    effects = torch.full((batch, num_attrs), float("nan"))
    with torch.no_grad():
        original = torch.cat([
            _checked_distances(distance_fn(images[s : s + batch_size], torch.arange(s, min(s + batch_size, batch))),
                               min(batch_size, batch - s))
            for s in range(0, batch, batch_size)
        ])
        changed = torch.empty(len(pair_idx))
        for s in progress_bar(range(0, len(pair_idx), batch_size), desc="counterfactuals", enabled=progress):
            i, k = pair_idx[s : s + batch_size], attr_idx[s : s + batch_size]
            x = flipped[i.to(flipped.device), k.to(flipped.device)].to(images.dtype)
            changed[s : s + len(i)] = _checked_distances(distance_fn(x, i), len(i))
    delta = changed - original[pair_idx]
    effects[pair_idx, attr_idx] = delta if signed else delta.abs()
    return effects


class AttributeSensitivity(NamedTuple):
    """Result of :func:`attribute_sensitivity`; every field is indexed by attribute.

    Attributes:
        ratio: ``(M,)`` mean flip distance divided by the noise floor (``NaN`` if never measured).
        uses: Bool ``(M,)``, ``ratio > threshold``: the model reacts to the attribute more than to a
            change of photo of the same person.
        effect: ``(M,)`` mean distance between a render and its one-attribute flip.
        noise_floor: 0-d, the mean distance between two photos of the same person.
        count: ``(M,)`` int64, the number of finite flip distances averaged.
    """

    ratio: torch.Tensor
    uses: torch.Tensor
    effect: torch.Tensor
    noise_floor: torch.Tensor
    count: torch.Tensor


def attribute_sensitivity(
    flip_distances: torch.Tensor,
    same_person_distances: torch.Tensor,
    threshold: float = 1.0,
) -> AttributeSensitivity:
    r"""Which attributes does the model use? Flip effects relative to the same-person noise floor.

    $$
    \mathrm{ratio}_k = \frac{\operatorname{mean}_n\, d\big(f(x_n), f(x_n^{(k)})\big)}
        {\operatorname{mean}_j\, d\big(f(x_j), f(x'_j)\big)}
    $$

    with ``x_n^{(k)}`` the render of person ``n`` with only attribute ``k`` flipped (same pose, camera,
    light) and ``(x_j, x'_j)`` two photos of the same person (different nuisance). The denominator is
    the model's *noise floor*: a flip that moves the embedding less than a new photo of the same person
    does cannot be what the model separates identities by. ``ratio > threshold`` reads "the model uses
    the attribute"; a poorly localised map of an unused attribute then says "the model ignores it",
    not "the interpreter is wrong" (AMD-SPEC section 10).

    Args:
        flip_distances: ``(N,M)`` non-negative distances between a render and its flip of attribute
            ``k``; ``NaN`` where not measured.
        same_person_distances: ``(K,)`` non-negative distances between two photos of the same person.
        threshold: Ratio above which an attribute counts as used. Default: 1.0.

    Returns:
        An :class:`AttributeSensitivity` ``(ratio, uses, effect, noise_floor, count)``.

    Raises:
        TypeError: an input is not a tensor.
        ValueError: wrong shapes, negative distances, a non-finite or zero noise floor, or a negative
            ``threshold``.

    Examples:
        >>> flips = torch.tensor([[0.05, 0.9], [0.07, float("nan")]])
        >>> out = attribute_sensitivity(flips, torch.tensor([0.4, 0.5]))
        >>> out.ratio, out.uses, out.count
        (tensor([0.1333, 2.0000]), tensor([False,  True]), tensor([2, 1]))
    """
    flips = as_tensor(flip_distances, "flip_distances").float()
    same = as_tensor(same_person_distances, "same_person_distances").float()
    if flips.dim() != 2:
        raise ValueError(f"`flip_distances`: expected shape (N,M), got {tuple(flips.shape)}")
    if same.dim() != 1 or same.numel() == 0:
        raise ValueError(f"`same_person_distances`: expected a non-empty shape (K,), got {tuple(same.shape)}")
    if (flips < 0).any() or torch.isinf(flips).any():
        raise ValueError("`flip_distances`: expected non-negative finite distances (NaN = not measured)")
    if not torch.isfinite(same).all() or (same < 0).any():
        raise ValueError("`same_person_distances`: expected non-negative finite distances")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not threshold >= 0:
        raise ValueError(f"`threshold`: expected a number >= 0, got {threshold!r}")
    noise_floor = same.mean()
    if noise_floor <= 0:
        raise ValueError(
            "`same_person_distances`: the noise floor (their mean) is 0; two photos of the same person "
            "must differ (pose, camera, light) for the ratio to mean anything"
        )
    measured = ~torch.isnan(flips)
    count = measured.sum(dim=0)
    effect = torch.nanmean(flips, dim=0)
    ratio = effect / noise_floor
    uses = torch.nan_to_num(ratio, nan=0.0) > threshold
    return AttributeSensitivity(ratio=ratio, uses=uses, effect=effect, noise_floor=noise_floor, count=count)
