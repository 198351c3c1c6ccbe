"""Finding and naming a target's feature layer: one set of rules for AMD and Grad-CAM.

A *feature layer* is a module whose output is an image-grid feature map ``(B,C,h,w)``: its grid has the
aspect of the input image (the same stride, within rounding, along both axes), it has more than one
cell, it is not a pooling layer (a part-pooled ``(6,1)`` map is not a grid) and it runs once per forward
pass. The grid's width must be what the height's stride predicts (``W h / H``) within one cell of
rounding, and the other way round. That rule keeps tensors that merely have four dimensions, such as the ``(heads, tokens, head_dim)``
tensors inside self-attention, out of the automatic choice.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> [layer.name for layer in feature_layers(net, torch.rand(2, 3, 16, 8))]
    ['0', '1']
    >>> is_image_grid((2, 6, 33, 64), (128, 64))  # heads x tokens x head_dim inside attention
    False
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .._model import preserved_model_state

__all__ = ["FeatureLayer", "feature_layers", "find_feature_layer", "is_image_grid", "resolve_layer_name"]

_POOLING = (
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
)
_SLACK = 0.1


@dataclass(frozen=True)
class FeatureLayer:
    """A module with an image-grid output, found by a probe forward pass.

    Attributes:
        name: Its name in ``model.named_modules()``.
        shape: Output shape without the batch axis, ``(C,h,w)``.
        stride: Input pixels per grid cell along the height.
    """

    name: str
    shape: tuple[int, int, int]
    stride: float

    def describe(self) -> str:
        """``"'layer4' (C,h,w)=(512, 8, 4), stride 16"``."""
        return f"{self.name!r} (C,h,w)={self.shape}, stride {self.stride:g}"


def is_image_grid(shape: tuple[int, ...], image_size: tuple[int, int]) -> bool:
    """Whether a ``(B,C,h,w)`` shape is a feature grid of an ``(H,W)`` image (same stride on both axes).

    Examples:
        >>> is_image_grid((1, 512, 16, 8), (256, 128)), is_image_grid((1, 512, 6, 1), (256, 128))
        (True, False)
    """
    if len(shape) != 4:
        return False
    h, w = int(shape[2]), int(shape[3])
    big_h, big_w = image_size
    if h < 1 or w < 1 or h * w < 2 or h > big_h or w > big_w:
        return False
    # The width the height's stride predicts (and the other way round), within a cell of rounding.
    return (abs(big_w * h / big_h - w) <= 1 + _SLACK * w) and (abs(big_h * w / big_w - h) <= 1 + _SLACK * h)


def resolve_layer_name(model: nn.Module, layer: str | nn.Module, argument: str = "feature_layer") -> str:
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
            raise ValueError(f"{argument}: the model has no module named {layer!r}; modules include {shown}")
        return layer
    if isinstance(layer, nn.Module):
        for name, module in model.named_modules():
            if module is layer and name:
                return name
        raise ValueError(f"{argument}: the module {type(layer).__name__} is not a submodule of the model")
    raise TypeError(f"{argument}: expected a module name, an nn.Module, 'auto' or None, "
                    f"got {type(layer).__name__}")


def feature_layers(model: nn.Module, probe: torch.Tensor,
                   call: Callable[[nn.Module, torch.Tensor], object] | None = None) -> list[FeatureLayer]:
    """Every feature layer of ``model`` (see the module docs), in the order their outputs are produced.

    Runs one forward pass in eval mode, without gradients, with temporary hooks on every submodule; the
    hooks are removed and every ``training`` flag restored afterwards.

    Args:
        model: The model.
        probe: ``(B,3,H,W)`` images on the model's device.
        call: How to run the model (default ``model(probe)``), for models that need extra arguments.
    """
    order: list[tuple[str, tuple[int, ...]]] = []
    counts: dict[str, int] = {}
    size = (int(probe.shape[-2]), int(probe.shape[-1]))

    def make_hook(name: str) -> Callable:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            counts[name] = counts.get(name, 0) + 1
            if isinstance(output, torch.Tensor) and not isinstance(module, _POOLING):
                order.append((name, tuple(output.shape)))

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in model.named_modules() if n]
    try:
        with preserved_model_state(model), torch.no_grad():
            model(probe.clone()) if call is None else call(model, probe.clone())
    finally:
        for handle in handles:
            handle.remove()
    out = []
    for name, shape in order:
        if counts[name] == 1 and is_image_grid(shape, size):
            out.append(FeatureLayer(name, tuple(int(s) for s in shape[1:]), size[0] / shape[2]))  # type: ignore[arg-type]
    return out


def find_feature_layer(model: nn.Module, probe: torch.Tensor) -> FeatureLayer | None:
    """The last feature layer of ``model`` (``None`` if it has none).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> find_feature_layer(net, torch.rand(2, 3, 8, 8)).name
        '1'
    """
    layers = feature_layers(model, probe)
    return layers[-1] if layers else None
