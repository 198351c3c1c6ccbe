"""Feature masks for feature ablation: a regular grid, or simple SLIC-like superpixels.

The superpixels are a small k-means over colour and position (the idea of SLIC, Achanta et al. 2012),
written in torch so that no image-processing dependency is needed. Unlike SLIC proper, a segment is
not forced to be connected; ablation only needs a partition of the pixels.
"""

from __future__ import annotations

import math

import torch

__all__ = ["grid_segments", "slic_segments"]


def grid_segments(height: int, width: int, cell: int | tuple[int, int] = 8) -> torch.Tensor:
    """A ``(H,W)`` long tensor numbering the cells of a regular grid row by row.

    Args:
        height: Image height.
        width: Image width.
        cell: Cell size ``(h, w)`` in pixels, or one int for square cells. Border cells may be smaller.

    Raises:
        ValueError: a cell size below 1.

    Examples:
        >>> grid_segments(4, 4, cell=2)
        tensor([[0, 0, 1, 1],
                [0, 0, 1, 1],
                [2, 2, 3, 3],
                [2, 2, 3, 3]])
    """
    ch, cw = (cell, cell) if isinstance(cell, int) else tuple(cell)
    if ch < 1 or cw < 1:
        raise ValueError(f"cell: expected positive sizes, got {cell!r}")
    rows = torch.arange(height) // ch
    cols = torch.arange(width) // cw
    return rows[:, None] * math.ceil(width / cw) + cols[None, :]


def slic_segments(
    images: torch.Tensor, n_segments: int = 32, compactness: float = 10.0, n_iter: int = 10
) -> torch.Tensor:
    """SLIC-like superpixels of each image: ``(B,3,H,W)`` in ``[0,1]`` to ``(B,1,H,W)`` segment ids.

    Args:
        images: ``(B,3,H,W)`` images in ``[0,1]``.
        n_segments: Approximate number of segments (the k-means starts on a grid of this many cells).
        compactness: Weight of position against colour: higher gives squarer segments. On the scale of
            ``skimage``'s SLIC for colours in ``[0,255]``, ``10`` is a usual value.
        n_iter: Number of k-means iterations.

    Returns:
        A long tensor ``(B,1,H,W)``; each image's ids are consecutive from ``0``.

    Raises:
        ValueError: ``images`` not ``(B,3,H,W)``, or ``n_segments`` / ``n_iter`` below 1.

    Examples:
        >>> import torch
        >>> img = torch.zeros(1, 3, 16, 8); img[:, :, 8:] = 1.0
        >>> seg = slic_segments(img, n_segments=2)
        >>> seg.shape, int(seg.max()) + 1
        (torch.Size([1, 1, 16, 8]), 2)
    """
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images: expected shape (B,3,H,W), got {tuple(images.shape)}")
    if n_segments < 1 or n_iter < 1:
        raise ValueError(f"n_segments and n_iter: expected >= 1, got {n_segments} and {n_iter}")
    batch, _, height, width = images.shape
    # Initial centres on a grid with cells of roughly equal area, as SLIC does.
    step = math.sqrt(height * width / n_segments)
    rows = max(1, round(height / step))
    cols = max(1, round(width / step))
    cy = (torch.arange(rows, dtype=torch.float32) + 0.5) * height / rows
    cx = (torch.arange(cols, dtype=torch.float32) + 0.5) * width / cols
    centre_yx = torch.stack(torch.meshgrid(cy, cx, indexing="ij"), dim=-1).reshape(-1, 2)
    yy, xx = torch.meshgrid(
        torch.arange(height, dtype=torch.float32), torch.arange(width, dtype=torch.float32), indexing="ij"
    )
    pixel_yx = torch.stack([yy, xx], dim=-1).reshape(-1, 2)
    # Colour in [0,255] and position divided by the grid step, so `compactness` means what it does in SLIC.
    spatial_weight = compactness / step
    out = torch.empty(batch, 1, height, width, dtype=torch.long)
    for i in range(batch):
        colour = images[i].detach().float().cpu().reshape(3, -1).T * 255.0
        feats = torch.cat([colour, pixel_yx * spatial_weight], dim=1)
        iy = centre_yx[:, 0].long().clamp(max=height - 1)
        ix = centre_yx[:, 1].long().clamp(max=width - 1)
        centres = feats[iy * width + ix].clone()
        for _ in range(n_iter):
            labels = torch.cdist(feats, centres).argmin(dim=1)
            counts = torch.bincount(labels, minlength=centres.shape[0]).float()
            sums = torch.zeros_like(centres).index_add_(0, labels, feats)
            keep = counts > 0
            centres[keep] = sums[keep] / counts[keep, None]
        labels = torch.cdist(feats, centres).argmin(dim=1)
        _, labels = torch.unique(labels, return_inverse=True)
        out[i, 0] = labels.reshape(height, width)
    return out.to(images.device)
