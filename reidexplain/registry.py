"""One registry type for everything reidexplain looks up by name.

Models (:mod:`reidexplain.zoo`), baselines (:mod:`reidexplain.baselines`), attribute schemas
(:mod:`reidexplain.attributes`), feature adapters (:mod:`reidexplain.adapters`) and training recipes
(:mod:`reidexplain.interpreter.recipes`) are each a :class:`Registry`: the same verbs, the same errors,
and the same way to register something for a while only (:meth:`Registry.registered`), so that a test or
a doctest leaves nothing behind.

Examples:
    >>> colours = Registry("colour")
    >>> @colours.register("red", label="Red", hex="#f00")
    ... def red() -> str:
    ...     return "red"
    >>> colours.get("red")(), colours.entry("red").metadata["hex"]
    ('red', '#f00')
    >>> colours.names("r*")
    ['red']
    >>> with colours.registered("blue", lambda: "blue"):
    ...     colours.names()
    ['blue', 'red']
    >>> colours.names()
    ['red']
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["Registry", "RegistryEntry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered (a ``KeyError`` and a ``ValueError``, so both ``except`` work).

    Examples:
        >>> issubclass(UnknownNameError, ValueError) and issubclass(UnknownNameError, KeyError)
        True
    """

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


@dataclass(frozen=True)
class RegistryEntry(Generic[T]):
    """A registered object with its name and metadata (a label, default settings, ...)."""

    name: str
    obj: T
    metadata: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Named objects of one kind, in the order they were registered.

    Args:
        kind: What the registry holds, used in error messages (``"baseline"``, ``"model"``).

    Examples:
        >>> shapes = Registry("shape")
        >>> _ = shapes.register("square", 4)
        >>> shapes.get("square"), "square" in shapes, len(shapes)
        (4, True, 1)
        >>> shapes.get("circle")
        Traceback (most recent call last):
        ...
        reidexplain.registry.UnknownNameError: unknown shape 'circle'; registered: ['square']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, RegistryEntry[T]] = {}

    # ------------------------------------------------------------------ writing
    def register(self, name: str | None = None, obj: Any = None, *, override: bool = False,
                 **metadata: Any) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, a decorator.

        Args:
            name: The name; ``None`` takes the object's ``__name__`` (decorator use).
            obj: The object. ``None``: return a decorator that registers what it decorates.
            override: Replace an entry of the same name instead of raising.
            **metadata: Kept with the entry (see :meth:`entry`).

        Returns:
            ``obj`` (or the decorator), unchanged.

        Raises:
            ValueError: the name is taken (and ``override`` is false), or empty.
        """

        def add(item: Any) -> Any:
            key = name if name is not None else getattr(item, "__name__", None)
            if not isinstance(key, str) or not key:
                raise ValueError(f"name: a {self.kind} needs a non-empty string name, got {key!r}")
            known = self._entries.get(key)
            if known is not None and not override and known.obj is not item:
                raise ValueError(f"name: a {self.kind} named {key!r} is already registered "
                                 "(pass override=True to replace it)")
            self._entries[key] = RegistryEntry(key, item, dict(metadata))
            return item

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> RegistryEntry[T]:
        """Remove ``name`` and return its entry.

        Raises:
            UnknownNameError: ``name`` is not registered.
        """
        entry = self.entry(name)
        del self._entries[name]
        return entry

    @contextmanager
    def registered(self, name: str, obj: T, **metadata: Any) -> Iterator[T]:
        """Register ``obj`` for the duration of a ``with`` block (what it replaced comes back after)."""
        previous = self._entries.get(name)
        self.register(name, obj, override=True, **metadata)
        try:
            yield obj
        finally:
            if previous is None:
                self._entries.pop(name, None)
            else:
                self._entries[name] = previous

    def move_to_front(self, name: str) -> None:
        """Make ``name`` the first entry of :meth:`entries` (for registries tried in order).

        Raises:
            UnknownNameError: ``name`` is not registered.
        """
        entry = self.entry(name)
        self._entries = {name: entry, **{k: v for k, v in self._entries.items() if k != name}}

    # ------------------------------------------------------------------ reading
    def entry(self, name: str) -> RegistryEntry[T]:
        """The entry registered as ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists the registered names.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(f"unknown {self.kind} {name!r}; registered: {self.names()}") from None

    def get(self, name: str) -> T:
        """The object registered as ``name`` (see :meth:`entry` for errors)."""
        return self.entry(name).obj

    def names(self, pattern: str | None = None) -> list[str]:
        """Registered names, sorted, optionally filtered by a shell pattern (``"*grad*"``)."""
        names = sorted(self._entries)
        return names if pattern is None else [n for n in names if fnmatch.fnmatch(n, pattern)]

    def entries(self) -> list[RegistryEntry[T]]:
        """All entries in registration order."""
        return list(self._entries.values())

    def find(self, predicate: Callable[[RegistryEntry[T]], bool]) -> list[RegistryEntry[T]]:
        """Entries, in registration order, for which ``predicate(entry)`` is true."""
        return [e for e in self._entries.values() if predicate(e)]

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
