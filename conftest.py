"""Isolation for every test and doctest (both are collected from here: tests/ and reidexplain/).

pytest-randomly runs the suite in a shuffled order, so no test may see what another one left behind.
Each test and each doctest here runs between a snapshot and a restore of the process-wide state that
reidexplain or its tests touch:

* every :class:`reidexplain.registry.Registry` of a ``reidexplain`` module (models, attribute schemas,
  baselines, ...): entries added during the test are removed, replaced or removed ones come back, and a
  :class:`RegistryLeakWarning` names them, since a test or doctest should clean up itself. All
  ``reidexplain`` modules are imported here first (``--doctest-modules`` does so too), so that what a
  module registers when it is imported is never mistaken for a test's leftovers;
* the root and ``reidexplain`` loggers (level, handlers, propagation), which ``cli.main`` configures;
* torch's thread count, default dtype and grad mode;
* matplotlib's ``rcParams``, and figures opened during the test are closed.

The torch, numpy and ``random`` seeds are pytest-randomly's job (it reseeds before each test).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import matplotlib
import pytest

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import reidexplain  # noqa: E402
from reidexplain.registry import Registry, RegistryEntry  # noqa: E402

for _info in pkgutil.walk_packages(reidexplain.__path__, "reidexplain."):
    importlib.import_module(_info.name)


class RegistryLeakWarning(UserWarning):
    """A test or doctest left a registry changed (the conftest restored it)."""


def _registries() -> dict[int, tuple[str, Registry]]:
    """The registries of every loaded reidexplain module, by identity (one object may be re-exported)."""
    found: dict[int, tuple[str, Registry]] = {}
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "reidexplain" or module_name.startswith("reidexplain.")):
            continue
        for attr, value in list(vars(module).items()):
            if isinstance(value, Registry) and id(value) not in found:
                found[id(value)] = (f"{module_name}.{attr}", value)
    return found


def _restore(registry: Registry, saved: list[RegistryEntry[Any]]) -> list[str]:
    """Put ``registry`` back to ``saved`` (entries in order); return the names that had changed."""
    now = {e.name: e for e in registry.entries()}
    before = {e.name: e for e in saved}
    changed = sorted(n for n in set(now) | set(before) if now.get(n) is not before.get(n))
    if changed or list(now) != list(before):
        for name in list(now):
            registry.unregister(name)
        for entry in saved:
            registry.register(entry.name, entry.obj, override=True, **entry.metadata)
    return changed


@pytest.fixture(autouse=True)
def _isolate_global_state() -> Iterator[None]:
    registries = {key: (where, reg, reg.entries()) for key, (where, reg) in _registries().items()}
    loggers = [logging.getLogger(), logging.getLogger("reidexplain")]
    logger_state = [(lg, lg.level, list(lg.handlers), lg.propagate) for lg in loggers]
    threads, dtype, grad = torch.get_num_threads(), torch.get_default_dtype(), torch.is_grad_enabled()
    figures = set(plt.get_fignums())
    with matplotlib.rc_context():
        yield
    for number in set(plt.get_fignums()) - figures:
        plt.close(number)
    torch.set_num_threads(threads)
    torch.set_default_dtype(dtype)
    torch.set_grad_enabled(grad)
    for lg, level, handlers, propagate in logger_state:
        lg.setLevel(level)
        lg.handlers[:] = handlers
        lg.propagate = propagate
    leaks = []
    for where, reg, saved in registries.values():
        changed = _restore(reg, saved)
        if changed:
            leaks.append(f"{where}: {changed}")
    if leaks:
        warnings.warn(f"the test left registries changed (restored): {'; '.join(leaks)}",
                      RegistryLeakWarning, stacklevel=1)
