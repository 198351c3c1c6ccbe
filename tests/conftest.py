"""Suite-wide settings: one torch thread, and ``benchmarks/`` importable.

The tests use tiny models, for which a second thread buys nothing, and on a busy 2-core machine
(CI, or developers running several jobs) extra threads oversubscribe the cores and slow everything
down several-fold. One thread also keeps floating-point reductions in a fixed order.

The benchmark code (``benchmarks/reidbench``) is not installed with the package; it is put on
``sys.path`` here, before any test module imports it (see :func:`helpers.use_benchmarks`).
"""

from __future__ import annotations

import matplotlib
import pytest
import torch
from helpers import use_benchmarks

matplotlib.use("Agg")
use_benchmarks()


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
