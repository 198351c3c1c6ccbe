"""Splitting a target model into ``trunk`` (images -> feature map ``F``) and ``head`` (``F`` -> embedding).

AMD's component embeddings ``e_k = head(F * A_k)`` reuse the target's own head on masked feature maps
(AMD-SPEC section 3). :func:`split_model` finds a split that lets the head run alone, for the models
users have, and checks it numerically (``head(trunk(x)) == model(x)`` on a probe batch):

* ``"forward_features"``: timm-style models with ``forward_features(x)`` and ``forward_head(F)``
  (the zoo's :class:`~reidexplain.zoo.ReIDNet`);
* ``"sequential"``: an ``nn.Sequential``, split after the child whose output is the feature map;
* ``"torchvision_resnet"``: a torchvision ``ResNet``, split after ``layer4`` (head: avgpool, flatten, fc);
* ``"hook"``: any other model. The head cannot run alone, so the whole model is re-run with a forward
  hook that replaces the feature layer's output by ``F * A_k`` (the trunk runs ``M`` times: slow);
* ``"none"``: nothing spatial to split: the interpreter has to work as a black box.

The split holds a frozen deep copy of the target (eval mode, no gradients, on the explainer's device):
the user's model itself is never called, moved, switched to eval mode or hooked.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten())
    >>> split = split_model(net, torch.rand(2, 3, 16, 8))
    >>> split.kind, split.feature_layer, split.feature_shape
    ('sequential', '1', (8, 16, 8))
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable

import torch
from torch import nn

from .._checks import check_embeddings

__all__ = ["SPLIT_KINDS", "TargetSplit", "split_model", "find_feature_layer", "resolve_layer_name"]

logger = logging.getLogger(__name__)

SPLIT_KINDS = ("forward_features", "sequential", "torchvision_resnet", "hook", "none")


class _StopForward(Exception):
    """Raised from a forward hook to stop a forward pass once the feature map is known."""


def _is_spatial(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[2] * t.shape[3] > 1


def _frozen_copy(model: nn.Module, device: torch.device) -> nn.Module:
    target = copy.deepcopy(model).to(device)
    target.eval()
    target.requires_grad_(False)
    return target


def _matches(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    scale = float(b.abs().max()) if b.numel() else 0.0
    return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(scale, 1.0)))


def resolve_layer_name(model: nn.Module, layer: str | nn.Module) -> str:
    """Name of ``layer`` inside ``model`` (a name is checked, a module is looked up by identity).

    Raises:
        ValueError: no module of that name, or the module is not part of ``model``.
        TypeError: ``layer`` is neither a string nor a module.

    Examples:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> resolve_layer_name(net, net[1])
        '1'
    """
    names = dict(model.named_modules())
    if isinstance(layer, str):
        if layer == "forward_features" and callable(getattr(model, "forward_features", None)):
            return layer
        if layer not in names or layer == "":
            shown = [n for n in names if n][:12]
            raise ValueError(f"feature_layer: the model has no module named {layer!r}; modules include {shown}")
        return layer
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer and name:
                return name
        raise ValueError(f"feature_layer: the module {type(layer).__name__} is not a submodule of the model")
    raise TypeError(f"feature_layer: expected a module name, an nn.Module, 'auto' or None, got {type(layer).__name__}")


def find_feature_layer(model: nn.Module, probe: torch.Tensor) -> tuple[str | None, dict[str, tuple]]:
    """The last module of ``model`` whose output is a spatial map ``(B,C,h,w)`` with ``h*w > 1``.

    Runs one forward pass with temporary hooks on every submodule (removed afterwards).

    Args:
        model: The (frozen copy of the) target model, in eval mode.
        probe: A ``(B,3,H,W)`` batch.

    Returns:
        ``(name or None, {name: output shape})`` for every submodule with a spatial output.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> find_feature_layer(net, torch.rand(2, 3, 8, 8))[0]
        '1'
    """
    found: list[str] = []
    shapes: dict[str, tuple] = {}
    handles = []

    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if _is_spatial(output):
                found.append(name)
                shapes[name] = tuple(output.shape)  # type: ignore[union-attr]

        return hook

    for name, module in model.named_modules():
        if name:
            handles.append(module.register_forward_hook(make_hook(name)))
    try:
        with torch.no_grad():
            model(probe)
    finally:
        for h in handles:
            h.remove()
    return (found[-1] if found else None), shapes


class _ForwardFeatures(nn.Module):
    """Trunk of a timm-style model: ``model.forward_features``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


class _ResNetHead(nn.Module):
    """The rest of a torchvision ResNet after ``layer4``: avgpool, flatten, fc (shares the modules)."""

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.avgpool, self.fc = resnet.avgpool, resnet.fc

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(f), 1))


class _HookTrunk(nn.Module):
    """Any model, run until ``layer`` has produced its output, which is returned."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
            captured.append(output)
            raise _StopForward

        handle = self.model.get_submodule(self.layer).register_forward_hook(hook)
        try:
            self.model(x)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"feature layer {self.layer!r} was not called in the forward pass")
        return captured[0]


def _resnet_trunk(resnet: nn.Module) -> nn.Sequential:
    return nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
                         resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)


def _is_torchvision_resnet(model: nn.Module) -> bool:
    try:
        from torchvision.models import ResNet
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return False
    return isinstance(model, ResNet)


class TargetSplit:
    """A frozen copy of the target model, split into trunk and head.

    Build it with :func:`split_model`. All methods expect tensors on :attr:`device`.

    Attributes:
        kind: One of :data:`SPLIT_KINDS`.
        feature_layer: Name of the layer whose output is ``F`` (``"forward_features"`` for timm-style
            models), or ``None`` for ``kind="none"``.
        feature_shape: ``(C, h, w)`` of ``F`` on the probe batch, or ``None``.
        embedding_dim: ``D``.
        target: The frozen copy (eval mode, ``requires_grad=False``).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> split = split_model(net, torch.rand(2, 3, 8, 4))
        >>> f, emb = split.embed(torch.rand(5, 3, 8, 4))
        >>> f.shape, emb.shape
        (torch.Size([5, 4, 8, 4]), torch.Size([5, 4]))
    """

    def __init__(self, target: nn.Module, kind: str, feature_layer: str | None,
                 trunk: nn.Module | None, head: nn.Module | Callable | None,
                 feature_shape: tuple[int, int, int] | None, embedding_dim: int) -> None:
        self.target = target
        self.kind = kind
        self.feature_layer = feature_layer
        self._trunk = trunk
        self._head = head
        self.feature_shape = feature_shape
        self.embedding_dim = embedding_dim

    @property
    def device(self) -> torch.device:
        """Device of the frozen copy."""
        for t in self.target.parameters():
            return t.device
        for t in self.target.buffers():
            return t.device
        return torch.device("cpu")

    @property
    def gray_box(self) -> bool:
        """Whether component embeddings can use the target's own head (every kind but ``"none"``)."""
        return self.kind != "none"

    @property
    def fast_head(self) -> bool:
        """Whether the head runs alone (no trunk re-runs for the ``M`` masked maps)."""
        return self.kind in ("forward_features", "sequential", "torchvision_resnet")

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Feature map ``F`` (``None`` for ``kind="none"``) and embedding of ``images``, no gradients."""
        with torch.no_grad():
            if self.kind == "none":
                return None, self.target(images)
            if self.fast_head:
                feats = self._trunk(images)
                return feats, self._head(feats)
            captured: list[torch.Tensor] = []
            layer = self.target.get_submodule(self.feature_layer)
            handle = layer.register_forward_hook(lambda m, i, o: captured.append(o))
            try:
                out = self.target(images)
            finally:
                handle.remove()
            return captured[0], out

    def head(self, features: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """Embeddings of (masked) feature maps ``(N,C,h,w)``; gradients flow to ``features``.

        Args:
            features: ``(N,C,h,w)`` feature maps.
            images: For ``kind="hook"`` only: the ``(N,3,H,W)`` images the maps belong to (the model is
                re-run on them with the feature layer's output replaced by ``features``).
        """
        if self.fast_head:
            return self._head(features)
        if self.kind != "hook":
            raise RuntimeError("the target has no feature layer: its head cannot be applied alone")
        if images is None:
            raise ValueError("images: required to re-run a model split with a hook")
        layer = self.target.get_submodule(self.feature_layer)
        handle = layer.register_forward_hook(lambda m, i, o: features)
        try:
            return self.target(images)
        finally:
            handle.remove()

    def masked_embeddings(self, images: torch.Tensor, features: torch.Tensor,
                          maps: torch.Tensor) -> torch.Tensor:
        """Component embeddings ``e_k = head(F * A_k)``: ``(B,M,D)`` from ``F`` ``(B,C,h,w)`` and ``A`` ``(B,M,h,w)``."""
        b, m = maps.shape[:2]
        masked = (features.unsqueeze(1) * maps.unsqueeze(2)).flatten(0, 1)
        repeated = None if self.fast_head else images.repeat_interleave(m, dim=0)
        return self.head(masked, repeated).reshape(b, m, -1)

    def make_trunk(self) -> nn.Module:
        """A trainable deep copy of the trunk (images -> ``F``), the start of the interpreter's trunk."""
        if self.kind == "none":
            raise RuntimeError("the target has no feature layer to copy a trunk from")
        if self.kind == "hook":
            trunk: nn.Module = _HookTrunk(copy.deepcopy(self.target), self.feature_layer)
        else:
            trunk = copy.deepcopy(self._trunk)
        trunk.requires_grad_(True)
        trunk.train()
        return trunk

    def describe(self) -> str:
        """One line saying how the target was split."""
        if self.kind == "none":
            return "black box: no spatial feature layer"
        return f"{self.kind} split at {self.feature_layer!r}, F of shape {self.feature_shape}"


def _verify(target: nn.Module, trunk: Callable, head: Callable, probe: torch.Tensor,
            reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Run ``head(trunk(probe))``; return ``(F, embedding)`` if it reproduces ``reference``, else ``None``."""
    try:
        with torch.no_grad():
            feats = trunk(probe)
            if not _is_spatial(feats):
                return None
            emb = head(feats)
    except Exception as err:  # a head that rejects its input is just not a valid split
        logger.info("split candidate failed on the probe batch: %s", err)
        return None
    if not isinstance(emb, torch.Tensor) or not _matches(emb, reference):
        return None
    return feats, emb


def _structured_candidates(target: nn.Module, layer: str | None) -> list[tuple[str, str, nn.Module, Callable]]:
    """``(kind, layer name, trunk, head)`` splits worth trying for ``layer`` (``None``: auto)."""
    out: list[tuple[str, str, nn.Module, Callable]] = []
    if callable(getattr(target, "forward_features", None)) and callable(getattr(target, "forward_head", None)):
        out.append(("forward_features", "forward_features", _ForwardFeatures(target), target.forward_head))
    if isinstance(target, nn.Sequential):
        names = [n for n, _ in target.named_children()]
        for i in reversed(range(len(names) - 1)):
            out.append(("sequential", names[i], target[: i + 1], target[i + 1:]))
    if _is_torchvision_resnet(target):
        out.append(("torchvision_resnet", "layer4", _resnet_trunk(target), _ResNetHead(target)))
    if layer is None:
        return out
    return [c for c in out if c[1] == layer or c[0] == "forward_features"]


def split_model(model: nn.Module, probe: torch.Tensor, feature_layer: str | nn.Module | None = "auto",
                device: torch.device | str | None = None) -> TargetSplit:
    """Split a frozen copy of ``model`` into trunk and head, verified on ``probe``.

    Args:
        model: The target; it is deep-copied, never modified.
        probe: ``(B,3,H,W)`` images to find and verify the split (two are enough).
        feature_layer: ``"auto"`` (the last spatial map: ``forward_features``, a ``Sequential`` child,
            a ResNet's ``layer4`` or, failing those, the last spatial module), a module name, a module of
            ``model``, or ``None`` (no split: black box).
        device: Where the copy lives. Default: the model's device.

    Returns:
        The :class:`TargetSplit`.

    Raises:
        TypeError: the model output is not a tensor, or ``feature_layer`` has a wrong type.
        ValueError: the output is not ``(B,D)`` or not finite, or the named layer does not exist, is not
            spatial, or runs more than once per forward pass.

    Examples:
        >>> import torch
        >>> from reidexplain.zoo import create_model
        >>> split = split_model(create_model("reidnet_small"), torch.rand(2, 3, 64, 32))
        >>> split.kind, split.feature_shape
        ('forward_features', (128, 8, 4))
    """
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    device = torch.device(device)
    layer_name = None
    if feature_layer is not None and not (isinstance(feature_layer, str) and feature_layer == "auto"):
        layer_name = resolve_layer_name(model, feature_layer)
    target = _frozen_copy(model, device)
    probe = probe.to(device)
    with torch.no_grad():
        reference = check_embeddings(target(probe), probe.shape[0], "model output")
    dim = int(reference.shape[1])
    if feature_layer is None:
        return TargetSplit(target, "none", None, None, None, None, dim)

    candidates = _structured_candidates(target, layer_name)
    named_output = None
    if layer_name is not None and layer_name != "forward_features":
        named_output = _layer_output(target, layer_name, probe)
    for kind, name, trunk, head in candidates:
        verified = _verify(target, trunk, head, probe, reference)
        if verified is None:
            logger.debug("split %s at %r: no spatial map, or head(trunk(x)) != model(x); not used", kind, name)
            continue
        feats = verified[0]
        if named_output is not None and name != layer_name and not _matches(feats, named_output):
            continue  # forward_features is a different layer from the one asked for
        shape = tuple(int(s) for s in feats.shape[1:])
        return TargetSplit(target, kind, layer_name if named_output is not None else name, trunk, head, shape, dim)  # type: ignore[arg-type]

    if layer_name is None:
        layer_name, _ = find_feature_layer(target, probe)
        if layer_name is None:
            logger.warning("the model has no spatial feature map (B,C,h,w) with h*w > 1: AMD runs as a black "
                           "box (its own trunk and head; lower fidelity expected)")
            return TargetSplit(target, "none", None, None, None, None, dim)
        try:
            named_output = _layer_output(target, layer_name, probe)
        except ValueError as err:
            logger.warning("no usable feature layer (%s): AMD runs as a black box", err)
            return TargetSplit(target, "none", None, None, None, None, dim)
    elif layer_name == "forward_features":
        raise ValueError("feature_layer: 'forward_features' does not give a spatial (B,C,h,w) map whose "
                         "forward_head reproduces the model output")
    split = TargetSplit(target, "hook", layer_name, None, None, tuple(int(s) for s in named_output.shape[1:]), dim)
    with torch.no_grad():
        replayed = split.head(named_output.clone(), probe)
    if not _matches(replayed, reference):
        raise ValueError(f"feature_layer: replacing the output of {layer_name!r} by itself changes the model "
                         "output (is the layer stateful or random?)")
    logger.warning("no fast split of %s at %r (its head cannot run alone): AMD re-runs the whole model once "
                   "per attribute (M times per image), which is slow; give the model timm-style "
                   "forward_features/forward_head methods to avoid it", type(model).__name__, layer_name)
    return split


def _layer_output(target: nn.Module, name: str, probe: torch.Tensor) -> torch.Tensor:
    """The output of module ``name`` on ``probe``; it must be spatial and produced exactly once."""
    outputs: list[object] = []
    handle = target.get_submodule(name).register_forward_hook(lambda m, i, o: outputs.append(o))
    try:
        with torch.no_grad():
            target(probe)
    finally:
        handle.remove()
    if len(outputs) != 1:
        raise ValueError(f"feature_layer: module {name!r} runs {len(outputs)} times per forward pass, expected once")
    out = outputs[0]
    if not _is_spatial(out):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"feature_layer: the output of {name!r} must be a spatial map (B,C,h,w) with h*w > 1, got {got}")
    return out  # type: ignore[return-value]
