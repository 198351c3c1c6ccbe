"""Grad-CAM of the pair distance on a feature layer of the target model."""

from __future__ import annotations

import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from ..adapters import FeatureAdapter, adapt_model, resolve_layer_name
from ..distance import pair_distance
from ._base import PairExplainer, model_device

__all__ = ["GradCAMPair"]


class _GridDistance(nn.Module):
    """``d(head(grid(features(x))), partner)`` on a feature adapter, with an identity ``grid`` layer
    where Captum's Grad-CAM reads activations and gradients (the adapter's feature grid)."""

    def __init__(self, adapter: FeatureAdapter, metric: str) -> None:
        super().__init__()
        self.adapter = adapter
        self.metric = metric
        self.grid = nn.Identity()

    def forward(self, images: torch.Tensor, partners: torch.Tensor, *side: torch.Tensor) -> torch.Tensor:
        with self.adapter.bind(side):
            features = self.adapter._features(images.clone())
            grid = self.grid(self.adapter.to_grid(features))
            embeddings = self.adapter.head(self.adapter.with_grid(features, grid), images)
        return pair_distance(embeddings, partners, self.metric)


class GradCAMPair(PairExplainer):
    """Grad-CAM of the pair distance: channel-weighted activations of a layer, upsampled to the image.

    The map is signed (``relu_attributions=False`` by default): positive regions push the pair
    apart, negative ones pull it together. Captum's ``LayerAttribution.interpolate`` brings it to
    input resolution; the layer-resolution map is kept in ``extras["raw"]``.

    The layer is the feature grid of the target's feature adapter (:mod:`reidexplain.adapters`), the
    same split and the same layer rules as AMD's: Captum's ``LayerGradCam`` runs on an identity layer
    placed on that grid, so that the same code serves CNN feature maps and, once an adapter lays them
    out, token grids.

    Args:
        model: Target model ``(B,3,H,W) -> (B,D)``.
        layer: An ``nn.Module`` inside ``model``, its name in ``model.named_modules()``, or ``"auto"``
            for the last image-grid feature map (found by a probe forward on the first pair).
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
        if isinstance(layer, str) and layer == "auto":
            self.layer_name: str | None = None
        else:
            self.layer_name = resolve_layer_name(model, layer, "layer")
        self._requested = self.layer_name
        self.adapter: FeatureAdapter | None = None
        self.relu_attributions = bool(relu_attributions)
        self.interpolate_mode = interpolate_mode
        self.algorithm: LayerGradCam | None = None

    def _attribute(self, inputs: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        names = self.forward_func.side_names
        if self.algorithm is None or self.adapter is None or self.adapter.side_names != names:
            probe = inputs[:2].detach().to(model_device(self.model))
            side = {name: value[:2] for name, value in zip(names, self._side, strict=True)} or None
            self.adapter = adapt_model(self.model, probe, self._requested or "auto", side_inputs=side)
            if not self.adapter.gray_box:
                raise ValueError(f"layer='auto': {type(self.model).__name__} has no image-grid feature map "
                                 "(B,C,h,w) with h*w > 1 for Grad-CAM; pass the layer explicitly")
            # The adapter names layers inside its side-input wrapper ("model.<name>").
            layer_name = self.adapter.layer
            self.layer_name = layer_name[len("model."):] if side and layer_name.startswith("model.") else layer_name
            grid = _GridDistance(self.adapter, self.metric)
            self.algorithm = LayerGradCam(grid, grid.grid)
        return self.algorithm.attribute(
            inputs, additional_forward_args=self._forward_args(partners), relu_attributions=self.relu_attributions
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
