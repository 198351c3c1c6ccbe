"""Small toy models and data shared by the tests (keep names distinct per area: prefix them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

# ---------------------------------------------------------------------------------------- benchmarks

#: The repository's ``benchmarks/`` folder: the scripts and the ``reidbench`` package they share, which is
#: experiment code and not installed with ``reidexplain``.
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def use_benchmarks() -> None:
    """Make ``benchmarks/`` importable (``import reidbench``), as it is for a script run from there.

    ``conftest.py`` calls it once, before any test module is imported; calling it again does nothing.
    """
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))


def benchmark_script(name: str) -> ModuleType:
    """A script of ``benchmarks/`` (``"make_report"``) imported as a module (the folder is not a package)."""
    use_benchmarks()
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


# ---------------------------------------------------------------------------------------- AMD explainer


def amd_sequential_net(seed: int = 0, dim: int = 12) -> nn.Sequential:
    """A seeded ``nn.Sequential`` CNN ``(B,3,32,16) -> (B,dim)`` (feature map 16 x 8 x 4)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, dim),
    )
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


class AMDLinearHeadNet(nn.Module):
    """A CNN ``(B,3,32,16) -> (B,6)`` whose head is affine after the grid: GAP, BNNeck, a linear
    projection (the linear decomposition, ``recipe="amd-linear"``, is exact for it)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.neck = nn.BatchNorm1d(12)
        self.neck.running_mean.normal_(0, 0.01)
        self.neck.running_var.uniform_(0.5, 2.0)
        self.proj = nn.Linear(12, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.neck(self.body(x).mean(dim=(2, 3))))


def amd_linear_head_net(centre_on: torch.Tensor | None = None) -> AMDLinearHeadNet:
    """:class:`AMDLinearHeadNet` in eval mode; with ``centre_on`` images, its BNNeck standardises their
    pooled features and the projection has no bias, so that their embeddings are centred and their
    distances (euclidean and cosine) are of order 1, not the ``1e-6`` cosine of the bias-dominated net."""
    net = AMDLinearHeadNet().eval()
    if centre_on is not None:
        with torch.no_grad():
            pooled = net.body(centre_on).mean(dim=(2, 3))
            net.neck.running_mean.copy_(pooled.mean(0))
            net.neck.running_var.copy_(pooled.var(0) + 1e-6)
            net.proj.bias.zero_()
    return net


class AMDTimmToy(nn.Module):
    """timm-style toy: ``forward_features`` (B,16,h,w) and ``forward_head`` (pool + BN-neck)."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, dim, 3, stride=2, padding=1), nn.ReLU())
        self.bnneck = nn.BatchNorm1d(dim)
        self.dropout = nn.Dropout(0.3)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.bnneck(self.dropout(f.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class AMDCustomNet(nn.Module):
    """A model with a custom forward (no Sequential, no forward_head): split with a hook."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.block = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.proj = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.block(torch.relu(self.stem(x))))
        return self.proj(f.amax(dim=(2, 3)) + f.mean(dim=(2, 3)))


class AMDFlatNet(nn.Module):
    """No spatial feature map at all (an MLP on pixels): black-box only."""

    def __init__(self, size: tuple[int, int] = (32, 16)) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * size[0] * size[1], 24), nn.ReLU(), nn.Linear(24, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class AMDTupleNet(nn.Module):
    """Returns ``(embedding, logits)`` even in eval mode: the explainer must say how to select."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.conv(x).mean(dim=(2, 3))
        return f, f * 2


class AMDNanNet(nn.Module):
    """Returns NaN embeddings."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3)) * float("nan")


def amd_batches(num_ids: int = 4, per_id: int = 4, num_attributes: int = 5, size: tuple[int, int] = (32, 16),
                batch_size: int = 8, seed: int = 0, fmt: str = "dict") -> list:
    """Seeded batches of persons whose attributes (per identity) colour horizontal bands of the image.

    Attribute ``k`` brightens band ``k`` of the image, so that models see the attributes. ``fmt``:
    ``"dict"`` (``image``, ``pid``, ``camid``, ``attributes``), ``"pair"`` ``(images, attributes)`` or
    ``"triple"`` ``(images, pids, attributes)``.
    """
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    attrs = (torch.rand(num_ids, num_attributes, generator=gen) < 0.5).float()
    colours = torch.rand(num_ids, 3, 1, 1, generator=gen)
    images, labels, pids, camids = [], [], [], []
    band = max(1, h // num_attributes)
    for pid in range(num_ids):
        for k in range(per_id):
            img = 0.3 * colours[pid] + 0.2 * torch.rand(3, h, w, generator=gen)
            for a in range(num_attributes):
                if attrs[pid, a]:
                    img[:, a * band:(a + 1) * band] += 0.5
            images.append(img.clamp(0, 1))
            labels.append(attrs[pid])
            pids.append(pid)
            camids.append(k % 2)
    order = torch.randperm(len(images), generator=gen)
    x = torch.stack(images)[order]
    y = torch.stack(labels)[order]
    p = torch.tensor(pids)[order]
    c = torch.tensor(camids)[order]
    out = []
    for s in range(0, len(x), batch_size):
        sl = slice(s, s + batch_size)
        if fmt == "dict":
            out.append({"image": x[sl], "pid": p[sl], "camid": c[sl], "attributes": y[sl]})
        elif fmt == "pair":
            out.append((x[sl], y[sl]))
        else:
            out.append((x[sl], p[sl], y[sl]))
    return out


class InterruptingLoader:
    """The batches of a list, raising once after ``after`` batches (a crash mid-epoch)."""

    def __init__(self, batches: list, after: int) -> None:
        self.batches, self.after, self.read = batches, after, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            if self.read == self.after:
                self.read += 1
                raise RuntimeError("the disk went away")
            self.read += 1
            yield batch
