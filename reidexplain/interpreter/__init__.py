"""The AMD interpreter: splitting a target, the interpreter network, its losses and training loop.

Most users only need :class:`reidexplain.Explainer`; this package holds its parts.

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
from .network import (
    AMDInterpreter,
    AttributeDecomposition,
    Components,
    EmbeddingHead,
    SmallTrunk,
    attention_activation,
    component_embeddings,
    region_slots,
)
from .split import SPLIT_KINDS, TargetSplit, find_feature_layer, split_model
from .training import TrainingConfig, default_epochs, fit_interpreter, pair_losses

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
    "Components",
    "component_embeddings",
    "SPLIT_KINDS",
    "TargetSplit",
    "split_model",
    "find_feature_layer",
    "TrainingConfig",
    "default_epochs",
    "fit_interpreter",
    "pair_losses",
]
