"""Shared machinery of the pair baselines: the pair-distance forward function and the base explainer.

Captum explains a scalar per example. For a pair ``(a, b)`` that scalar is the distance ``d(f(a), e_b)``
with the partner's embedding ``e_b = f(b)`` held fixed, so the attribution of ``a`` says which pixels of
``a`` move it away from (positive) or towards (negative) ``b``. Both sides of a pair are explained in
one Captum call: the inputs are ``cat(a, b)`` and the fixed partners ``cat(e_b, e_a)``.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from .._checks import (
    ZERO_DISTANCE,
    ZeroDistanceWarning,
    check_batch_size,
    check_embeddings,
    check_pair,
)
from .._model import model_device, preserved_model_state
from .._progress import progress_bar
from ..attribution import PairAttribution
from ..distance import check_metric, pair_distance

__all__ = ["PairDistance", "PairExplainer", "model_device", "preserved_model_state"]


class PairDistance(nn.Module):
    """Forward function ``(images, partner_embeddings) -> (B,)`` distances, for Captum.

    Pass the partner embeddings through Captum's ``additional_forward_args``: Captum then repeats them
    alongside the inputs it expands (integration steps, perturbations), and does not attribute to them.

    Args:
        model: The target model, ``(B,3,H,W) -> (B,D)``. It is wrapped, never copied or modified.
        metric: ``"euclidean"`` (not squared, epsilon inside the root) or ``"cosine"``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: unknown ``metric``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 2, 5))
        >>> x = torch.rand(2, 3, 4, 2)
        >>> partner = model(torch.rand(2, 3, 4, 2)).detach()
        >>> PairDistance(model)(x, partner).shape
        torch.Size([2])
    """

    def __init__(self, model: nn.Module, metric: str = "euclidean") -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.metric = check_metric(metric)
        #: Names of the model's side inputs, in the order their values follow the partners.
        self.side_names: tuple[str, ...] = ()

    def forward(self, images: torch.Tensor, partner_embeddings: torch.Tensor, *side: torch.Tensor) -> torch.Tensor:
        """Distances ``d(model(images[i], **side_i), partner_embeddings[i])``, shape ``(B,)``; ``side``
        holds one ``(B,)`` tensor per name of :attr:`side_names` (Captum repeats them like the partners)."""
        emb = check_embeddings(self.model(images, **dict(zip(self.side_names, side, strict=True))), images.shape[0])
        if partner_embeddings.shape != emb.shape:
            raise ValueError(
                f"partner_embeddings: expected shape {tuple(emb.shape)} (one per image), "
                f"got {tuple(partner_embeddings.shape)}"
            )
        return pair_distance(emb, partner_embeddings, self.metric)


class PairExplainer:
    """Base class of the pair baselines: explain ``d(f(a), f(b))`` on both images of each pair.

    A subclass sets ``method`` and implements :meth:`_attribute`, which gets ``(2B,3,H,W)`` inputs and
    the ``(2B,D)`` fixed partner embeddings and returns Captum's raw attribution. The base class checks
    the pair, moves it to the model's device, keeps the model frozen and in eval mode, reduces the raw
    attribution to one ``(B,1,H,W)`` map per image (sum over colour channels, upsampled when the method
    works at a lower resolution) and builds the :class:`~reidexplain.attribution.PairAttribution`.

    Args:
        model: Target model ``(B,3,H,W) -> (B,D)``.
        metric: ``"euclidean"`` or ``"cosine"``.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from reidexplain.baselines import SaliencyPair
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 4, 6))
        >>> result = SaliencyPair(model).explain((torch.rand(3, 8, 4), torch.rand(3, 8, 4)))
        >>> result.method, tuple(result.maps[0].shape)
        ('saliency', (1, 1, 8, 4))
    """

    method: str = "pair_explainer"
    #: Whether the method differentiates the distance (inputs then require gradients).
    uses_gradients: bool = True
    #: The side inputs of the chunk being explained, ``(2B,)`` each (see :meth:`explain`).
    _side: tuple[torch.Tensor, ...] = ()

    def __init__(self, model: nn.Module, metric: str = "euclidean") -> None:
        self.forward_func = PairDistance(model, metric)
        self.model = model
        self.metric = self.forward_func.metric

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={type(self.model).__name__}, metric={self.metric!r})"

    # ------------------------------------------------------------------ to implement
    def _attribute(self, inputs: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        """Raw Captum attribution of ``forward_func(inputs, partners)``; ``(2B, C, h, w)``."""
        raise NotImplementedError

    def _extras(self, inputs: torch.Tensor, partners: torch.Tensor) -> dict[str, Any]:
        """Method-specific extras computed after :meth:`_attribute` (same inputs); ``{}`` by default."""
        return {}

    # ------------------------------------------------------------------ shared logic
    def explain(
        self,
        pair: tuple[torch.Tensor, torch.Tensor],
        batch_size: int | None = None,
        progress: bool = False,
        forward_kwargs: tuple[dict[str, Any], dict[str, Any]] | None = None,
    ) -> PairAttribution:
        """Explain the distance of each pair ``(a_i, b_i)``: a map of ``a_i`` and one of ``b_i``.

        Args:
            pair: ``(images_a, images_b)``, each ``(B,3,H,W)``, or a single pair of ``(3,H,W)`` images.
            batch_size: Explain at most this many pairs per Captum call (``None``: all at once).
            progress: Show a progress bar over the chunks of ``batch_size`` pairs.
            forward_kwargs: The model's per-image side inputs, such as TransReID's camera ids:
                ``(kwargs_a, kwargs_b)``, dicts with the same keys, each value ``(B,)`` (or one value
                for every image). They reach ``model(images, **kwargs)`` as Captum's
                ``additional_forward_args`` do: repeated with the images, never attributed to.

        Returns:
            A :class:`~reidexplain.attribution.PairAttribution` with ``maps`` ``(B,1,H,W)`` each, the
            target distance, and the raw attributions in ``extras["raw"]``.

        A pair whose target distance is 0 (identical images) is explained as the method explains it
        (the maps are finite, mostly 0), with a :class:`~reidexplain._checks.ZeroDistanceWarning`.

        Raises:
            TypeError: ``pair`` is not a tuple of two tensors, integer images, or a ``batch_size`` that
                is not an int.
            ValueError: wrong shapes, NaN or inf images, ``batch_size`` below 1, or a model output that
                is not finite ``(B,D)``.
        """
        a, b = check_pair(pair)
        check_batch_size(batch_size, allow_none=True)
        device = model_device(self.model)
        a, b = a.to(device), b.to(device)
        names, side_a, side_b = _side_inputs(forward_kwargs, a.shape[0], device)
        self.forward_func.side_names = names
        step = batch_size or a.shape[0]
        starts = range(0, a.shape[0], step)
        side = tuple(torch.cat([sa, sb]) for sa, sb in zip(side_a, side_b, strict=True))  # (2B,): a's, then b's
        parts = [
            self._explain_batch(a[i : i + step], b[i : i + step], _pair_rows(side, i, step, a.shape[0]))
            for i in progress_bar(starts, desc=self.method, enabled=progress and len(starts) > 1)
        ]
        self._side = ()  # keep no tensors of this call
        result = parts[0] if len(parts) == 1 else _concatenate(parts)
        zero = result.distance <= ZERO_DISTANCE
        if zero.any():
            warnings.warn(f"{self.method}: {int(zero.sum())} of {zero.numel()} pairs: the distance is 0 "
                          "(identical embeddings): nothing to explain", ZeroDistanceWarning, stacklevel=2)
        return result

    def _forward_args(self, partners: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Captum's ``additional_forward_args``: the partner embeddings, then the side inputs."""
        return (partners, *self._side)

    def _explain_batch(self, a: torch.Tensor, b: torch.Tensor, side: tuple[torch.Tensor, ...] = ()) -> PairAttribution:
        batch = a.shape[0]
        inputs = torch.cat([a, b]).detach()
        # Our own copy of the images: asking for its gradient touches nothing of the caller's.
        inputs.requires_grad_(self.uses_gradients)
        self._side = side
        kwargs = dict(zip(self.forward_func.side_names, side, strict=True))
        with preserved_model_state(self.model):
            with torch.no_grad():
                emb = check_embeddings(self.model(inputs, **kwargs), inputs.shape[0])
            partners = torch.cat([emb[batch:], emb[:batch]]).detach()
            with torch.set_grad_enabled(self.uses_gradients):
                raw = self._attribute(inputs, partners)
                extras = self._extras(inputs, partners)
        raw = raw.detach()
        maps = self._to_maps(raw, tuple(a.shape[-2:]))
        extras["raw"] = (raw[:batch], raw[batch:])
        return PairAttribution(
            method=self.method,
            images=(inputs[:batch].detach(), inputs[batch:].detach()),
            distance=pair_distance(emb[:batch], emb[batch:], self.metric).detach(),
            maps=(maps[:batch], maps[batch:]),
            extras=extras,
        )

    def _to_maps(self, raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Sum over channels and bring a ``(N,C,h,w)`` attribution to ``(N,1,H,W)``."""
        if raw.dim() != 4:
            raise ValueError(
                f"{self.method}: expected a (N,C,h,w) attribution to turn into image maps, "
                f"got shape {tuple(raw.shape)}"
            )
        maps = raw.sum(dim=1, keepdim=True)
        if tuple(maps.shape[-2:]) != size:
            maps = torch.nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)
        return maps


def _pair_rows(side: tuple[torch.Tensor, ...], start: int, step: int, n: int) -> tuple[torch.Tensor, ...]:
    """Rows ``start:start+step`` of the a-half and of the b-half of ``(2n,)`` side inputs, a's first."""
    return tuple(torch.cat([t[start:start + step], t[n + start:n + start + step]]) for t in side)


def _side_inputs(forward_kwargs: Any, n: int, device: torch.device
                 ) -> tuple[tuple[str, ...], tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """``(names, values of a, values of b)`` from ``forward_kwargs``, each value ``(n,)`` on ``device``."""
    if forward_kwargs is None:
        return (), (), ()
    if (not isinstance(forward_kwargs, (tuple, list)) or len(forward_kwargs) != 2
            or not all(isinstance(k, dict) for k in forward_kwargs)):
        raise TypeError("forward_kwargs: expected a pair (kwargs_a, kwargs_b) of dicts of per-image values")
    kw_a, kw_b = forward_kwargs
    if set(kw_a) != set(kw_b):
        raise ValueError(f"forward_kwargs: both images need the same arguments, got {sorted(kw_a)} and "
                         f"{sorted(kw_b)}")
    names = tuple(sorted(kw_a))
    values = []
    for side, kwargs in (("a", kw_a), ("b", kw_b)):
        row = []
        for name in names:
            value = torch.as_tensor(kwargs[name], device=device)
            if value.dim() == 0:
                value = value.expand(n)
            if value.shape[:1] != (n,):
                raise ValueError(f"forward_kwargs[{side!r}][{name!r}]: expected {n} values (one per image) or one, "
                                 f"got shape {tuple(value.shape)}")
            row.append(value)
        values.append(tuple(row))
    return names, values[0], values[1]


def _concatenate(parts: list[PairAttribution]) -> PairAttribution:
    """Join the results of consecutive chunks of pairs into one :class:`PairAttribution`."""

    def cat_pair(get: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(torch.cat([get(p)[i] for p in parts]) for i in range(2))  # type: ignore[return-value]

    extras: dict[str, Any] = {}
    for key, value in parts[0].extras.items():
        if isinstance(value, tuple) and all(isinstance(v, torch.Tensor) for v in value):
            extras[key] = cat_pair(lambda p, key=key: p.extras[key])
        else:
            extras[key] = value
    return PairAttribution(
        method=parts[0].method,
        images=cat_pair(lambda p: p.images),
        distance=torch.cat([p.distance for p in parts]),
        maps=cat_pair(lambda p: p.maps),
        extras=extras,
    )
