"""Gradient baselines on a pair distance: Integrated Gradients and Saliency."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from captum.attr import IntegratedGradients, Saliency
from torch import nn

from ._base import PairExplainer

__all__ = ["IntegratedGradientsPair", "SaliencyPair"]


def _check_baseline(baseline: float | torch.Tensor, name: str = "baseline") -> float | torch.Tensor:
    if isinstance(baseline, (int, float)) and not isinstance(baseline, bool):
        return float(baseline)
    if isinstance(baseline, torch.Tensor):
        if baseline.dim() == 3:
            baseline = baseline.unsqueeze(0)
        if baseline.dim() != 4 or baseline.shape[:2] != (1, 3):
            raise ValueError(
                f"{name}: expected a float or a tensor of shape (3,H,W) or (1,3,H,W), "
                f"got shape {tuple(baseline.shape)}"
            )
        return baseline.float()
    raise TypeError(f"{name}: expected a float or a torch.Tensor, got {type(baseline).__name__}")


def _baseline_on(baseline: float | torch.Tensor, inputs: torch.Tensor) -> float | torch.Tensor:
    if isinstance(baseline, torch.Tensor):
        if baseline.shape[-2:] != inputs.shape[-2:]:
            raise ValueError(
                f"baseline: expected spatial size {tuple(inputs.shape[-2:])} (the images'), "
                f"got {tuple(baseline.shape[-2:])}"
            )
        return baseline.to(inputs.device, inputs.dtype)
    return baseline


class IntegratedGradientsPair(PairExplainer):
    """Integrated Gradients of the pair distance, from a black image to each image of the pair.

    The attributions of ``a`` sum to ``d(a, b) - d(baseline, b)`` up to the integration error, which
    is kept per image in ``extras["convergence_delta"]``.

    Args:
        model: Target model ``(B,3,H,W) -> (B,D)``.
        metric: ``"euclidean"`` or ``"cosine"``.
        n_steps: Number of integration steps.
        baseline: Reference image: a constant (``0.0`` = black) or a ``(3,H,W)`` tensor.
        integration: Captum's integration rule (``"gausslegendre"``, ``"riemann_trapezoid"``, ...).
        method: Deprecated name of ``integration``.
        internal_batch_size: Passed to Captum: at most this many path points per forward call.
        multiply_by_inputs: Passed to Captum: ``False`` gives the path-averaged gradient instead.

    Raises:
        ValueError: ``n_steps`` below 1, or a baseline of the wrong shape.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 4, 6))
        >>> a, b = torch.rand(3, 8, 4), torch.rand(3, 8, 4)
        >>> result = IntegratedGradientsPair(model, n_steps=20).explain((a, b))
        >>> delta_a, delta_b = result.extras["convergence_delta"]
        >>> bool(delta_a.abs().max() < 1e-3)
        True
    """

    method = "integrated_gradients"

    def __init__(
        self,
        model: nn.Module,
        metric: str = "euclidean",
        n_steps: int = 50,
        baseline: float | torch.Tensor = 0.0,
        integration: str = "gausslegendre",
        internal_batch_size: int | None = None,
        multiply_by_inputs: bool = True,
        method: str | None = None,
    ) -> None:
        super().__init__(model, metric)
        if method is not None:  # its former name; ``method`` names the producer of a result
            warnings.warn("IntegratedGradientsPair(method=...) is deprecated: pass integration=...",
                          DeprecationWarning, stacklevel=2)
            integration = method
        if not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps: expected a positive int, got {n_steps!r}")
        self.n_steps = n_steps
        self.baseline = _check_baseline(baseline)
        self.integration = integration
        self.internal_batch_size = internal_batch_size
        self.algorithm = IntegratedGradients(self.forward_func, multiply_by_inputs=multiply_by_inputs)

    def _attribute(self, inputs: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        attr, delta = self.algorithm.attribute(
            inputs,
            baselines=_baseline_on(self.baseline, inputs),
            additional_forward_args=self._forward_args(partners),
            n_steps=self.n_steps,
            method=self.integration,
            internal_batch_size=self.internal_batch_size,
            return_convergence_delta=True,
        )
        self._delta = delta.detach()
        return attr

    def _extras(self, inputs: torch.Tensor, partners: torch.Tensor) -> dict[str, Any]:
        half = inputs.shape[0] // 2
        return {"convergence_delta": (self._delta[:half], self._delta[half:]), "n_steps": self.n_steps}


class SaliencyPair(PairExplainer):
    """Saliency: the gradient of the pair distance with respect to each image's pixels.

    Args:
        model: Target model ``(B,3,H,W) -> (B,D)``.
        metric: ``"euclidean"`` or ``"cosine"``.
        abs: Take the absolute value of the gradient before summing the colour channels (Captum's
            default). ``False`` keeps the sign: positive pixels push the pair apart.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 4, 6))
        >>> result = SaliencyPair(model).explain((torch.rand(2, 3, 8, 4), torch.rand(2, 3, 8, 4)))
        >>> bool((result.maps[0] >= 0).all())
        True
    """

    method = "saliency"

    def __init__(self, model: nn.Module, metric: str = "euclidean", abs: bool = True) -> None:  # noqa: A002
        super().__init__(model, metric)
        self.abs = bool(abs)
        self.algorithm = Saliency(self.forward_func)

    def _attribute(self, inputs: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        return self.algorithm.attribute(inputs, abs=self.abs, additional_forward_args=self._forward_args(partners))
