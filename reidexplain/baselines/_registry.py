"""Baselines by name, so that configs, the benchmark and the CLI can name a method.

:data:`BASELINES` is a :class:`~reidexplain.registry.Registry` of factories
``factory(model, **kwargs) -> PairExplainer``. Every entry carries two pieces of metadata, the one place
where they are kept:

* ``label``: the display name of the method in figures and tables (``"Integrated Gradients"``);
* ``defaults``: the constructor settings the benchmark and the comparison figures build it with
  (``{"n_steps": 50}``). :func:`create_baseline` does not apply them by itself (it keeps the
  constructor's own defaults, which explain batches of any size); pass them explicitly:
  ``create_baseline(name, model, **BASELINES.entry(name).metadata["defaults"])``.

Examples:
    >>> BASELINES.entry("grad_cam").metadata["label"]
    'Grad-CAM'
    >>> BASELINES.entry("occlusion").metadata["defaults"]["perturbations_per_eval"]
    32
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from ..registry import Registry
from ._base import PairExplainer
from .generic import captum_pair_explainer, resolve_captum_class, snake_case
from .grad_cam import GradCAMPair
from .gradient import IntegratedGradientsPair, SaliencyPair
from .perturbation import FeatureAblationPair, OcclusionPair

__all__ = ["BASELINES", "register_baseline", "list_baselines", "create_baseline"]

#: Every registered baseline: ``factory(model, **kwargs) -> PairExplainer`` with its ``label`` and
#: ``defaults`` metadata (see the module documentation).
BASELINES: Registry[Callable[..., PairExplainer]] = Registry("baseline")


def _default_label(name: str) -> str:
    return name.replace("_", " ").title()


def register_baseline(name: str, factory: Callable[..., PairExplainer] | None = None, *,
                      label: str | None = None, defaults: Mapping[str, Any] | None = None,
                      override: bool = False) -> Any:
    """Register ``factory(model, **kwargs) -> PairExplainer`` under ``name``; usable as a decorator.

    For a registration that must not outlive a block (a test, an example), use
    ``BASELINES.registered(name, factory, label=..., defaults=...)`` instead.

    Args:
        name: The name (``create_baseline(name, ...)``).
        factory: The factory; ``None`` returns a decorator that registers what it decorates.
        label: Display label in figures and tables (default: the name in title case).
        defaults: Constructor settings the benchmark builds it with (default: none).
        override: Replace a baseline registered under the same name instead of raising.

    Returns:
        ``factory`` (or the decorator), unchanged.

    Raises:
        ValueError: ``name`` is already registered (and ``override`` is false), or empty.
        TypeError: ``label`` is not a string or ``defaults`` not a mapping with string keys.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from reidexplain.baselines import SaliencyPair
        >>> def signed_saliency(model, **kw):
        ...     return SaliencyPair(model, abs=False, **kw)
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 4, 6))
        >>> with BASELINES.registered("signed_saliency", signed_saliency, label="Signed Saliency",
        ...                           defaults={}):
        ...     create_baseline("signed_saliency", model).abs, list_baselines("signed*")
        (False, ['signed_saliency'])
        >>> list_baselines("signed*")  # gone after the block
        []
    """
    if label is not None and (not isinstance(label, str) or not label):
        raise TypeError(f"label: expected a non-empty string, got {label!r}")
    if defaults is not None and (not isinstance(defaults, Mapping)
                                 or not all(isinstance(k, str) for k in defaults)):
        raise TypeError(f"defaults: expected a mapping of keyword arguments, got {defaults!r}")
    metadata = {"label": label if label is not None else _default_label(name),
                "defaults": dict(defaults or {})}
    return BASELINES.register(name, factory, override=override, **metadata)


def list_baselines(pattern: str | None = None) -> list[str]:
    """Sorted names of the registered baselines, optionally filtered by a shell pattern (``"*grad*"``).

    Examples:
        >>> list_baselines("*gradients")
        ['integrated_gradients']
    """
    return BASELINES.names(pattern)


def create_baseline(name: str, model: nn.Module, **kwargs: Any) -> PairExplainer:
    """Build the baseline registered as ``name``, or any Captum attribution by its (snake-case) name.

    Args:
        name: A name from :func:`list_baselines`, or a Captum class name (``"DeepLift"``,
            ``"deep_lift"``), wrapped with :func:`captum_pair_explainer`.
        model: Target model ``(B,3,H,W) -> (B,D)``.
        **kwargs: Passed to the baseline's constructor (``metric``, ``n_steps``, ``layer``, ...).
            The entry's ``defaults`` are not applied: pass them to build it as the benchmark does.

    Raises:
        ValueError: unknown name.

    Examples:
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 4, 6))
        >>> create_baseline("integrated_gradients", model, n_steps=8).n_steps
        8
        >>> create_baseline("DeepLift", model).method
        'deep_lift'
        >>> defaults = BASELINES.entry("feature_ablation").metadata["defaults"]
        >>> create_baseline("feature_ablation", model, **defaults).perturbations_per_eval
        32
    """
    if name in BASELINES:
        return BASELINES.get(name)(model, **kwargs)
    try:
        cls = resolve_captum_class(name)
    except ValueError:
        raise ValueError(
            f"name: expected one of {list_baselines()} or a Captum attribution name, got {name!r}"
        ) from None
    return captum_pair_explainer(cls, model, **kwargs)


# The baselines of the benchmark, with the settings it runs them with (one pair per call: perturbation
# methods evaluate 32 perturbed copies per forward call, the usual Captum setting for speed).
register_baseline("integrated_gradients", IntegratedGradientsPair, label="Integrated Gradients",
                  defaults={"n_steps": 50})
register_baseline("saliency", SaliencyPair, label="Saliency")
register_baseline("occlusion", OcclusionPair, label="Occlusion",
                  defaults={"window": 16, "stride": 8, "perturbations_per_eval": 32})
register_baseline("grad_cam", GradCAMPair, label="Grad-CAM")
register_baseline("feature_ablation", FeatureAblationPair, label="Feature Ablation",
                  defaults={"cell": 8, "perturbations_per_eval": 32})
for _cls_name, _label in (("InputXGradient", "Input x Gradient"), ("GuidedBackprop", "Guided Backprop"),
                          ("DeepLift", "DeepLift")):
    register_baseline(
        snake_case(_cls_name),
        lambda model, _cls_name=_cls_name, **kw: captum_pair_explainer(_cls_name, model, **kw),
        label=_label,
    )
