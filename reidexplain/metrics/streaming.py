"""Streaming metrics: ``update`` on chunks, ``compute`` at the end (torchmetrics' pattern, no dependency).

Large query x gallery sets are scored in chunks of queries; a streaming metric keeps running sums so that
the ``(Q,G,M)`` tensor never has to exist at once. Each wraps a functional metric of
:mod:`reidexplain.metrics.explanation` that returns per-pair values (``NaN`` where a pair does not count).
A new metric is a subclass with ``name``, ``higher_is_better`` and ``per_pair``; register it in
:data:`EXPLANATION_METRICS` to have :meth:`reidexplain.Explainer.evaluate` report it.

Examples:
    >>> import torch
    >>> metric = ADREMetric()
    >>> metric.update(distance=torch.tensor([2.0, 4.0]), reconstructed=torch.tensor([1.9, 4.0]))
    >>> metric.update(distance=torch.tensor([1.0]), reconstructed=torch.tensor([1.0]))
    >>> round(metric.compute(), 4)
    1.6667
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..registry import Registry
from .explanation import adre, x_map_common, x_map_exclusive

__all__ = ["StreamingMetric", "XMapExclusiveMetric", "XMapCommonMetric", "ADREMetric",
           "EXPLANATION_METRICS"]


class StreamingMetric:
    """Mean of per-pair values over every :meth:`update` (pairs whose value is ``NaN`` do not count).

    Subclasses implement :meth:`per_pair`, taking keyword arguments among ``distance``,
    ``reconstructed``, ``shares``, ``contributions``, ``exclusive``, ``valid`` and ``known`` (and ignoring the rest).
    """

    name: ClassVar[str] = "metric"
    higher_is_better: ClassVar[bool] = True

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every update."""
        self.total = 0.0
        self.count = 0

    def per_pair(self, **inputs: Any) -> torch.Tensor:
        """Per-pair values of a chunk (``NaN``: the pair does not count)."""
        raise NotImplementedError

    def update(self, **inputs: Any) -> None:
        """Add a chunk of pairs."""
        values = self.per_pair(**inputs).detach()
        keep = ~torch.isnan(values)
        self.total += float(values[keep].double().sum())
        self.count += int(keep.sum())

    def compute(self) -> float:
        """The mean so far (``NaN`` before any pair counted)."""
        return self.total / self.count if self.count else float("nan")


class XMapExclusiveMetric(StreamingMetric):
    """X-mAP_e (percent): see :func:`~reidexplain.metrics.x_map_exclusive`."""

    name = "x_map_e"

    def per_pair(self, *, shares: torch.Tensor, exclusive: torch.Tensor, valid: torch.Tensor | None = None,
                 known: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        return x_map_exclusive(shares, exclusive, valid, reduction="none", known=known)


class XMapCommonMetric(StreamingMetric):
    """X-mAP_c (percent): see :func:`~reidexplain.metrics.x_map_common`."""

    name = "x_map_c"

    def per_pair(self, *, shares: torch.Tensor, exclusive: torch.Tensor, valid: torch.Tensor | None = None,
                 known: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        return x_map_common(shares, exclusive, valid, reduction="none", known=known)


class ADREMetric(StreamingMetric):
    """ADRE (percent, lower is better): see :func:`~reidexplain.metrics.adre`."""

    name = "adre"
    higher_is_better = False

    def per_pair(self, *, distance: torch.Tensor, reconstructed: torch.Tensor,
                 valid: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        return adre(distance, reconstructed, valid, reduction="none")


EXPLANATION_METRICS: Registry[type[StreamingMetric]] = Registry("explanation metric")
"""The metrics :meth:`reidexplain.Explainer.evaluate` reports, by the key they are reported under."""
for _metric in (XMapExclusiveMetric, XMapCommonMetric, ADREMetric):
    EXPLANATION_METRICS.register(_metric.name, _metric)
