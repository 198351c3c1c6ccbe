"""ReIDNet: a convolutional backbone, GeM pooling and a BN-neck (the "strong baseline" recipe).

The model is split the timm way, which is what the AMD interpreter relies on:

* :meth:`ReIDNet.forward_features` ``(B,3,H,W) -> (B,C,h,w)``: the last spatial feature map;
* :meth:`ReIDNet.forward_head` ``(B,C,h,w) -> (B,D)``: GeM pooling, an optional linear projection and
  the BN-neck; no other spatial computation, so ``head(F * A)`` is meaningful for a mask ``A``;
* :meth:`ReIDNet.forward`: in eval mode ``forward_head(forward_features(x))``, the embedding after the
  BN-neck; in train mode ``(features_before_bnneck, logits)`` for the triplet and cross-entropy losses.

Examples:
    >>> import torch
    >>> from reidexplain.zoo import create_model
    >>> model = create_model("reidnet_small").eval()
    >>> x = torch.rand(2, 3, 128, 64)
    >>> model.forward_features(x).shape
    torch.Size([2, 128, 16, 8])
    >>> model(x).shape
    torch.Size([2, 128])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torchvision
from torch import nn

from reidexplain.zoo.registry import register_model

__all__ = ["GeM", "ReIDNet", "SmallBackbone", "BACKBONES"]

# Name -> (torchvision constructor, channels of its last stage).
_RESNETS = {
    "resnet18": (torchvision.models.resnet18, 512),
    "resnet34": (torchvision.models.resnet34, 512),
    "resnet50": (torchvision.models.resnet50, 2048),
}
BACKBONES = ("small", *_RESNETS)


class GeM(nn.Module):
    """Generalised-mean pooling ``(mean(x^p))^(1/p)`` over the spatial axes, with a learnable ``p``.

    ``p = 1`` is average pooling and ``p -> inf`` tends to max pooling.

    Args:
        p: Initial exponent (> 0).
        eps: Inputs are clamped to at least ``eps`` so that ``x^p`` and its gradient stay finite.
        learnable: Whether ``p`` is a trainable parameter.

    Raises:
        ValueError: ``p <= 0``.

    Examples:
        >>> import torch
        >>> GeM(p=1.0)(torch.ones(2, 4, 3, 3)).shape
        torch.Size([2, 4])
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        if not p > 0:
            raise ValueError(f"GeM: `p` must be > 0, got {p}")
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pool ``(B,C,h,w)`` to ``(B,C)``."""
        # Keep p away from 0 so that 1/p cannot explode if training pushes it down.
        p = self.p.clamp_min(0.5)
        return x.clamp_min(self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()):.3f}, eps={self.eps}"


def _conv_bn_relu(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class SmallBackbone(nn.Sequential):
    """A narrow plain CNN for CPU: stages of 3x3 convolutions with BatchNorm and ReLU.

    Args:
        widths: Output channels of each stage.
        strides: Stride of the first convolution of each stage.
        depths: Number of convolutions per stage.

    Raises:
        ValueError: the three sequences differ in length or are empty.

    Examples:
        >>> import torch
        >>> SmallBackbone()(torch.rand(1, 3, 128, 64)).shape
        torch.Size([1, 128, 16, 8])
    """

    def __init__(
        self,
        widths: Sequence[int] = (32, 64, 96, 128),
        strides: Sequence[int] = (2, 2, 2, 1),
        depths: Sequence[int] = (1, 2, 2, 2),
    ) -> None:
        if not (len(widths) == len(strides) == len(depths) > 0):
            raise ValueError(
                "SmallBackbone: `widths`, `strides` and `depths` must be non-empty and of equal length, "
                f"got {len(widths)}, {len(strides)} and {len(depths)}"
            )
        stages: list[nn.Module] = []
        cin = 3
        for width, stride, depth in zip(widths, strides, depths, strict=True):
            layers = [_conv_bn_relu(cin, width, stride)]
            layers += [_conv_bn_relu(width, width, 1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*layers))
            cin = width
        super().__init__(*stages)
        self.num_features = cin
        self.stride = int(torch.tensor(list(strides)).prod())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")


def _resnet_body(name: str, last_stride: int) -> tuple[nn.Sequential, int, int]:
    constructor, channels = _RESNETS[name]
    net = constructor(weights=None)  # random init: nothing is ever downloaded
    if last_stride == 1:
        # The first block of layer4 downsamples in one 3x3 conv and in its shortcut; undo both.
        for m in net.layer4[0].modules():
            if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
                m.stride = (1, 1)
    body = nn.Sequential(
        net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4
    )
    return body, channels, 16 * last_stride


class ReIDNet(nn.Module):
    """Backbone + GeM pooling + BN-neck, with the timm-style split used by the AMD interpreter.

    Args:
        backbone: ``"small"`` (a narrow plain CNN, output stride 8) or ``"resnet18"``, ``"resnet34"``,
            ``"resnet50"`` (torchvision bodies, randomly initialised, output stride 16 with
            ``last_stride=1``).
        num_classes: Number of training identities for the classifier; 0 builds no classifier.
        embedding_dim: Size ``D`` of the embedding. ``None`` keeps the backbone's channels ``C`` (no
            projection, as in the strong baseline); otherwise a bias-free linear layer maps ``C -> D``.
        gem_p: Initial exponent of the GeM pooling (learnable).
        last_stride: Stride of the last ResNet stage (1 doubles the map size); ignored for ``"small"``.
        small_widths: Stage widths of the ``"small"`` backbone.

    Raises:
        ValueError: unknown ``backbone``, negative ``num_classes``, non-positive ``embedding_dim`` or a
            ``last_stride`` other than 1 or 2.

    Examples:
        >>> import torch
        >>> model = ReIDNet("small", num_classes=5).eval()
        >>> feats = model.forward_features(torch.rand(3, 3, 128, 64))
        >>> model.forward_head(feats).shape
        torch.Size([3, 128])
        >>> _ = model.train(); emb, logits = model(torch.rand(3, 3, 128, 64)); logits.shape
        torch.Size([3, 5])
    """

    def __init__(
        self,
        backbone: str = "small",
        num_classes: int = 0,
        embedding_dim: int | None = None,
        gem_p: float = 3.0,
        last_stride: int = 1,
        small_widths: Sequence[int] = (32, 64, 96, 128),
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"ReIDNet: `backbone` must be one of {BACKBONES}, got {backbone!r}")
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"ReIDNet: `num_classes` must be an int >= 0, got {num_classes!r}")
        if embedding_dim is not None and embedding_dim <= 0:
            raise ValueError(f"ReIDNet: `embedding_dim` must be positive or None, got {embedding_dim}")
        if last_stride not in (1, 2):
            raise ValueError(f"ReIDNet: `last_stride` must be 1 or 2, got {last_stride}")
        self.backbone_name = backbone
        if backbone == "small":
            self.backbone: nn.Module = SmallBackbone(widths=small_widths)
            channels, self.feature_stride = self.backbone.num_features, self.backbone.stride
        else:
            self.backbone, channels, self.feature_stride = _resnet_body(backbone, last_stride)
        self.num_features = channels
        self.embedding_dim = channels if embedding_dim is None else int(embedding_dim)
        self.pool = GeM(p=gem_p)
        self.projection: nn.Module = (
            nn.Identity()
            if embedding_dim is None
            else nn.Linear(channels, self.embedding_dim, bias=False)
        )
        self.bnneck = nn.BatchNorm1d(self.embedding_dim)
        # BN-neck of the strong baseline: the shift is frozen at 0 so that the normalised embedding
        # stays centred, which suits both the triplet and the cosine/Euclidean retrieval.
        nn.init.zeros_(self.bnneck.bias)
        self.bnneck.bias.requires_grad_(False)
        self.num_classes = 0
        self.classifier: nn.Linear | None = None
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the identity classifier (timm's name for it).

        Args:
            num_classes: New number of classes; 0 removes the classifier.

        Raises:
            ValueError: negative ``num_classes``.

        Examples:
            >>> model = ReIDNet("small")
            >>> model.reset_classifier(7); model.classifier.out_features
            7
        """
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"reset_classifier: `num_classes` must be an int >= 0, got {num_classes!r}")
        self.num_classes = num_classes
        if num_classes == 0:
            self.classifier = None
            return
        ref = self.bnneck.weight
        self.classifier = nn.Linear(self.embedding_dim, num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)
        self.classifier.to(device=ref.device, dtype=ref.dtype)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last spatial feature map ``(B,C,h,w)`` of images ``(B,3,H,W)``.

        Examples:
            >>> import torch
            >>> ReIDNet("small").forward_features(torch.rand(1, 3, 64, 32)).shape
            torch.Size([1, 128, 8, 4])
        """
        return self.backbone(x)

    def pool_features(self, features: torch.Tensor) -> torch.Tensor:
        """GeM pooling and projection: the ``(B,D)`` embedding before the BN-neck (triplet features).

        Examples:
            >>> import torch
            >>> ReIDNet("small").pool_features(torch.rand(2, 128, 8, 4)).shape
            torch.Size([2, 128])
        """
        return self.projection(self.pool(features))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooling + BN-neck: feature map ``(B,C,h,w)`` -> embedding ``(B,D)``.

        In eval mode this is the retrieval embedding; it contains no spatial computation other than
        the pooling, so it can be applied to masked feature maps.

        Raises:
            ValueError: ``features`` is not ``(B,C,h,w)`` with ``C`` the backbone's channels.

        Examples:
            >>> import torch
            >>> ReIDNet("small").eval().forward_head(torch.rand(2, 128, 8, 4)).shape
            torch.Size([2, 128])
        """
        if features.dim() != 4 or features.shape[1] != self.num_features:
            raise ValueError(
                f"forward_head: `features` must have shape (B,{self.num_features},h,w), "
                f"got {tuple(features.shape)}"
            )
        return self.bnneck(self.pool_features(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Eval: embedding ``(B,D)``. Train: ``(features_before_bnneck (B,D), logits (B,num_classes))``.

        Without a classifier (``num_classes=0``) the train-mode logits are an empty ``(B,0)`` tensor.
        """
        features = self.forward_features(x)
        if not self.training:
            return self.forward_head(features)
        pooled = self.pool_features(features)
        if self.classifier is None:
            return pooled, pooled.new_zeros(pooled.shape[0], 0)
        return pooled, self.classifier(self.bnneck(pooled))


@register_model
def reidnet_small(num_classes: int = 0, **kwargs: object) -> ReIDNet:
    """A narrow plain CNN ReID model (widths 32-64-96-128, output stride 8) for CPU; the demo's default.

    Args:
        num_classes: Size of the identity classifier (0: none).
        **kwargs: Other :class:`ReIDNet` arguments.

    Returns:
        A randomly initialised :class:`ReIDNet`.

    Examples:
        >>> reidnet_small().feature_stride
        8
    """
    return ReIDNet("small", num_classes=num_classes, **kwargs)


@register_model
def reidnet_resnet18(num_classes: int = 0, **kwargs: object) -> ReIDNet:
    """ReIDNet on a randomly initialised torchvision ResNet-18 body (last stride 1, D=512).

    Args:
        num_classes: Size of the identity classifier (0: none).
        **kwargs: Other :class:`ReIDNet` arguments.

    Returns:
        A randomly initialised :class:`ReIDNet`.

    Examples:
        >>> reidnet_resnet18().embedding_dim
        512
    """
    return ReIDNet("resnet18", num_classes=num_classes, **kwargs)


@register_model
def reidnet_resnet34(num_classes: int = 0, **kwargs: object) -> ReIDNet:
    """ReIDNet on a randomly initialised torchvision ResNet-34 body (last stride 1, D=512).

    Args:
        num_classes: Size of the identity classifier (0: none).
        **kwargs: Other :class:`ReIDNet` arguments.

    Returns:
        A randomly initialised :class:`ReIDNet`.

    Examples:
        >>> reidnet_resnet34().num_features
        512
    """
    return ReIDNet("resnet34", num_classes=num_classes, **kwargs)


@register_model
def reidnet_resnet50(num_classes: int = 0, **kwargs: object) -> ReIDNet:
    """ReIDNet on a randomly initialised torchvision ResNet-50 body (last stride 1, D=2048).

    Args:
        num_classes: Size of the identity classifier (0: none).
        **kwargs: Other :class:`ReIDNet` arguments.

    Returns:
        A randomly initialised :class:`ReIDNet`.

    Examples:
        >>> reidnet_resnet50().embedding_dim
        2048
    """
    return ReIDNet("resnet50", num_classes=num_classes, **kwargs)
