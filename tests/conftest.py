"""Suite-wide settings: one torch thread.

The tests use tiny models, for which a second thread buys nothing, and on a busy 2-core machine
(CI, or developers running several jobs) extra threads oversubscribe the cores and slow everything
down several-fold. One thread also keeps floating-point reductions in a fixed order.
"""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
