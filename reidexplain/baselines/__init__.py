"""Captum baselines on pair distances: explain ``d(f(a), f(b))`` with the methods users know.

Every explainer has the verb of the AMD explainer, ``.explain((a, b))``, and returns a
:class:`~reidexplain.attribution.PairAttribution` with one ``(B,1,H,W)`` map per image: the map of
``a`` explains the distance with ``b``'s embedding held fixed, and the other way round.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from reidexplain.baselines import create_baseline, list_baselines
    >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
    ...                       nn.Flatten())
    >>> pair = (torch.rand(2, 3, 16, 8), torch.rand(2, 3, 16, 8))
    >>> result = create_baseline("integrated_gradients", model, n_steps=8).explain(pair)
    >>> tuple(result.maps[0].shape), tuple(result.distance.shape)
    ((2, 1, 16, 8), (2,))
    >>> "grad_cam" in list_baselines()
    True

Every baseline is an entry of :data:`BASELINES`, with its display label and the settings the benchmark
builds it with:

    >>> from reidexplain.baselines import BASELINES
    >>> entry = BASELINES.entry("integrated_gradients")
    >>> entry.metadata["label"], entry.metadata["defaults"]
    ('Integrated Gradients', {'n_steps': 50})
"""

from __future__ import annotations

from ._base import PairDistance, PairExplainer, model_device, preserved_model_state
from ._registry import BASELINES, create_baseline, list_baselines, register_baseline
from ._segments import grid_segments, slic_segments
from .generic import CaptumPair, captum_pair_explainer
from .grad_cam import GradCAMPair
from .gradient import IntegratedGradientsPair, SaliencyPair
from .perturbation import FeatureAblationPair, OcclusionPair

__all__ = [
    "PairDistance",
    "PairExplainer",
    "IntegratedGradientsPair",
    "SaliencyPair",
    "OcclusionPair",
    "GradCAMPair",
    "FeatureAblationPair",
    "CaptumPair",
    "captum_pair_explainer",
    "BASELINES",
    "create_baseline",
    "list_baselines",
    "register_baseline",
    "grid_segments",
    "slic_segments",
    "model_device",
    "preserved_model_state",
]
