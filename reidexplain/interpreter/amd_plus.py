"""The AMD+ recipe: which terms ``Explainer(method="amd+")`` switches on, and its usage weights.

The terms themselves live in :mod:`reidexplain.interpreter.model_aware`; the training loop that adds
them in :mod:`reidexplain.interpreter.training`. This module only fills a
:class:`~reidexplain.interpreter.TrainingConfig`: :data:`AMD_PLUS_DEFAULTS` for the options the caller
did not give, and the model-usage weights from one pass of the target over the training images.

Examples:
    >>> from reidexplain.interpreter.training import TrainingConfig
    >>> cfg = amd_plus_defaults(TrainingConfig())
    >>> cfg.shared_maps, cfg.probe_weight, cfg.recognition_weight
    (True, 1.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import torch

from .._batch import iter_batches
from .model_aware import attribute_usage
from .split import TargetSplit
from .training import TrainingConfig

__all__ = ["AMD_PLUS_DEFAULTS", "amd_plus_defaults", "amd_plus_config"]


AMD_PLUS_DEFAULTS: dict[str, Any] = {"probe_weight": 1.0, "entropy_weight": 0.0, "shared_maps": True,
                                     "recognition_weight": 1.0}
"""Options of the AMD+ terms used by ``Explainer(method="amd+")`` unless given to ``fit``."""


def amd_plus_defaults(config: TrainingConfig, given: dict[str, Any] | None = None) -> TrainingConfig:
    """``config`` with :data:`AMD_PLUS_DEFAULTS` filled in, except the options the caller gave.

    Examples:
        >>> from reidexplain.interpreter.training import TrainingConfig
        >>> amd_plus_defaults(TrainingConfig(), {"probe_weight": 0.0}).probe_weight
        0.0
    """
    given = given or {}
    return replace(config, **{k: v for k, v in AMD_PLUS_DEFAULTS.items() if k not in given})


def amd_plus_config(config: TrainingConfig, split: TargetSplit, loader: Iterable, num_attributes: int,
                    metric: str, given: dict[str, Any] | None = None) -> TrainingConfig:
    """``config`` with the AMD+ fields filled in: usage weights from one pass of the target over ``loader``.

    Fields the caller gave (``given``) are kept.

    Args:
        config: The resolved training configuration.
        split: The split target.
        loader: The training batches (labels, optional pids).
        num_attributes: ``M``.
        metric: The target's distance.
        given: The options the caller passed to ``fit``.

    Returns:
        A new :class:`~reidexplain.interpreter.TrainingConfig`.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from reidexplain.interpreter.split import split_model
        >>> from reidexplain.interpreter.training import TrainingConfig
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> split = split_model(net, torch.rand(2, 3, 8, 4))
        >>> cfg = amd_plus_config(TrainingConfig(), split, [(torch.rand(6, 3, 8, 4), torch.eye(6)[:, :3])], 3,
        ...                       "euclidean")
        >>> len(cfg.usage_weights), cfg.probe_weight
        (3, 1.0)
    """
    given = given or {}
    config = amd_plus_defaults(config, given)
    updates: dict[str, Any] = {}
    if "usage_weights" not in given:
        embs, attrs, pids = [], [], []
        with torch.no_grad():
            for batch in iter_batches(loader, num_attributes, warn=False):
                embs.append(split.embed(batch.images.to(split.device))[1].detach().cpu())
                attrs.append(batch.attributes.cpu())
                pids.append(batch.pids.cpu() if batch.pids is not None else None)
        have_pids = all(p is not None for p in pids)
        usage = attribute_usage(torch.cat(embs), torch.cat(attrs), metric,
                                torch.cat(pids) if have_pids else None)
        updates["usage_weights"] = tuple(round(float(w), 4) for w in usage)
    return replace(config, **updates)
