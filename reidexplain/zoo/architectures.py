"""The layouts ReID practitioners run, written for the zoo: BoT ResNet, OSNet, ViT-ReID, CLIP-style ViT.

None of these has timm's ``forward_features``/``forward_head``: they are written the way their
reference code bases write them, so that reidexplain has to take them apart itself (a torch.fx graph
cut for the CNNs, the patch-token grid for the transformers; see :mod:`reidexplain.adapters`).

* :class:`BoTResNet` (``bot_resnet50``, ``bot_resnet18``): reid-strong-baseline (Bag of Tricks):
  a torchvision ResNet body with last stride 1, global average pooling, ``view(x.shape[0], -1)`` and a
  BNNeck; the embedding is the BNNeck's output.
* :class:`OSNet` (``osnet_x1_0``, ``osnet_x0_25``): the omni-scale network of torchreid's layout:
  omni-scale residual blocks (four streams of 1 to 4 lite 3x3 convolutions, fused by a shared channel
  gate), 1x1 transitions with average pooling, a last 1x1 convolution, global pooling and a
  fully-connected embedding layer with BatchNorm.
* :class:`ViTReID` (``vit_reid_small``, ``vit_reid_tiny``): a ViT with a class token and a BNNeck on it;
  ``patch_stride < patch_size`` gives TransReID's overlapping patches.
* :class:`CLIPStyleViT` (``clip_vit_reid_tiny``): CLIP's visual transformer layout (``ln_pre``,
  sequence-first blocks, ``ln_post`` on the class token, a projection) with CLIP-ReID's BNNeck.

All follow the zoo's training contract (:func:`~reidexplain.zoo.train_reid_model`): in train mode
``(features_before_bnneck, logits)``, in eval mode the embedding; ``num_classes`` and
``reset_classifier``.

Examples:
    >>> import torch
    >>> from reidexplain.zoo import create_model
    >>> model = create_model("osnet_x0_25").eval()
    >>> model(torch.rand(2, 3, 128, 64)).shape
    torch.Size([2, 512])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import ClassVar

import torch
import torchvision
from torch import nn

from reidexplain.zoo.registry import register_model

__all__ = ["BoTResNet", "OSNet", "ViTReID", "CLIPStyleViT"]


# Transformers trained from scratch on the synthetic persons learn slowly: 8 epochs at the CNNs' 3e-3
# left vit_reid_tiny at Rank-1 4 %, 40 epochs at 1e-3 reach 24 % (train_reid_model's docs).
_TRANSFORMER_TRAINING: Mapping[str, float] = MappingProxyType({"epochs": 40, "lr": 1e-3})


class _ClassifierMixin:
    """``num_classes``, ``reset_classifier`` and a bias-free classifier after a BNNeck."""

    classifier: nn.Module
    num_classes: int
    embedding_dim: int

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by one of ``num_classes`` outputs (0: no classifier)."""
        self.num_classes = int(num_classes)
        self.classifier = (nn.Linear(self.embedding_dim, num_classes, bias=False) if num_classes > 0
                           else nn.Identity())

    def _train_output(self, features: torch.Tensor, neck: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.num_classes <= 0:
            raise RuntimeError(f"{type(self).__name__}: training needs a classifier; call reset_classifier(n)")
        return features, self.classifier(neck)


def _bnneck(dim: int) -> nn.BatchNorm1d:
    neck = nn.BatchNorm1d(dim)
    neck.bias.requires_grad_(False)  # BoT: the BNNeck's shift is not trained
    return neck


class BoTResNet(_ClassifierMixin, nn.Module):
    """reid-strong-baseline's ResNet: last stride 1, GAP, BNNeck (see the module docs).

    Args:
        depth: 18, 34 or 50.
        num_classes: Identities of the classifier (0: none, embedding only).
        last_stride: Stride of the last stage (BoT: 1).
        width_per_group: Width of the bottleneck blocks (torchvision's; 64 is the standard ResNet-50,
            smaller values make a cheaper network of the same layout).
    """

    def __init__(self, depth: int = 50, num_classes: int = 0, last_stride: int = 1,
                 width_per_group: int = 64) -> None:
        super().__init__()
        builders = {18: torchvision.models.resnet18, 34: torchvision.models.resnet34,
                    50: torchvision.models.resnet50}
        if depth not in builders:
            raise ValueError(f"depth: expected one of {sorted(builders)}, got {depth}")
        kwargs = {"width_per_group": width_per_group} if depth == 50 else {}
        resnet = builders[depth](weights=None, **kwargs)
        if last_stride != 2:
            block = resnet.layer4[0]
            (block.conv2 if depth == 50 else block.conv1).stride = (last_stride, last_stride)
            block.downsample[0].stride = (last_stride, last_stride)
        self.base = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                                  resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.embedding_dim = 2048 if depth == 50 else 512
        self.bottleneck = _bnneck(self.embedding_dim)
        self.reset_classifier(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        global_feat = self.gap(self.base(x)).view(x.shape[0], -1)
        feat = self.bottleneck(global_feat)
        if self.training:
            return self._train_output(global_feat, feat)
        return feat


class _LiteConv(nn.Sequential):
    """OSNet's lite 3x3: a pointwise convolution, a depthwise 3x3, BatchNorm and ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.Conv2d(channels, channels, 1, bias=False),
                         nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                         nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class _ChannelGate(nn.Module):
    """The unified aggregation gate: per-channel weights from the stream's pooled features."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * w


class _OmniScaleBlock(nn.Module):
    """Four streams of 1..4 lite 3x3 convolutions (receptive fields 3 to 9) fused by one shared gate."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 4
        self.reduce = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True))
        self.streams = nn.ModuleList([nn.Sequential(*[_LiteConv(mid) for _ in range(t)]) for t in range(1, 5)])
        self.gate = _ChannelGate(mid)
        self.expand = nn.Sequential(nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.downsample = (None if cin == cout else
                           nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        fused = sum(self.gate(stream(reduced)) for stream in self.streams)
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(self.expand(fused) + identity)


class OSNet(_ClassifierMixin, nn.Module):
    """Omni-scale network (torchreid's layout; see the module docs).

    Args:
        channels: Widths of the stem and the three stages (x1.0: ``(64, 256, 384, 512)``).
        num_classes: Identities of the classifier (0: none).
        feature_dim: Size of the fully-connected embedding.
    """

    def __init__(self, channels: Sequence[int] = (64, 256, 384, 512), num_classes: int = 0,
                 feature_dim: int = 512) -> None:
        super().__init__()
        c0, c1, c2, c3 = channels
        self.conv1 = nn.Sequential(nn.Conv2d(3, c0, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(c0),
                                   nn.ReLU(inplace=True))
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Sequential(_OmniScaleBlock(c0, c1), _OmniScaleBlock(c1, c1))
        self.pool2 = nn.Sequential(nn.Conv2d(c1, c1, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU(inplace=True),
                                   nn.AvgPool2d(2, stride=2))
        self.conv3 = nn.Sequential(_OmniScaleBlock(c1, c2), _OmniScaleBlock(c2, c2))
        self.pool3 = nn.Sequential(nn.Conv2d(c2, c2, 1, bias=False), nn.BatchNorm2d(c2), nn.ReLU(inplace=True),
                                   nn.AvgPool2d(2, stride=2))
        self.conv4 = nn.Sequential(_OmniScaleBlock(c2, c3), _OmniScaleBlock(c3, c3))
        self.conv5 = nn.Sequential(nn.Conv2d(c3, c3, 1, bias=False), nn.BatchNorm2d(c3), nn.ReLU(inplace=True))
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(c3, feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True))
        self.embedding_dim = feature_dim
        self.reset_classifier(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.conv1(x))
        x = self.pool3(self.conv3(self.pool2(self.conv2(x))))
        x = self.conv5(self.conv4(x))
        v = self.fc(self.global_avgpool(x).view(x.size(0), -1))
        if self.training:
            return self._train_output(v, v)
        return v


class _Block(nn.Module):
    """A pre-norm transformer block (batch-first or sequence-first tokens)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, batch_first: bool = True) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def _grid(image_size: Sequence[int], patch: int, stride: int) -> tuple[int, int]:
    h, w = image_size
    return (h - patch) // stride + 1, (w - patch) // stride + 1


class ViTReID(_ClassifierMixin, nn.Module):
    """A ViT for ReID: patch embedding, class token, blocks, final norm, BNNeck on the class token.

    Args:
        image_size: ``(H, W)`` the position embedding is made for.
        patch_size: Side of a patch.
        patch_stride: Step between patches (``< patch_size``: TransReID's overlapping patches).
        dim: Token width.
        depth: Number of blocks.
        heads: Attention heads.
        num_classes: Identities of the classifier (0: none).
    """

    #: What :func:`~reidexplain.zoo.train_reid_model` uses unless told otherwise.
    training_defaults: ClassVar[Mapping[str, float]] = _TRANSFORMER_TRAINING

    def __init__(self, image_size: Sequence[int] = (128, 64), patch_size: int = 16, patch_stride: int = 16,
                 dim: int = 192, depth: int = 6, heads: int = 3, num_classes: int = 0) -> None:
        super().__init__()
        self.image_size = tuple(image_size)
        self.patch_embed = nn.Conv2d(3, dim, patch_size, stride=patch_stride)
        gh, gw = _grid(image_size, patch_size, patch_stride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + gh * gw, dim) * 0.02)
        self.blocks = nn.ModuleList([_Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.embedding_dim = dim
        self.bottleneck = _bnneck(dim)
        self.reset_classifier(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        feat = self.norm(x)[:, 0]
        neck = self.bottleneck(feat)
        if self.training:
            return self._train_output(feat, neck)
        return neck


class CLIPStyleViT(_ClassifierMixin, nn.Module):
    """CLIP's visual transformer layout with CLIP-ReID's BNNeck (see the module docs).

    Args:
        image_size: ``(H, W)`` the position embedding is made for.
        patch_size: Side (and stride) of a patch.
        width: Token width.
        layers: Number of residual attention blocks (sequence-first).
        heads: Attention heads.
        output_dim: Size of the projection.
        num_classes: Identities of the classifier (0: none).
    """

    #: What :func:`~reidexplain.zoo.train_reid_model` uses unless told otherwise.
    training_defaults: ClassVar[Mapping[str, float]] = _TRANSFORMER_TRAINING

    def __init__(self, image_size: Sequence[int] = (128, 64), patch_size: int = 16, width: int = 192,
                 layers: int = 4, heads: int = 3, output_dim: int = 128, num_classes: int = 0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, bias=False)
        gh, gw = _grid(image_size, patch_size, patch_size)
        scale = width ** -0.5
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(1 + gh * gw, width))
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.resblocks = nn.Sequential(*[_Block(width, heads, batch_first=False) for _ in range(layers)])
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))
        self.embedding_dim = output_dim
        self.bottleneck = _bnneck(output_dim)
        self.reset_classifier(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        x = self.resblocks(x.permute(1, 0, 2)).permute(1, 0, 2)  # sequence-first blocks, as in CLIP
        feat = self.ln_post(x[:, 0]) @ self.proj
        neck = self.bottleneck(feat)
        if self.training:
            return self._train_output(feat, neck)
        return neck


@register_model
def bot_resnet50(num_classes: int = 0, **kwargs: object) -> BoTResNet:
    """reid-strong-baseline's ResNet-50 with BNNeck and last stride 1 (2048-d embedding)."""
    return BoTResNet(50, num_classes=num_classes, **kwargs)  # type: ignore[arg-type]


@register_model
def bot_resnet18(num_classes: int = 0, **kwargs: object) -> BoTResNet:
    """The same layout on a ResNet-18 body (512-d embedding), for quick CPU runs."""
    return BoTResNet(18, num_classes=num_classes, **kwargs)  # type: ignore[arg-type]


@register_model
def osnet_x1_0(num_classes: int = 0, **kwargs: object) -> OSNet:
    """OSNet x1.0 (channels 64, 256, 384, 512; 512-d embedding)."""
    return OSNet((64, 256, 384, 512), num_classes=num_classes, **kwargs)  # type: ignore[arg-type]


@register_model
def osnet_x0_25(num_classes: int = 0, **kwargs: object) -> OSNet:
    """OSNet x0.25 (channels 16, 64, 96, 128; 512-d embedding)."""
    return OSNet((16, 64, 96, 128), num_classes=num_classes, **kwargs)  # type: ignore[arg-type]


@register_model
def vit_reid_small(num_classes: int = 0, **kwargs: object) -> ViTReID:
    """A ViT-S/16-sized ReID transformer (384-d tokens, 12 blocks, 6 heads)."""
    options = {"dim": 384, "depth": 12, "heads": 6, **kwargs}
    return ViTReID(num_classes=num_classes, **options)  # type: ignore[arg-type]


@register_model
def vit_reid_tiny(num_classes: int = 0, **kwargs: object) -> ViTReID:
    """A small ReID transformer (192-d tokens, 6 blocks, 3 heads) for CPU runs."""
    return ViTReID(num_classes=num_classes, **kwargs)  # type: ignore[arg-type]


@register_model
def transreid_tiny(num_classes: int = 0, **kwargs: object) -> ViTReID:
    """TransReID's overlapping patches (16x16 patches every 12 pixels) on the tiny transformer."""
    options = {"patch_size": 16, "patch_stride": 12, **kwargs}
    return ViTReID(num_classes=num_classes, **options)  # type: ignore[arg-type]


@register_model
def clip_vit_reid_tiny(num_classes: int = 0, **kwargs: object) -> CLIPStyleViT:
    """CLIP's visual transformer layout, small (192-d tokens, 4 blocks), with a BNNeck."""
    return CLIPStyleViT(num_classes=num_classes, **kwargs)  # type: ignore[arg-type]
