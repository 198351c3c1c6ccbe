"""Baselines by name, so that configs, the benchmark and the CLI can name a method."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from torch import nn

from ._base import PairExplainer
from .generic import captum_pair_explainer, resolve_captum_class, snake_case
from .grad_cam import GradCAMPair
from .gradient import IntegratedGradientsPair, SaliencyPair
from .perturbation import FeatureAblationPair, OcclusionPair

__all__ = ["register_baseline", "list_baselines", "create_baseline"]

_REGISTRY: dict[str, Callable[..., PairExplainer]] = {}


def register_baseline(name: str, factory: Callable[..., PairExplainer] | None = None) -> Any:
    """Register ``factory(model, **kwargs) -> PairExplainer`` under ``name``; usable as a decorator.

    Raises:
        ValueError: ``name`` is already registered.

    Examples:
        >>> from reidexplain.baselines import SaliencyPair
        >>> _ = register_baseline("signed_saliency", lambda model, **kw: SaliencyPair(model, abs=False, **kw))
        >>> "signed_saliency" in list_baselines()
        True
    """

    def add(fn: Callable[..., PairExplainer]) -> Callable[..., PairExplainer]:
        if name in _REGISTRY:
            raise ValueError(f"name: baseline {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return add if factory is None else add(factory)


def list_baselines(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered baselines, optionally filtered by a shell pattern (``"*grad*"``).

    Examples:
        >>> list_baselines("*gradients")
        ['integrated_gradients']
    """
    names = sorted(_REGISTRY)
    return names if pattern is None else [n for n in names if fnmatch.fnmatch(n, pattern)]


def create_baseline(name: str, model: nn.Module, **kwargs: Any) -> PairExplainer:
    """Build the baseline registered as ``name``, or any Captum attribution by its (snake-case) name.

    Args:
        name: A name from :func:`list_baselines`, or a Captum class name (``"DeepLift"``,
            ``"deep_lift"``), wrapped with :func:`captum_pair_explainer`.
        model: Target model ``(B,3,H,W) -> (B,D)``.
        **kwargs: Passed to the baseline's constructor (``metric``, ``n_steps``, ``layer``, ...).

    Raises:
        ValueError: unknown name.

    Examples:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 4, 6))
        >>> create_baseline("integrated_gradients", model, n_steps=8).n_steps
        8
        >>> create_baseline("DeepLift", model).method
        'deep_lift'
    """
    if name in _REGISTRY:
        return _REGISTRY[name](model, **kwargs)
    try:
        cls = resolve_captum_class(name)
    except ValueError:
        raise ValueError(
            f"name: expected one of {list_baselines()} or a Captum attribution name, got {name!r}"
        ) from None
    return captum_pair_explainer(cls, model, **kwargs)


register_baseline("integrated_gradients", IntegratedGradientsPair)
register_baseline("saliency", SaliencyPair)
register_baseline("occlusion", OcclusionPair)
register_baseline("grad_cam", GradCAMPair)
register_baseline("feature_ablation", FeatureAblationPair)
for _cls_name in ("InputXGradient", "GuidedBackprop", "DeepLift"):
    register_baseline(
        snake_case(_cls_name),
        lambda model, _cls_name=_cls_name, **kw: captum_pair_explainer(_cls_name, model, **kw),
    )
