"""Small toy models and data shared by the tests (keep names distinct per area: prefix them)."""

from __future__ import annotations

import torch
from torch import nn

# ---------------------------------------------------------------------------------------- baselines


class BaselineToyNet(nn.Module):
    """A tiny conv net ``(B,3,32,16) -> (B,8)`` with BatchNorm and Dropout (train/eval differ)."""

    def __init__(self, dim: int = 8) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.BatchNorm2d(6),
            nn.ReLU(),
            nn.Conv2d(6, 8, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d((2, 1))
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(16, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.pool(self.features(x)).flatten(1)))


class BaselineRegionNet(nn.Module):
    """Looks only at rows ``0:8`` and columns ``0:8`` of a ``(B,3,32,16)`` image."""

    def __init__(self, dim: int = 5) -> None:
        super().__init__()
        self.linear = nn.Linear(3 * 8 * 8, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(x[:, :, :8, :8].flatten(1)))


def baseline_toy_net(seed: int = 0) -> BaselineToyNet:
    """A seeded :class:`BaselineToyNet` with non-trivial BatchNorm running statistics."""
    torch.manual_seed(seed)
    model = BaselineToyNet()
    with torch.no_grad():
        bn = model.features[1]
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    return model


def baseline_images(n: int = 2, seed: int = 0, size: tuple[int, int] = (32, 16)) -> torch.Tensor:
    """Seeded random images ``(n,3,H,W)`` in ``[0,1]``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, *size, generator=gen)
