"""Building and scoring perturbed images for the deletion and insertion curves (private).

See :mod:`reidexplain.metrics.faithfulness` for the definitions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .._checks import check_images
from .._progress import progress_bar
from ._metric_checks import as_tensor, check_heatmaps

__all__ = ["gaussian_blur", "patch_means", "perturbation_curve", "BASELINES"]

BASELINES = ("partner", "blur", "mean", "zero")


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur ``(B,C,H,W)`` images with a Gaussian of std ``sigma`` pixels (edges replicated).

    The kernel is truncated at ``round(3 * sigma)`` pixels and normalised to sum 1 (the same kernel
    as ``scipy.ndimage.gaussian_filter(..., mode="nearest", truncate=3)``).

    Args:
        images: ``(B,C,H,W)`` float.
        sigma: Standard deviation in pixels, ``> 0``.

    Returns:
        ``(B,C,H,W)`` blurred images.

    Raises:
        ValueError: ``sigma`` not positive, or ``images`` not 4-D.

    Examples:
        >>> x = torch.zeros(1, 1, 9, 9); x[0, 0, 4, 4] = 1.0
        >>> round(float(gaussian_blur(x, 1.0).sum()), 4)
        1.0
    """
    if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"`sigma`: expected a finite number > 0, got {sigma!r}")
    images = as_tensor(images, "images")
    if images.dim() != 4:
        raise ValueError(f"`images`: expected shape (B,C,H,W), got {tuple(images.shape)}")
    radius = max(int(3.0 * sigma + 0.5), 1)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    # Separable: one pass along the rows, one along the columns, each channel on its own.
    x = F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)


def _baseline_images(
    images: torch.Tensor,
    baseline: str | torch.Tensor,
    partner: torch.Tensor | None,
    blur_sigma: float | None,
) -> torch.Tensor:
    if isinstance(baseline, torch.Tensor):
        try:
            base = torch.broadcast_to(baseline.to(images.dtype), images.shape)
        except RuntimeError as err:
            raise ValueError(
                f"`baseline`: a tensor baseline must broadcast to the images' shape {tuple(images.shape)}, "
                f"got {tuple(baseline.shape)}"
            ) from err
        if not torch.isfinite(base).all():
            raise ValueError("`baseline`: expected finite values, got NaN or inf")
        return base
    if baseline not in BASELINES:
        raise ValueError(f"`baseline`: expected one of {BASELINES} or a tensor, got {baseline!r}")
    if baseline == "partner":
        if partner is None:
            raise ValueError(
                "`partner`: baseline='partner' needs the partner images (B,3,H,W); pass partner=images_b "
                "or choose another baseline"
            )
        base = check_images(partner, "partner")
        if base.shape != images.shape:
            raise ValueError(
                f"`partner`: expected the images' shape {tuple(images.shape)}, got {tuple(base.shape)}"
            )
        return base.to(images.dtype)
    if baseline == "zero":
        return torch.zeros_like(images)
    if baseline == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images)
    sigma = blur_sigma if blur_sigma is not None else 0.1 * min(images.shape[-2:])
    return gaussian_blur(images, sigma)


def _check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{name}`: expected an int >= 1, got {value!r}")
    return value


def _check_patch_size(patch_size: object) -> tuple[int, int]:
    sizes = patch_size if isinstance(patch_size, (tuple, list)) else (patch_size, patch_size)
    if len(sizes) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in sizes):
        raise ValueError(f"`patch_size`: expected an int >= 1 or a pair of them, got {patch_size!r}")
    return int(sizes[0]), int(sizes[1])


def patch_means(heat: torch.Tensor, patch_h: int, patch_w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean map value of each ``patch_h x patch_w`` patch (edge patches may be smaller).

    Args:
        heat: ``(B,H,W)`` maps.
        patch_h: Patch height in pixels.
        patch_w: Patch width in pixels.

    Returns:
        ``(scores (B, P), patch_of_pixel (H*W,))``: the patches' mean values in row-major patch order,
        and the patch index of every pixel (row-major).

    Examples:
        >>> scores, index = patch_means(torch.arange(6.0).view(1, 2, 3), 2, 2)
        >>> scores, index
        (tensor([[2.0000, 3.5000]]), tensor([0, 0, 1, 0, 0, 1]))
    """
    batch, height, width = heat.shape
    grid_h, grid_w = -(-height // patch_h), -(-width // patch_w)
    pad = (0, grid_w * patch_w - width, 0, grid_h * patch_h - height)
    # Sum and count separately, so that the cropped patches at the border are plain means too.
    sums = F.pad(heat, pad).view(batch, grid_h, patch_h, grid_w, patch_w).sum(dim=(2, 4))
    ones = F.pad(torch.ones_like(heat[:1]), pad).view(1, grid_h, patch_h, grid_w, patch_w).sum(dim=(2, 4))
    rows = torch.arange(height, device=heat.device) // patch_h
    cols = torch.arange(width, device=heat.device) // patch_w
    patch_of_pixel = (rows[:, None] * grid_w + cols[None, :]).flatten()
    return (sums / ones).flatten(1), patch_of_pixel


def perturbation_curve(
    distance_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    heatmaps: torch.Tensor,
    partner: torch.Tensor | None,
    steps: int,
    baseline: str | torch.Tensor,
    batch_size: int,
    blur_sigma: float | None,
    progress: bool,
    insertion: bool,
    patch_size: int | tuple[int, int] = 1,
) -> torch.Tensor:
    if not callable(distance_fn):
        raise TypeError(f"`distance_fn`: expected a callable (images, index) -> (N,), got {type(distance_fn).__name__}")
    images = check_images(images, "images")
    heat = check_heatmaps(heatmaps)
    batch, _, height, width = images.shape
    if tuple(heat.shape) != (batch, height, width):
        raise ValueError(
            f"`heatmaps`: expected shape ({batch}, 1, {height}, {width}) or ({batch}, {height}, {width}) "
            f"to match the images, got {tuple(heatmaps.shape)}"
        )
    steps = _check_positive_int(steps, "steps")
    batch_size = _check_positive_int(batch_size, "batch_size")
    base = _baseline_images(images, baseline, partner, blur_sigma)
    # Deletion pastes the baseline over the image; insertion pastes the image over the baseline.
    canvas, paste = (base, images) if insertion else (images, base)

    patch_h, patch_w = _check_patch_size(patch_size)
    patch_scores, patch_of_pixel = patch_means(heat.to(images.device), patch_h, patch_w)
    num_patches = patch_scores.shape[1]
    # Stable sort: ties keep row-major order, so curves are deterministic for flat maps too.
    order = torch.argsort(patch_scores, dim=1, descending=True, stable=True)
    patch_rank = torch.empty_like(order)
    patch_rank.scatter_(1, order, torch.arange(num_patches, device=order.device).expand(batch, -1))
    rank = patch_rank[:, patch_of_pixel]  # (B, H*W): the rank of the patch each pixel belongs to
    num_changed = torch.arange(steps + 1, device=order.device) * num_patches // steps

    total = batch * (steps + 1)
    curve = torch.empty(total, dtype=torch.float32)
    chunks = range(0, total, batch_size)
    with torch.no_grad():
        for start in progress_bar(chunks, desc="insertion" if insertion else "deletion", enabled=progress):
            n = torch.arange(start, min(start + batch_size, total), device=order.device)
            pair, step = n // (steps + 1), n % (steps + 1)
            changed = (rank[pair] < num_changed[step, None]).view(-1, 1, height, width)
            perturbed = torch.where(changed, paste[pair], canvas[pair])
            dist = distance_fn(perturbed, pair)
            if not isinstance(dist, torch.Tensor) or tuple(dist.shape) != (len(n),):
                got = tuple(dist.shape) if isinstance(dist, torch.Tensor) else type(dist).__name__
                raise ValueError(f"`distance_fn`: expected a tensor of shape ({len(n)},), got {got}")
            curve[start : start + len(n)] = dist.detach().float().cpu()
    return curve.view(batch, steps + 1)
