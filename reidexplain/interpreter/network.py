"""The AMD interpreter network: a trunk, the attribute decomposition head and (black box) its own head.

Gray box (AMD-SPEC section 3): the trunk starts as a trainable copy of the target's trunk; its feature
map goes through ``Conv3x3(C -> 256) -> Conv1x1(256 -> M)`` (no bias, nothing in between) to logits
``z`` and the positive attribute maps ``A = exp(z)`` for ``z < 0``, ``sqrt(1 + z)`` otherwise. The
component embeddings ``e_k = head(F * A_k)`` use the target's own frozen head on the target's feature map
``F`` (see :mod:`reidexplain.interpreter.split`).

Black box: no feature map of the target is available, so the interpreter masks its own trunk's map and
pools it with its own learned head (:class:`EmbeddingHead`).

The last convolution starts at zero, so every map starts as ``A = 1``: in gray-box mode
``e_k = head(F) = e`` for every ``k`` and ``d_hat = d`` exactly before training; the attribute prior
then redistributes the distance over the attributes.

Examples:
    >>> import torch
    >>> head = AttributeDecomposition(in_channels=8, num_attributes=5)
    >>> maps = head(torch.rand(2, 8, 6, 3))
    >>> maps.shape, bool((maps == 1).all())
    (torch.Size([2, 5, 6, 3]), True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from .split import TargetSplit

__all__ = [
    "attention_activation",
    "AttributeDecomposition",
    "SmallTrunk",
    "EmbeddingHead",
    "AMDInterpreter",
    "Components",
    "component_embeddings",
]


def attention_activation(z: torch.Tensor) -> torch.Tensor:
    """AMD's positive activation: ``exp(z)`` for ``z < 0``, ``sqrt(1 + z)`` for ``z >= 0``.

    Continuous at 0 (both give 1); unlike a softmax it does not normalise the maps against each other.

    Examples:
        >>> import torch
        >>> attention_activation(torch.tensor([-1.0, 0.0, 3.0]))
        tensor([0.3679, 1.0000, 2.0000])
    """
    # Feed each branch only its own domain, so that the unused branch cannot produce inf or NaN
    # gradients. torch.where rather than clamp: clamp's gradient is 0 at the boundary, and z = 0 is
    # exactly where training starts (the last convolution is initialised to zero).
    negative = z < 0
    zero = torch.zeros_like(z)
    return torch.where(negative, torch.exp(torch.where(negative, z, zero)),
                       torch.sqrt(1 + torch.where(negative, zero, z)))


class AttributeDecomposition(nn.Module):
    """``Conv3x3(C -> hidden) -> Conv1x1(hidden -> M)``, both without bias, then the AMD activation.

    Args:
        in_channels: Channels ``C`` of the trunk's feature map.
        num_attributes: ``M``.
        hidden: Width of the middle layer. Default: 256 (AMD-SPEC 3.3).

    Examples:
        >>> import torch
        >>> AttributeDecomposition(4, 3, hidden=16).logits(torch.rand(1, 4, 5, 5)).shape
        torch.Size([1, 3, 5, 5])
    """

    def __init__(self, in_channels: int, num_attributes: int, hidden: int = 256) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False)
        self.classifier = nn.Conv2d(hidden, num_attributes, 1, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="linear")
        # Zero: every map starts at A = 1, where d_hat = d exactly (gray box).
        nn.init.zeros_(self.classifier.weight)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``z`` ``(B,M,h,w)``."""
        return self.classifier(self.conv(features))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Attribute maps ``A`` ``(B,M,h,w)``, positive."""
        return attention_activation(self.logits(features))


class SmallTrunk(nn.Sequential):
    """A small CNN trunk for the black-box interpreter (stride 8, BatchNorm, ReLU).

    Args:
        widths: Output channels of the four stages.

    Examples:
        >>> import torch
        >>> SmallTrunk()(torch.rand(1, 3, 64, 32)).shape
        torch.Size([1, 128, 8, 4])
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 128)) -> None:
        layers: list[nn.Module] = []
        cin = 3
        for i, width in enumerate(widths):
            stride = 2 if i < 3 else 1
            layers += [nn.Conv2d(cin, width, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            cin = width
        super().__init__(*layers)
        self.out_channels = cin


class EmbeddingHead(nn.Module):
    """The black-box interpreter's own head: average pooling and a linear map, times a learned scale.

    No BatchNorm: its running statistics lag behind a short fit, so that eval-mode distances would
    differ from the trained ones; the scale is set on the first batch instead (see ``calibrated``).

    Args:
        in_channels: Channels of the masked feature maps.
        dim: Size of the component embeddings.

    Examples:
        >>> import torch
        >>> EmbeddingHead(8, 4).eval()(torch.rand(3, 8, 5, 2)).shape
        torch.Size([3, 4])
    """

    def __init__(self, in_channels: int, dim: int = 256) -> None:
        super().__init__()
        self.linear = nn.Linear(in_channels, dim, bias=False)
        # log of a global scale, set on the first batch so that d_hat starts at the target's scale.
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.register_buffer("calibrated", torch.zeros((), dtype=torch.bool))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """``(N,C,h,w)`` -> ``(N,dim)``."""
        return self.linear(features.mean(dim=(2, 3))) * self.log_scale.exp()


class AMDInterpreter(nn.Module):
    """Trunk + attribute decomposition head (+ own embedding head in black-box mode).

    Args:
        trunk: Module mapping images ``(B,3,H,W)`` to a feature map ``(B,C,h,w)``, or ``None`` to read
            the target's own feature map ``F`` (gray box with a shared, frozen trunk: faster, see
            :func:`component_embeddings`).
        in_channels: ``C``.
        num_attributes: ``M``.
        hidden: Width of the decomposition head's middle layer.
        embedding_head: The black-box head (``None`` in gray-box mode).

    Examples:
        >>> import torch
        >>> net = AMDInterpreter(SmallTrunk(), 128, 5, embedding_head=EmbeddingHead(128, 16))
        >>> maps, feats = net(torch.rand(2, 3, 64, 32))
        >>> maps.shape, feats.shape
        (torch.Size([2, 5, 8, 4]), torch.Size([2, 128, 8, 4]))
    """

    def __init__(self, trunk: nn.Module | None, in_channels: int, num_attributes: int, hidden: int = 256,
                 embedding_head: EmbeddingHead | None = None) -> None:
        super().__init__()
        self.trunk = trunk
        self.decomposition = AttributeDecomposition(in_channels, num_attributes, hidden)
        self.embedding_head = embedding_head
        self.num_attributes = num_attributes

    @property
    def black_box(self) -> bool:
        """Whether the interpreter has its own embedding head."""
        return self.embedding_head is not None

    @property
    def shared_trunk(self) -> bool:
        """Whether the maps are computed from the target's feature map (no trunk of its own)."""
        return self.trunk is None

    def forward(self, images: torch.Tensor,
                features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attribute maps ``(B,M,h,w)`` and the trunk's feature map ``(B,C,h,w)``.

        Args:
            images: ``(B,3,H,W)``.
            features: The target's feature map; required (and only used) without a trunk.
        """
        if self.trunk is None:
            if features is None:
                raise ValueError("features: an interpreter without a trunk needs the target's feature map")
            feats = features
        else:
            feats = self.trunk(images)
        return self.decomposition(feats), feats


class Components(NamedTuple):
    """Per-image quantities from which every pairwise AMD quantity follows.

    Attributes:
        embeddings: ``(B,D)`` the target's embeddings.
        components: ``(B,M,D')`` component embeddings ``e_k``.
        maps: ``(B,M,h,w)`` attribute maps.
    """

    embeddings: torch.Tensor
    components: torch.Tensor
    maps: torch.Tensor


def component_embeddings(split: TargetSplit, interpreter: AMDInterpreter,
                         images: torch.Tensor) -> Components:
    """Target embeddings, component embeddings and maps of a batch of images.

    Gradients flow into the interpreter (not into the frozen target); wrap in ``torch.no_grad()`` for
    inference.

    Args:
        split: The split target.
        interpreter: The interpreter network.
        images: ``(B,3,H,W)`` on the split's device.

    Returns:
        A :class:`Components`.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from reidexplain.interpreter.split import split_model
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> split = split_model(net, torch.rand(2, 3, 8, 4))
        >>> interp = AMDInterpreter(split.make_trunk(), 4, 3, hidden=8)
        >>> out = component_embeddings(split, interp, torch.rand(2, 3, 8, 4))
        >>> torch.allclose(out.components[:, 0], out.embeddings, atol=1e-6)  # maps start at 1
        True
    """
    feats, emb = split.embed(images)
    maps, own = interpreter(images, feats)
    if interpreter.black_box:
        b, m = maps.shape[:2]
        masked = (own.unsqueeze(1) * maps.unsqueeze(2)).flatten(0, 1)
        comps = interpreter.embedding_head(masked).reshape(b, m, -1)
    else:
        if maps.shape[-2:] != feats.shape[-2:]:
            raise RuntimeError(f"interpreter maps {tuple(maps.shape[-2:])} and target features "
                               f"{tuple(feats.shape[-2:])} differ in size")
        comps = split.masked_embeddings(images, feats, maps)
    return Components(emb, comps, maps)
