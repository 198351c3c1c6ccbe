"""Metrics: ReID retrieval evaluation and (added by their modules) explanation metrics."""

from __future__ import annotations

from reidexplain.metrics.causal import (
    AttributeSensitivity,
    attribute_sensitivity,
    causal_agreement,
    counterfactual_effects,
    spearman_correlation,
)
from reidexplain.metrics.explanation import adre, average_precision, x_map_common, x_map_exclusive
from reidexplain.metrics.faithfulness import (
    curve_auc,
    deletion_auc,
    deletion_curve,
    insertion_auc,
    insertion_curve,
    partner_distance_fn,
)
from reidexplain.metrics.localization import (
    exclusive_union_mask,
    per_attribute_localization,
    pointing_game,
    reduce_scores,
    relevance_mass,
)
from reidexplain.metrics.retrieval import evaluate_retrieval, extract_features

__all__ = [
    "evaluate_retrieval",
    "extract_features",
    "pointing_game",
    "relevance_mass",
    "reduce_scores",
    "exclusive_union_mask",
    "per_attribute_localization",
    "deletion_curve",
    "insertion_curve",
    "curve_auc",
    "deletion_auc",
    "insertion_auc",
    "partner_distance_fn",
    "causal_agreement",
    "counterfactual_effects",
    "attribute_sensitivity",
    "AttributeSensitivity",
    "spearman_correlation",
    "x_map_exclusive",
    "x_map_common",
    "adre",
    "average_precision",
]
