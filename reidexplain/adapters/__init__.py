"""Feature adapters: how reidexplain gets a feature grid and a head out of a target model.

:func:`adapt_model` makes a frozen copy of the model and tries the registered families of
:data:`ADAPTERS` in order (timm-style ``forward_features``, a torch.fx graph cut, a forward hook); a
model without an image-grid feature map is explained as a black box. Vision transformers get the
patch-token grid at the input of their last block (:mod:`reidexplain.adapters.tokens`). AMD (:class:`reidexplain.Explainer`)
and Grad-CAM (:class:`reidexplain.baselines.GradCAMPair`) use the same adapters and the same layer
rules (:mod:`reidexplain.adapters._layers`).

Adding a family is adding one class: subclass :class:`FeatureAdapter`, implement ``build``,
``_features``, ``_head`` and ``_trainable_trunk``, and register it: :func:`register_adapter` places it
ahead of the built-in families (``docs/architecture.md`` has a worked example).

Examples:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> adapter = adapt_model(net, torch.rand(2, 3, 16, 8))
    >>> adapter.kind, adapter.layer, adapter.grid_shape
    ('fx', '1', (8, 16, 8))
    >>> [entry.name for entry in ADAPTERS.entries()]
    ['forward_features', 'tokens', 'fx', 'hook']
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._checks import check_embeddings
from .._model import model_device
from ..registry import Registry
from ._layers import (
    FeatureLayer,
    feature_layers,
    find_feature_layer,
    is_image_grid,
    resolve_layer_name,
)
from .base import (
    FeatureAdapter,
    InputCopy,
    SelectOutput,
    SideInputs,
    frozen_copy,
    outputs_match,
    select_output,
)
from .families import BlackBoxAdapter, ForwardFeaturesAdapter, GraphAdapter, HookAdapter, cut_graph
from .tokens import TokenAdapter, TokenLayout, find_token_blocks

__all__ = [
    "ADAPTERS",
    "FeatureAdapter",
    "ForwardFeaturesAdapter",
    "GraphAdapter",
    "HookAdapter",
    "TokenAdapter",
    "TokenLayout",
    "find_token_blocks",
    "BlackBoxAdapter",
    "FeatureLayer",
    "adapt_model",
    "register_adapter",
    "feature_layers",
    "find_feature_layer",
    "is_image_grid",
    "resolve_layer_name",
    "cut_graph",
    "frozen_copy",
    "outputs_match",
    "InputCopy",
    "SelectOutput",
    "select_output",
    "SideInputs",
]

logger = logging.getLogger(__name__)

ADAPTERS: Registry[type[FeatureAdapter]] = Registry("feature adapter")
"""Model families, tried in registration order by :func:`adapt_model`."""
ADAPTERS.register(ForwardFeaturesAdapter.kind, ForwardFeaturesAdapter)
ADAPTERS.register(TokenAdapter.kind, TokenAdapter)
ADAPTERS.register(GraphAdapter.kind, GraphAdapter)
ADAPTERS.register(HookAdapter.kind, HookAdapter)


def register_adapter(cls: type[FeatureAdapter], first: bool = True) -> type[FeatureAdapter]:
    """Register a model family under ``cls.kind``; ``first=True`` tries it before the built-in ones.

    Returns:
        ``cls``, so that it can be used as a decorator.

    Raises:
        TypeError: ``cls`` is not a :class:`FeatureAdapter` subclass.
        ValueError: its ``kind`` is taken.
    """
    if not (isinstance(cls, type) and issubclass(cls, FeatureAdapter)):
        raise TypeError(f"register_adapter: expected a FeatureAdapter subclass, got {cls!r}")
    ADAPTERS.register(cls.kind, cls)
    if first:
        ADAPTERS.move_to_front(cls.kind)
    return cls


def adapt_model(model: nn.Module, probe: torch.Tensor, feature_layer: str | nn.Module | None = "auto",
                device: torch.device | str | None = None,
                output: int | str | Callable[[Any], torch.Tensor] | None = None,
                side_inputs: dict[str, torch.Tensor] | None = None) -> FeatureAdapter:
    """A frozen copy of ``model`` split into feature grid and head, verified on ``probe``.

    Args:
        model: The target; it is deep-copied, never modified.
        probe: ``(B,3,H,W)`` images to find and verify the split (two are enough).
        feature_layer: ``"auto"`` (the last image-grid feature map whose head runs alone), a module name,
            a module of ``model``, or ``None`` (no split: black box).
        device: Where the copy lives. Default: the model's device.
        output: For a model that returns a tuple or a dict: which part is the embedding (an index, a
            key, or a callable on the output); see :class:`SelectOutput`. Layer names stay those of
            ``model``.
        side_inputs: Per-image forward arguments the model needs besides the images (TransReID's
            ``cam_label``), by name, with their ``(B,)`` values for ``probe``; afterwards the adapter
            takes them with :meth:`~FeatureAdapter.bind`. See :class:`SideInputs`.

    Returns:
        The adapter of the first family that accepts the model; its :meth:`~FeatureAdapter.describe`
        says which layer was chosen, why, and how to pick another.

    Raises:
        TypeError: the model output is not a tensor, or ``feature_layer`` has a wrong type.
        ValueError: the output is not a finite ``(B,D)``, or the named layer does not exist, is not an
            image grid, or runs more than once per forward pass.

    Examples:
        >>> import torch
        >>> from reidexplain.zoo import create_model
        >>> adapter = adapt_model(create_model("reidnet_small"), torch.rand(2, 3, 64, 32))
        >>> adapter.kind, adapter.grid_shape
        ('forward_features', (128, 8, 4))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    device = torch.device(device) if device is not None else model_device(model)
    layer: str | None = None
    if feature_layer is not None and not (isinstance(feature_layer, str) and feature_layer == "auto"):
        layer = resolve_layer_name(model, feature_layer)
    if output is not None:
        model = SelectOutput(model, output)
        layer = None if layer is None else f"model.{layer}"
    if side_inputs:
        model = SideInputs(model, tuple(side_inputs))
        layer = None if layer is None else f"model.{layer}"
    target = frozen_copy(model, device)
    probe = probe.to(device)
    if side_inputs:
        target.probe = tuple(torch.as_tensor(v).to(device) for v in side_inputs.values())
    try:
        return _adapt(target, probe, layer, feature_layer)
    finally:
        if side_inputs:
            target.probe = ()  # from now on the side inputs must be given with the images


def _adapt(target: nn.Module, probe: torch.Tensor, layer: str | None,
           feature_layer: str | nn.Module | None) -> FeatureAdapter:
    with torch.no_grad():
        reference = check_embeddings(target(probe.clone()), probe.shape[0], "model output")
    if feature_layer is None:
        return BlackBoxAdapter(target, int(reference.shape[1]), "feature_layer=None")
    for entry in ADAPTERS.entries():
        adapter = entry.obj.build(target, probe, layer, reference)
        if adapter is not None:
            logger.info("AMD: %s", adapter.describe())
            return adapter
    logger.warning("the model has no image-grid feature map (B,C,h,w) whose head reproduces it: AMD runs "
                   "as a black box (its own trunk and head; lower fidelity expected)")
    return BlackBoxAdapter(target, int(reference.shape[1]))
