"""The AMD interpreter network: a trunk, the attribute decomposition head and (black box) its own head.

Gray box (AMD-SPEC section 3): the trunk starts as a trainable copy of the target's trunk; its feature
map goes through ``Conv3x3(C -> 256) -> Conv1x1(256 -> M)`` (no bias, nothing in between) to logits
``z`` and the positive attribute maps ``A = exp(z)`` for ``z < 0``, ``sqrt(1 + z)`` otherwise. The
component embeddings ``e_k = head(F * A_k)`` use the target's own frozen head on the target's feature map
``F`` (see :mod:`reidexplain.adapters`).

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

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..attributes import AttributeSchema

__all__ = [
    "attention_activation",
    "AttributeDecomposition",
    "region_slots",
    "SmallTrunk",
    "EmbeddingHead",
    "AMDInterpreter",
]


LOCAL_WIDTH = 32
"""Hidden width of the per-cell features of shared maps."""
LOCAL_GRID = 4
"""Each map cell is described by a ``LOCAL_GRID x LOCAL_GRID`` grid of its mean colours."""


SHARPNESS_INIT = 0.05
"""Initial sharpness ``beta_k`` of shared maps (see :class:`AttributeDecomposition`)."""
GATE_FLOOR = -15.0
"""Soft lower bound of the gates and of the spatial logits of shared maps (see :func:`_soft_floor`)."""
CELL_NORM_EPS = 1e-6
"""Added to each cell's mean square before its hidden features are scaled to unit RMS (``cell_norm``)."""


def _soft_floor(x: torch.Tensor, floor: float) -> torch.Tensor:
    """``floor + softplus(x - floor)``: ``x`` above the floor, smoothly bounded below by it (and 0 -> ~0)."""
    return floor + F.softplus(x - floor)


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

    With ``slots`` (AMD+, see :func:`region_slots`), attribute ``k`` no longer has a spatial map of its
    own. The 1x1 convolution gives one spatial logit map ``s_r`` per *region* ``r``; its softmax over
    positions ``alpha_r`` pools the hidden features into ``h_r``, from which a linear layer gives a gate
    ``g_k`` per attribute and image, and

    .. math:: z_k = g_k + \\beta_k \\left(s_{r(k)} - \\max s_{r(k)}\\right)

    so the attributes decided in one place (the colours of one garment) share where their maps look,
    which every image trains (each person wears one upper colour), while the gate says how much each
    attribute weighs in that image. The learned sharpness ``beta_k > 0`` starts small (the maps start
    nearly flat, so ``d_hat`` starts close to ``d`` as with the paper's head) and only sets how broad
    the map is: the peak of ``A_k`` is ``act(g_k)`` and lies where its region's map peaks, whatever
    ``beta_k``.

    Where a region looks is learned from local evidence. Each cell of the map's grid is described from
    its own pixels only (a 4x4 grid of mean colours through a 1x1 layer); those local features add a
    term to ``s_r``, so that a region can follow the pixels precisely (the trunk's features have
    receptive fields that cover most of the person), and a per-cell classifier reads the attributes
    from them, averaged with ``alpha_r(k)`` into a recognition logit (see :meth:`decompose`). Trained on
    labels, that logit can only be right if the region attends to the cells where its attributes are
    seen.

    Args:
        in_channels: Channels ``C`` of the trunk's feature map.
        num_attributes: ``M``.
        hidden: Width of the middle layer. Default: 256 (AMD-SPEC 3.3).
        slots: Optional region index of each attribute (``M`` ints, regions ``0 .. R-1``); ``None``: the
            paper's head, one free map per attribute.
        partition: ``M + 1`` maps that sum to 1 at every cell (a softmax over the attributes and a last
            map for the rest of the image: background, pose, light), for the linear decomposition of
            :class:`~reidexplain.interpreter.recipes.LinearAMD` (AMD-SPEC section 11). With ``slots``
            the attributes' logits are the shared maps' ``z_k`` and the rest has a spatial logit map of
            its own.
        logit_cap: With ``slots``: bound the regions' spatial logits softly to ``(-cap, cap)``
            (``cap * tanh(s / cap)``), so that a region's softmax over positions cannot saturate on one
            cell early in a fit and stop learning there. ``None``: unbounded (AMD+, ``amd-linear``).
        fixed_pooling: With ``slots``: pool the features that the gates and the read-out read with the
            regions' attention held fixed (no gradient into *where* a region looks). Then only the
            per-cell evidence moves the maps. Without ``cell_norm``, a trunk trained from scratch (black
            box) otherwise learns to gather what the read-out needs in one border cell, and every map
            points there; with it, this lever is not needed.
        cell_norm: With ``slots``: scale each cell's hidden features to unit root mean square before the
            regions' logits and pooling read them, so that where a region looks depends on what a cell
            holds, not on how large its activations are. A CNN's border cells (zero padding) have the
            largest activations; without it, every region of a BoT ResNet-18 looked at the corner.
        positions: With ``slots``: the grid's ``(h, w)``, to learn a prior logit map of where each region
            lies (zero at the start, added to ``s_r``; resized for another grid). ``None``: no prior.
        sharpness: With ``slots``: the initial sharpness ``beta_k`` of every map. At 1 a map is its
            region's attention itself (divided by its maximum, times the gate); the default, 0.05, starts
            AMD+'s maps nearly flat, so that its ``d_hat`` starts close to ``d``.

    Examples:
        >>> import torch
        >>> AttributeDecomposition(4, 3, hidden=16).logits(torch.rand(1, 4, 5, 5)).shape
        torch.Size([1, 3, 5, 5])
        >>> shared = AttributeDecomposition(4, 3, hidden=16, slots=[0, 0, 1])
        >>> maps = shared(torch.rand(1, 4, 5, 5), images=torch.rand(1, 3, 20, 20))
        >>> bool((maps == 1).all())  # starts at A = 1 like the paper's head
        True
        >>> rest = AttributeDecomposition(4, 3, hidden=16, partition=True)(torch.rand(1, 4, 5, 5))
        >>> rest.shape, bool(torch.allclose(rest.sum(dim=1), torch.ones(1, 5, 5)))
        (torch.Size([1, 4, 5, 5]), True)
        >>> both = AttributeDecomposition(4, 3, hidden=16, slots=[0, 0, 1], partition=True)
        >>> maps = both(torch.rand(1, 4, 5, 5), images=torch.rand(1, 3, 20, 20))
        >>> maps.shape, bool(torch.allclose(maps, torch.full_like(maps, 0.25)))  # starts uniform
        (torch.Size([1, 4, 5, 5]), True)
    """

    def __init__(self, in_channels: int, num_attributes: int, hidden: int = 256,
                 slots: Sequence[int] | None = None, partition: bool = False, logit_cap: float | None = None,
                 fixed_pooling: bool = False, cell_norm: bool = False, sharpness: float = SHARPNESS_INIT,
                 positions: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.partition = bool(partition)
        if logit_cap is not None and not float(logit_cap) > 0:
            raise ValueError(f"logit_cap: expected a positive bound or None, got {logit_cap}")
        if not float(sharpness) > 0:
            raise ValueError(f"sharpness: expected a positive initial sharpness, got {sharpness}")
        if slots is None and (logit_cap is not None or fixed_pooling or cell_norm or sharpness != SHARPNESS_INIT
                              or positions is not None):
            raise ValueError("logit_cap/fixed_pooling/cell_norm/sharpness/positions: only shared maps (slots) have "
                             "regions to bound, pool, normalise for, sharpen or place")
        if positions is not None and (len(positions) != 2 or min(int(n) for n in positions) < 1):
            raise ValueError(f"positions: expected the grid's (h, w), got {positions}")
        self.logit_cap = None if logit_cap is None else float(logit_cap)
        self.fixed_pooling = bool(fixed_pooling)
        self.cell_norm = bool(cell_norm)
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_in", nonlinearity="linear")
        self.register_parameter("position", None)
        if slots is None:
            self.register_buffer("slots", None)
            outputs = num_attributes + int(self.partition)
        else:
            index = torch.as_tensor(list(slots), dtype=torch.long)
            if index.shape != (num_attributes,) or (index.numel() and index.min() < 0):
                raise ValueError(f"slots: expected {num_attributes} non-negative region indices, got {list(slots)}")
            regions = int(index.max()) + 1 if index.numel() else 0
            if index.numel() and sorted(set(index.tolist())) != list(range(regions)):
                raise ValueError(f"slots: regions must be numbered 0..R-1 without gaps, got {list(slots)}")
            self.register_buffer("slots", index)
            # With a partition, one more spatial logit map: the rest of the image's (no gate, no region).
            outputs = regions + int(self.partition)
            # One weight row per attribute, applied to the pooled features of its region.
            self.gate_weight = nn.Parameter(torch.zeros(num_attributes, hidden))
            self.gate_bias = nn.Parameter(torch.zeros(num_attributes))
            # Per-cell features of the cell's own pixels (a 4x4 grid of mean colours per cell).
            self.local = nn.Sequential(nn.Conv2d(3 * LOCAL_GRID**2, LOCAL_WIDTH, 1), nn.ReLU())
            self.local_logits = nn.Conv2d(LOCAL_WIDTH, num_attributes, 1)
            self.local_where = nn.Conv2d(LOCAL_WIDTH, outputs, 1, bias=False)
            nn.init.zeros_(self.local_where.weight)
            # A learned prior of where each region lies on the grid (persons are upright in ReID crops),
            # zero at the start; resized when an image gives another grid.
            if positions is not None:
                self.position = nn.Parameter(torch.zeros(outputs, *(int(n) for n in positions)))
            # Per-attribute sharpness beta_k = softplus(.) of its region's map, by default small at the
            # start: the maps then start nearly flat (d_hat close to d, as with the paper's head) with
            # their peak where the region looks, and sharpen only as far as the losses ask.
            self.sharpness = nn.Parameter(torch.full((num_attributes,), math.log(math.expm1(float(sharpness)))))
            self.recognition_weight = nn.Parameter(torch.randn(num_attributes, hidden) * hidden ** -0.5)
            self.recognition_bias = nn.Parameter(torch.zeros(num_attributes))
        self.classifier = nn.Conv2d(hidden, outputs, 1, bias=False)
        # Zero: every map starts at A = 1, where d_hat = d exactly (gray box).
        nn.init.zeros_(self.classifier.weight)

    @property
    def shared(self) -> bool:
        """Whether the maps are gated and shared per region (``slots`` given)."""
        return self.slots is not None

    def decompose(self, features: torch.Tensor,
                  images: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``z`` ``(B,M,h,w)`` and, with shared maps, ``(B,2,M)`` recognition logits (else ``None``).

        Recognition logits of attribute ``k``: ``[:, 0]`` the per-cell classifier's output on the image's
        own cells, averaged where region ``r(k)`` looks; ``[:, 1]`` a linear read-out of the hidden
        features pooled there, the features the gates read. Trained on labels (AMD+), the first teaches
        each region where its attributes can be seen, the second makes the gates' features carry them.

        Raises:
            ValueError: shared maps without ``images`` (their maps depend on each cell's pixels).
        """
        hidden = self.conv(features)
        if self.cell_norm:
            hidden = hidden * torch.rsqrt(hidden.pow(2).mean(1, keepdim=True) + CELL_NORM_EPS)
        z = self.classifier(hidden)
        if self.slots is None:
            return z, None
        if images is None:
            raise ValueError("images: shared maps read each cell's pixels; pass the images with the features")
        local = self.local_features(images, z.shape[-2:])
        z = z + self.local_where(local)
        if self.position is not None:
            prior = self.position[None]
            if prior.shape[-2:] != z.shape[-2:]:
                prior = F.interpolate(prior, size=z.shape[-2:], mode="bilinear", align_corners=False)
            z = z + prior
        if self.logit_cap is not None:
            z = self.logit_cap * torch.tanh(z / self.logit_cap)
        rest = None
        if self.partition:  # the rest's logit map stays as it is: the softmax of activate() sets its part
            z, rest = z[:, :-1], z[:, -1:]
        flat = z.flatten(2)
        weights = flat.softmax(dim=2)
        attention = weights[:, self.slots]  # (B,M,hw)
        pooling = weights.detach() if self.fixed_pooling else weights
        pooled = torch.einsum("brn,bcn->brc", pooling, hidden.flatten(2))[:, self.slots]
        # Softly floored: a map far below 1 is still a map (exp(-30) is representable in float32), so
        # the map of an absent attribute keeps the shape of its region instead of underflowing to 0.
        gates = _soft_floor((pooled * self.gate_weight).sum(-1) + self.gate_bias, GATE_FLOOR)
        evidence = (self.local_logits(local).flatten(2) * attention).sum(-1)
        read_out = (pooled * self.recognition_weight).sum(-1) + self.recognition_bias
        recognised = torch.stack([evidence, read_out], dim=1)
        z = _soft_floor(z - flat.amax(dim=2)[:, :, None, None], GATE_FLOOR)
        beta = F.softplus(self.sharpness)[None, :, None, None]
        z = beta * z[:, self.slots] + gates[:, :, None, None]
        return (z if rest is None else torch.cat([z, rest], dim=1)), recognised

    def local_features(self, images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(B,LOCAL_WIDTH,h,w)`` features of each cell of an ``h x w`` grid, from that cell's pixels only."""
        h, w = size
        grid = F.adaptive_avg_pool2d(images, (LOCAL_GRID * h, LOCAL_GRID * w))
        return self.local(F.pixel_unshuffle(grid, LOCAL_GRID))

    def activate(self, z: torch.Tensor) -> torch.Tensor:
        """Maps from logits: a softmax over the maps for a partition, else :func:`attention_activation`."""
        return z.softmax(dim=1) if self.partition else attention_activation(z)

    def logits(self, features: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``z`` ``(B,M,h,w)`` (shared maps need the ``images``)."""
        return self.decompose(features, images)[0]

    def forward(self, features: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """Attribute maps ``A`` ``(B,M,h,w)``, positive (shared maps need the ``images``); with
        ``partition``, ``(B,M+1,h,w)`` maps summing to 1, the last one for the rest of the image."""
        return self.activate(self.logits(features, images))


def region_slots(schema: AttributeSchema) -> list[int]:
    """Region index per attribute: one shared region per one-hot group, one of its own for the rest.

    The members of a one-hot group (the colours of a garment: every person has exactly one) are decided
    in the same pixels, so they can share one spatial map (see :class:`AttributeDecomposition`).

    Examples:
        >>> from reidexplain.attributes import get_schema
        >>> slots = region_slots(get_schema("market1501"))
        >>> len(slots), max(slots) + 1  # 26 attributes in 11 regions
        (26, 11)
    """
    slots: list[int] = []
    region: dict[str, int] = {}
    for name in schema.names:
        group = schema.group_of(name)
        key = group if group in schema.one_hot_groups else f"attribute:{name}"
        slots.append(region.setdefault(key, len(region)))
    return slots


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
            :class:`~reidexplain.interpreter.model.AMDModel`).
        in_channels: ``C``.
        num_attributes: ``M``.
        hidden: Width of the decomposition head's middle layer.
        embedding_head: The black-box head (``None`` in gray-box mode).
        slots: Region of each attribute for gated, shared maps (AMD+); ``None``: the paper's head.
        partition: ``M + 1`` maps summing to 1 (see :class:`AttributeDecomposition`).
        logit_cap: Soft bound of shared maps' spatial logits (see :class:`AttributeDecomposition`).
        fixed_pooling: Shared maps' pooling without gradient into where they look (same).
        cell_norm: Shared maps read each cell's hidden features at unit RMS (same).
        sharpness: Initial sharpness of shared maps (same).
        positions: Grid ``(h, w)`` of shared maps' learned region prior (same).

    Examples:
        >>> import torch
        >>> net = AMDInterpreter(SmallTrunk(), 128, 5, embedding_head=EmbeddingHead(128, 16))
        >>> maps, feats = net(torch.rand(2, 3, 64, 32))
        >>> maps.shape, feats.shape
        (torch.Size([2, 5, 8, 4]), torch.Size([2, 128, 8, 4]))
    """

    def __init__(self, trunk: nn.Module | None, in_channels: int, num_attributes: int, hidden: int = 256,
                 embedding_head: EmbeddingHead | None = None, slots: Sequence[int] | None = None,
                 partition: bool = False, logit_cap: float | None = None, fixed_pooling: bool = False,
                 cell_norm: bool = False, sharpness: float = SHARPNESS_INIT,
                 positions: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.trunk = trunk
        self.decomposition = AttributeDecomposition(in_channels, num_attributes, hidden, slots, partition,
                                                    logit_cap, fixed_pooling, cell_norm, sharpness, positions)
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
        maps, feats, _ = self.decompose(images, features)
        return maps, feats

    def decompose(self, images: torch.Tensor, features: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Like :meth:`forward`, plus the attribute recognition logits of shared maps (else ``None``)."""
        if self.trunk is None:
            if features is None:
                raise ValueError("features: an interpreter without a trunk needs the target's feature map")
            feats = features
        else:
            feats = self.trunk(images)
        z, recognised = self.decomposition.decompose(feats, images)
        return self.decomposition.activate(z), feats, recognised
