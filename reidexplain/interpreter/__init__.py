"""The AMD interpreter: the network, the object that owns a fitted interpreter, recipes, losses and the
training loop.

Most users only need :class:`reidexplain.Explainer`; this package holds its parts. Data flows one way:
a target's feature adapter (:mod:`reidexplain.adapters`) -> :class:`AMDModel` (adapter + network +
metric + schema) -> :mod:`reidexplain.decomposition` -> result objects.

Examples:
    >>> import torch
    >>> from reidexplain.interpreter import prior_thresholds
    >>> r, t = prior_thresholds(torch.tensor([1]), 26)
    >>> round(float(t), 4)
    0.0794
"""

from __future__ import annotations

from .losses import (
    PRIOR_WEIGHTS,
    attribute_prior_loss,
    attribute_prior_terms,
    metric_distillation_loss,
    prior_thresholds,
)
from .model import AMDModel, Components
from .network import (
    AMDInterpreter,
    AttributeDecomposition,
    EmbeddingHead,
    SmallTrunk,
    attention_activation,
    region_slots,
)
from .recipes import (
    RECIPES,
    AMDPlus,
    LinearAMD,
    PaperAMD,
    Recipe,
    SubspaceAMD,
    TargetPass,
    create_recipe,
    pair_losses,
)
from .subspace import AttributeSubspaces, attribute_directions, direction_usage, fit_subspaces
from .training import TrainingConfig, default_epochs, fit, target_pass

__all__ = [
    "PRIOR_WEIGHTS",
    "metric_distillation_loss",
    "attribute_prior_loss",
    "attribute_prior_terms",
    "prior_thresholds",
    "attention_activation",
    "AttributeDecomposition",
    "region_slots",
    "SmallTrunk",
    "EmbeddingHead",
    "AMDInterpreter",
    "AMDModel",
    "Components",
    "Recipe",
    "PaperAMD",
    "AMDPlus",
    "LinearAMD",
    "SubspaceAMD",
    "AttributeSubspaces",
    "fit_subspaces",
    "attribute_directions",
    "direction_usage",
    "RECIPES",
    "create_recipe",
    "TargetPass",
    "pair_losses",
    "TrainingConfig",
    "default_epochs",
    "fit",
    "target_pass",
]
