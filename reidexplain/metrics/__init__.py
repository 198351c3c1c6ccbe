"""Metrics: ReID retrieval evaluation and (added by their modules) explanation metrics."""

from __future__ import annotations

from reidexplain.metrics.retrieval import evaluate_retrieval, extract_features

__all__ = [
    "evaluate_retrieval",
    "extract_features",
]
