"""Grad-CAM of the pair distance on a feature layer of the target model."""

from __future__ import annotations

import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from ._base import PairExplainer, model_device, preserved_model_state

__all__ = ["GradCAMPair", "find_last_spatial_layer"]

# Pooling keeps a (B,C,h,w) shape but is not a feature layer (a part-pooled (6,1) map, say).
_POOLING = (
    nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._MaxPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd,
    nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd,
)


def find_last_spatial_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the last module (in execution order) whose output is a spatial ``(B,C,h,w)`` map.

    A probe forward runs ``example`` through the model, in eval mode and without gradients, with
    temporary forward hooks on every submodule; the hooks are removed before returning. Modules called
    more than once in a forward pass (a ReLU reused inside a block) are skipped because a layer
    attribution on them is ambiguous; a block that ends with such a module is chosen instead. Outputs of
    size ``1x1`` and torch's pooling layers are skipped: Grad-CAM wants the last feature map, not a
    pooled one.

    Args:
        model: Target model.
        example: One or a few images ``(B,3,H,W)`` on the model's device.

    Returns:
        The module's name in ``model.named_modules()``.

    Raises:
        ValueError: no submodule outputs a spatial map.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> find_last_spatial_layer(model, torch.rand(1, 3, 8, 4))
        '1'
    """
    calls: list[tuple[str, bool]] = []
    counts: dict[str, int] = {}

    def make_hook(name: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            counts[name] = counts.get(name, 0) + 1
            spatial = (
                not isinstance(module, _POOLING)
                and isinstance(output, torch.Tensor)
                and output.dim() == 4
                and output.shape[-2] * output.shape[-1] > 1
            )
            calls.append((name, spatial))

        return hook

    handles = [m.register_forward_hook(make_hook(name)) for name, m in model.named_modules() if name]
    try:
        with preserved_model_state(model), torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    for name, spatial in reversed(calls):
        if spatial and counts[name] == 1:
            return name
    raise ValueError(
        f"layer='auto': no submodule of {type(model).__name__} outputs a spatial (B,C,h,w) map with "
        "h*w > 1; pass the layer explicitly"
    )


class GradCAMPair(PairExplainer):
    """Grad-CAM of the pair distance: channel-weighted activations of a layer, upsampled to the image.

    The map is signed (``relu_attributions=False`` by default): positive regions push the pair
    apart, negative ones pull it together. Captum's ``LayerAttribution.interpolate`` brings it to
    input resolution; the layer-resolution map is kept in ``extras["raw"]``.

    Args:
        model: Target model ``(B,3,H,W) -> (B,D)``.
        layer: An ``nn.Module`` inside ``model``, its name in ``model.named_modules()``, or ``"auto"``
            for the last module with a spatial output (found by a probe forward on the first pair).
        metric: ``"euclidean"`` or ``"cosine"``.
        relu_attributions: Keep only positive evidence, as in the original Grad-CAM.
        interpolate_mode: Upsampling mode (``"bilinear"``, ``"nearest"``, ...).

    Raises:
        ValueError: ``layer`` is a name not in the model, or a module that is not part of it.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        ...                       nn.Flatten())
        >>> explainer = GradCAMPair(model, layer="auto")
        >>> result = explainer.explain((torch.rand(3, 8, 4), torch.rand(3, 8, 4)))
        >>> explainer.layer_name, tuple(result.maps[0].shape)
        ('1', (1, 1, 8, 4))
    """

    method = "grad_cam"

    def __init__(
        self,
        model: nn.Module,
        layer: nn.Module | str = "auto",
        metric: str = "euclidean",
        relu_attributions: bool = False,
        interpolate_mode: str = "bilinear",
    ) -> None:
        super().__init__(model, metric)
        modules = dict(model.named_modules())
        self.layer_name: str | None
        if isinstance(layer, nn.Module):
            names = [name for name, m in modules.items() if m is layer]
            if not names:
                raise ValueError(f"layer: the given {type(layer).__name__} is not a submodule of the model")
            self.layer_name = names[0]
        elif layer == "auto":
            self.layer_name = None
        elif isinstance(layer, str):
            if layer not in modules:
                raise ValueError(
                    f"layer: expected 'auto', a module or one of the model's module names, got {layer!r}"
                )
            self.layer_name = layer
        else:
            raise TypeError(f"layer: expected an nn.Module or a str, got {type(layer).__name__}")
        self.relu_attributions = bool(relu_attributions)
        self.interpolate_mode = interpolate_mode
        self.algorithm: LayerGradCam | None = None

    @property
    def layer(self) -> nn.Module | None:
        """The explained layer (``None`` until ``layer="auto"`` has probed the model)."""
        return None if self.layer_name is None else dict(self.model.named_modules())[self.layer_name]

    def _attribute(self, inputs: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        if self.layer_name is None:
            self.layer_name = find_last_spatial_layer(self.model, inputs[:1].to(model_device(self.model)))
        if self.algorithm is None:
            self.algorithm = LayerGradCam(self.forward_func, self.layer)
        return self.algorithm.attribute(
            inputs, additional_forward_args=(partners,), relu_attributions=self.relu_attributions
        )

    def _to_maps(self, raw: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if raw.dim() != 4:
            raise ValueError(
                f"grad_cam: layer {self.layer_name!r} gives attributions of shape {tuple(raw.shape)}; "
                "choose a layer with a spatial (B,C,h,w) output"
            )
        return LayerAttribution.interpolate(raw, size, interpolate_mode=self.interpolate_mode)

    def _extras(self, inputs: torch.Tensor, partners: torch.Tensor) -> dict[str, object]:
        return {"layer": self.layer_name}
