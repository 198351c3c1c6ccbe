"""Attribute maps brought from the feature grid to image size: bilinear, as two small matrix products.

Bilinear interpolation (``align_corners=False``) is separable: the resized map is ``R_h @ A @ R_w^T``
with one ``(H,h)`` and one ``(W,w)`` matrix of interpolation weights (two non-zeros per row). On a CPU
this is about 3x faster than :func:`torch.nn.functional.interpolate` for the ``2*M`` maps of a pair
(0.24 against 0.68 ms for 52 maps of 16x8 to 128x64, one thread), and it agrees with it to float
rounding. Other devices use ``interpolate``.

Examples:
    >>> import torch
    >>> import torch.nn.functional as F
    >>> maps = torch.rand(2, 5, 4, 2)
    >>> ref = F.interpolate(maps, size=(16, 8), mode="bilinear", align_corners=False)
    >>> bool(torch.allclose(upsample_maps(maps, (16, 8)), ref, atol=1e-6))
    True
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F

__all__ = ["upsample_maps", "interpolation_matrix"]


def interpolation_matrix(size_in: int, size_out: int, dtype: torch.dtype = torch.float32,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``(size_out, size_in)`` weights of 1-D linear interpolation with ``align_corners=False``.

    Row ``i`` samples the input at ``(i + 0.5) * size_in / size_out - 0.5`` (clamped at 0, the last
    sample repeated beyond the end), as :func:`torch.nn.functional.interpolate` does.

    Raises:
        ValueError: a size below 1.

    Examples:
        >>> interpolation_matrix(2, 4).tolist()
        [[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]]
    """
    if size_in < 1 or size_out < 1:
        raise ValueError(f"interpolation_matrix: sizes must be >= 1, got {size_in} -> {size_out}")
    return _matrix(int(size_in), int(size_out), dtype, torch.device(device)).clone()


@lru_cache(maxsize=64)
def _matrix(size_in: int, size_out: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # Cached and shared: built outside inference mode even when first asked for inside it, so that a
    # later call under autograd can save it for the backward pass.
    with torch.inference_mode(False):
        return _weights(size_in, size_out).to(device=device, dtype=dtype)


def _weights(size_in: int, size_out: int) -> torch.Tensor:
    source = ((torch.arange(size_out, dtype=torch.float64) + 0.5) * (size_in / size_out) - 0.5).clamp_min(0)
    low = source.floor().long().clamp_max(size_in - 1)
    high = (low + 1).clamp_max(size_in - 1)
    frac = source - low
    rows = torch.arange(size_out)
    weights = torch.zeros(size_out, size_in, dtype=torch.float64)
    weights.index_put_((rows, low), 1 - frac, accumulate=True)
    weights.index_put_((rows, high), frac, accumulate=True)
    return weights


def upsample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B,K,h,w)`` maps resized bilinearly to ``(B,K,H,W)`` (``align_corners=False``), clamped at 0.

    Args:
        maps: Floating-point maps on the feature grid.
        size: ``(H, W)``.

    Returns:
        The resized maps, non-negative, of ``maps``' dtype and device; gradients flow to ``maps``.
    """
    height, width = int(size[0]), int(size[1])
    if maps.device.type != "cpu" or not maps.is_floating_point() or maps.dim() != 4:
        return F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False).clamp_min(0)
    rows = _matrix(maps.shape[-2], height, maps.dtype, maps.device)
    cols = _matrix(maps.shape[-1], width, maps.dtype, maps.device)
    return torch.matmul(torch.matmul(rows, maps), cols.T).clamp_min(0)
