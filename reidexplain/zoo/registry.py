"""A timm-style model registry: a name in a config or on a command line maps to a constructor.

The constructors live in :data:`MODELS`, a :class:`~reidexplain.registry.Registry`; the functions here
are the timm-style verbs on it. To add a model for a while only (a test, a doctest), use
``MODELS.registered(name, constructor)``.

Examples:
    >>> from reidexplain.zoo import create_model, list_models
    >>> list_models("reidnet_resnet*")
    ['reidnet_resnet18', 'reidnet_resnet34', 'reidnet_resnet50']
    >>> model = create_model("reidnet_small", num_classes=10)
    >>> model.num_classes
    10
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import TypeVar

from torch import nn

from reidexplain.registry import Registry, UnknownNameError

__all__ = ["MODELS", "register_model", "create_model", "list_models", "is_model"]

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
"""Model constructors by name (each accepts ``num_classes`` and returns an ``nn.Module``)."""

_Fn = TypeVar("_Fn", bound=Callable[..., nn.Module])


def register_model(fn: _Fn) -> _Fn:
    """Register a model constructor under its function name.

    The constructor must accept ``num_classes`` as a keyword argument and return an ``nn.Module``.

    Args:
        fn: The constructor, for example ``def reidnet_small(num_classes=0, **kwargs)``.

    Returns:
        ``fn`` itself, unchanged, so that it can still be called directly.

    Raises:
        TypeError: ``fn`` is not callable.
        ValueError: a different constructor is already registered under the same name.

    Examples:
        >>> from torch import nn
        >>> @register_model
        ... def toy_identity(num_classes: int = 0) -> nn.Module:
        ...     return nn.Identity()
        >>> "toy_identity" in list_models("toy_*")
        True
        >>> _ = MODELS.unregister("toy_identity")  # leave the registry as it was
    """
    if not callable(fn):
        raise TypeError(f"register_model: expected a callable, got {type(fn).__name__}")
    name = fn.__name__
    known = MODELS.get(name) if name in MODELS else None
    # Re-registering the same function (module reloaded) is harmless; a different one is a clash.
    if known is not None and known.__qualname__ != fn.__qualname__:
        raise ValueError(f"register_model: a model named {name!r} is already registered")
    MODELS.register(name, fn, override=True)
    return fn


def list_models(pattern: str | None = None) -> list[str]:
    """Names of the registered models, sorted, optionally filtered by a shell-style pattern.

    Args:
        pattern: ``fnmatch`` pattern such as ``"reidnet_resnet*"``; ``None`` lists all.

    Returns:
        The sorted list of matching names.

    Examples:
        >>> "reidnet_small" in list_models()
        True
    """
    names = MODELS.names()
    if pattern is None:
        return names
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)]


def is_model(name: str) -> bool:
    """Whether ``name`` is a registered model.

    Args:
        name: Model name.

    Returns:
        ``True`` if :func:`create_model` knows the name.

    Examples:
        >>> is_model("reidnet_small"), is_model("nope")
        (True, False)
    """
    return name in MODELS


def create_model(name: str, num_classes: int = 0, **kwargs: object) -> nn.Module:
    """Build a registered model by name.

    Args:
        name: A name from :func:`list_models`.
        num_classes: Size of the identity classifier used in training; 0 builds none (an embedding
            model only).
        **kwargs: Passed to the constructor (for :class:`~reidexplain.zoo.ReIDNet`:
            ``embedding_dim``, ``gem_p``, ...).

    Returns:
        A freshly initialised model (nothing is downloaded).

    Raises:
        ValueError: unknown ``name`` (an :class:`~reidexplain.registry.UnknownNameError`, whose
            message lists the known ones) or negative ``num_classes``.

    Examples:
        >>> model = create_model("reidnet_small")
        >>> type(model).__name__
        'ReIDNet'
    """
    if name not in MODELS:
        raise UnknownNameError(f"create_model: unknown model {name!r}; known models: {list_models()}")
    if not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"create_model: `num_classes` must be an int >= 0, got {num_classes!r}")
    return MODELS.get(name)(num_classes=num_classes, **kwargs)
