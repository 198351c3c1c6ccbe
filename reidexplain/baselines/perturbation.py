"""Perturbation baselines on a pair distance: Occlusion and Feature Ablation.

Both replace part of one image by a baseline value (black by default) and record how the distance to
the fixed partner changes: ``d(a, b) - d(a_perturbed, b)``. A positive value marks a region whose
content pushes the pair apart.
"""

from __future__ import annotations

from typing import Any

import torch
from captum.attr import FeatureAblation, Occlusion
from torch import nn

from ._base import PairExplainer
from ._segments import grid_segments, slic_segments
from .gradient import _baseline_on, _check_baseline

__all__ = ["OcclusionPair", "FeatureAblationPair"]


def _window(value: int | tuple[int, ...], name: str) -> tuple[int, int, int]:
    if isinstance(value, int):
        value = (3, value, value)
    value = tuple(int(v) for v in value)
    if len(value) == 2:
        value = (3, *value)
    if len(value) != 3 or min(value) < 1:
        raise ValueError(f"{name}: expected positive (C,h,w), (h,w) or an int, got {value!r}")
    return value  # type: ignore[return-value]


def _check_positive_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


class OcclusionPair(PairExplainer):
    """Occlusion: slide a black window over each image and record the change of the pair distance.

    The defaults suit 128x64 person crops (16x16 windows moved by 8 pixels, 105 forward passes per
    image); use smaller windows for smaller images.

    Args:
        model: Target model ``(B,3,H,W) -> (B,D)``.
        metric: ``"euclidean"`` or ``"cosine"``.
        window: Sliding window ``(C,h,w)``, ``(h,w)`` or one int (square, all channels).
        stride: Window stride, same forms as ``window``.
        baseline: Value the window is filled with: a constant or a ``(3,H,W)`` tensor.
        perturbations_per_eval: Passed to Captum: occluded copies per forward call.
        progress: Show Captum's progress bar.

    Raises:
        ValueError: a window or stride that is not positive, or larger than the image.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 4, 6))
        >>> explainer = OcclusionPair(model, window=(4, 2), stride=(4, 2))
        >>> result = explainer.explain((torch.rand(3, 8, 4), torch.rand(3, 8, 4)))
        >>> tuple(result.maps[1].shape)
        (1, 1, 8, 4)
    """

    method = "occlusion"
    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        metric: str = "euclidean",
        window: int | tuple[int, ...] = (3, 16, 16),
        stride: int | tuple[int, ...] = (3, 8, 8),
        baseline: float | torch.Tensor = 0.0,
        perturbations_per_eval: int = 1,
        progress: bool = False,
    ) -> None:
        super().__init__(model, metric)
        self.window = _window(window, "window")
        self.stride = _window(stride, "stride")
        self.baseline = _check_baseline(baseline)
        self.perturbations_per_eval = _check_positive_int(perturbations_per_eval, "perturbations_per_eval")
        self.progress = bool(progress)
        self.algorithm = Occlusion(self.forward_func)

    def _attribute(self, inputs: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        if any(w > s for w, s in zip(self.window, inputs.shape[1:], strict=True)):
            raise ValueError(
                f"window: {self.window} does not fit images of shape {tuple(inputs.shape[1:])}; "
                "pass a smaller `window` (and `stride`)"
            )
        return self.algorithm.attribute(
            inputs,
            sliding_window_shapes=self.window,
            strides=self.stride,
            baselines=_baseline_on(self.baseline, inputs),
            additional_forward_args=self._forward_args(partners),
            perturbations_per_eval=self.perturbations_per_eval,
            show_progress=self.progress,
        )


class FeatureAblationPair(PairExplainer):
    """Feature ablation: black out one segment at a time and record the change of the pair distance.

    Segments come from, in order of precedence: ``feature_mask`` given by the user, or
    ``segments="grid"`` (cells of ``cell`` pixels), or ``segments="slic"`` (SLIC-like superpixels of
    each image, see :func:`reidexplain.baselines.slic_segments`).

    Args:
        model: Target model ``(B,3,H,W) -> (B,D)``.
        metric: ``"euclidean"`` or ``"cosine"``.
        feature_mask: Integer segment ids, ``(H,W)``, ``(1,H,W)``, ``(1,1,H,W)`` (shared by all
            images) or ``(2B,1,H,W)`` (images ``a`` first, then ``b``; then explain all ``B`` pairs
            in one call, without ``batch_size``); overrides ``segments``. Kept, per image, in
            ``extras["feature_mask"]``.
        segments: ``"grid"`` or ``"slic"``.
        cell: Grid cell size ``(h,w)`` or one int.
        n_segments: Approximate number of superpixels for ``"slic"``.
        compactness: SLIC compactness (higher: squarer superpixels).
        baseline: Replacement value: a constant or a ``(3,H,W)`` tensor.
        perturbations_per_eval: Passed to Captum.
        progress: Show Captum's progress bar.

    Raises:
        ValueError: unknown ``segments``, or a ``feature_mask`` of the wrong shape or type.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 4, 6))
        >>> result = FeatureAblationPair(model, cell=4).explain((torch.rand(3, 8, 4), torch.rand(3, 8, 4)))
        >>> mask_a, mask_b = result.extras["feature_mask"]
        >>> mask_a.unique().tolist()
        [0, 1]
    """

    method = "feature_ablation"
    uses_gradients = False

    def __init__(
        self,
        model: nn.Module,
        metric: str = "euclidean",
        feature_mask: torch.Tensor | None = None,
        segments: str = "grid",
        cell: int | tuple[int, int] = 8,
        n_segments: int = 32,
        compactness: float = 10.0,
        baseline: float | torch.Tensor = 0.0,
        perturbations_per_eval: int = 1,
        progress: bool = False,
    ) -> None:
        super().__init__(model, metric)
        if segments not in ("grid", "slic"):
            raise ValueError(f"segments: expected 'grid' or 'slic', got {segments!r}")
        if feature_mask is not None:
            if not isinstance(feature_mask, torch.Tensor) or feature_mask.is_floating_point():
                raise ValueError("feature_mask: expected an integer torch.Tensor of segment ids")
            while feature_mask.dim() < 4:
                feature_mask = feature_mask.unsqueeze(0)
            if feature_mask.dim() != 4 or feature_mask.shape[1] != 1:
                raise ValueError(
                    f"feature_mask: expected shape (H,W), (1,H,W) or (N,1,H,W), got {tuple(feature_mask.shape)}"
                )
        self.feature_mask = feature_mask
        self.segments = segments
        self.cell = cell
        self.n_segments = _check_positive_int(n_segments, "n_segments")
        self.compactness = float(compactness)
        self.baseline = _check_baseline(baseline)
        self.perturbations_per_eval = _check_positive_int(perturbations_per_eval, "perturbations_per_eval")
        self.progress = bool(progress)
        self.algorithm = FeatureAblation(self.forward_func)

    def masks_for(self, inputs: torch.Tensor) -> torch.Tensor:
        """The feature mask used for ``inputs`` ``(N,3,H,W)``: ``(1,1,H,W)`` or ``(N,1,H,W)`` ids.

        Raises:
            ValueError: a user mask whose size does not match ``inputs``.
        """
        height, width = inputs.shape[-2:]
        if self.feature_mask is not None:
            mask = self.feature_mask
            if mask.shape[-2:] != (height, width) or mask.shape[0] not in (1, inputs.shape[0]):
                raise ValueError(
                    f"feature_mask: expected shape (1 or {inputs.shape[0]}, 1, {height}, {width}), "
                    f"got {tuple(mask.shape)}"
                )
            return mask.long().to(inputs.device)
        if self.segments == "slic":
            return slic_segments(inputs, self.n_segments, self.compactness)
        return grid_segments(height, width, self.cell)[None, None].to(inputs.device)

    def _attribute(self, inputs: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        self._mask = self.masks_for(inputs)
        return self.algorithm.attribute(
            inputs,
            baselines=_baseline_on(self.baseline, inputs),
            additional_forward_args=self._forward_args(partners),
            feature_mask=self._mask,
            perturbations_per_eval=self.perturbations_per_eval,
            show_progress=self.progress,
        )

    def _extras(self, inputs: torch.Tensor, partners: torch.Tensor) -> dict[str, Any]:
        mask = self._mask.detach().expand(inputs.shape[0], 1, *inputs.shape[-2:])
        half = inputs.shape[0] // 2
        return {"feature_mask": (mask[:half], mask[half:])}
