"""Shape and type checks shared by the ground-truth explanation metrics (private).

Every check raises a typed error that names the argument, the expected and the actual value, so that a
benchmark script that passes a ``(B,M,H,W)`` stack where a ``(B,H,W)`` map is expected is told so.
"""

from __future__ import annotations

import torch

__all__ = ["as_tensor", "check_heatmaps", "check_masks", "check_binary", "check_same_shape"]


def as_tensor(x: object, name: str) -> torch.Tensor:
    """Return ``x`` if it is a tensor, else raise ``TypeError`` naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}`: expected a torch.Tensor, got {type(x).__name__}")
    return x


def check_heatmaps(heatmaps: object, name: str = "heatmaps") -> torch.Tensor:
    """Return a float ``(B,H,W)`` view of ``(B,1,H,W)`` or ``(B,H,W)`` maps.

    Raises:
        TypeError: not a tensor.
        ValueError: another shape, an empty batch or non-finite values.
    """
    h = as_tensor(heatmaps, name)
    if h.dim() == 4 and h.shape[1] == 1:
        h = h[:, 0]
    if h.dim() != 3:
        raise ValueError(f"`{name}`: expected shape (B,1,H,W) or (B,H,W), got {tuple(h.shape)}")
    if h.shape[0] == 0 or h.shape[1] == 0 or h.shape[2] == 0:
        raise ValueError(f"`{name}`: expected a non-empty batch of non-empty maps, got {tuple(h.shape)}")
    if not h.is_floating_point():
        h = h.float()
    if not torch.isfinite(h).all():
        raise ValueError(f"`{name}`: expected finite values, got NaN or inf")
    return h


def check_masks(masks: object, shape: tuple[int, ...], name: str = "masks") -> torch.Tensor:
    """Return ``masks`` as a bool tensor of exactly ``shape``.

    A numeric tensor is accepted if it only holds 0 and 1 (a DataLoader may turn bools into uint8).

    Raises:
        TypeError: not a tensor.
        ValueError: another shape, or values other than 0/1.
    """
    m = as_tensor(masks, name)
    if tuple(m.shape) != tuple(shape):
        raise ValueError(f"`{name}`: expected shape {tuple(shape)}, got {tuple(m.shape)}")
    return check_binary(m, name)


def check_binary(x: torch.Tensor, name: str) -> torch.Tensor:
    """Return ``x`` as bool; raise ``ValueError`` if it holds values other than 0/1."""
    if x.dtype == torch.bool:
        return x
    if x.numel() and not ((x == 0) | (x == 1)).all():
        bad = torch.unique(x[(x != 0) & (x != 1)])[:5].tolist()
        raise ValueError(f"`{name}`: expected a bool or 0/1 tensor, got values such as {bad}")
    return x != 0


def check_same_shape(x: torch.Tensor, y: torch.Tensor, x_name: str, y_name: str) -> None:
    """Raise ``ValueError`` if the two tensors differ in shape."""
    if x.shape != y.shape:
        raise ValueError(
            f"`{y_name}`: expected the shape of `{x_name}` {tuple(x.shape)}, got {tuple(y.shape)}"
        )
