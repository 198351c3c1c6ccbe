"""Input checks at the public boundary: typed errors that name the argument, expected and actual."""

from __future__ import annotations

import warnings

import torch

__all__ = ["check_images", "check_pair", "check_embeddings", "normalize_labels", "as_bool_mask"]


def check_images(x: object, name: str = "images") -> torch.Tensor:
    """Return ``x`` as a float ``(B,3,H,W)`` tensor; a single ``(3,H,W)`` image gets a batch axis.

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: wrong rank or channel count, empty batch, or non-finite values.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"`{name}`: expected a torch.Tensor of shape (B,3,H,W), got {type(x).__name__}")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"`{name}`: expected shape (B,3,H,W) or (3,H,W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"`{name}`: the batch is empty (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        x = x.float()
    return x


def check_pair(pair: object, name: str = "pair") -> tuple[torch.Tensor, torch.Tensor]:
    """Check a pair ``(images_a, images_b)`` of equal shapes; returns two ``(B,3,H,W)`` tensors."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(
            f"`{name}`: expected a tuple (image_a, image_b) of tensors, got {type(pair).__name__}"
            + (f" of length {len(pair)}" if isinstance(pair, (tuple, list)) else "")
        )
    a = check_images(pair[0], f"{name}[0]")
    b = check_images(pair[1], f"{name}[1]")
    if a.shape != b.shape:
        raise ValueError(
            f"`{name}`: the two images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    return a, b


def check_embeddings(out: object, batch_size: int, name: str = "model output") -> torch.Tensor:
    """Check that a model returned finite ``(B,D)`` embeddings."""
    if isinstance(out, (tuple, list, dict)):
        raise TypeError(
            f"{name}: expected a tensor of shape (B,D), got a {type(out).__name__}; say which part is the "
            "embedding with output=... (an index, a key or a callable: Explainer(model, output=0), "
            "Explainer(model, output='feat')), or wrap the model with "
            "reidexplain.adapters.select_output(model, ...) for the baselines"
        )
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor of shape (B,D), got {type(out).__name__}")
    if out.dim() != 2 or out.shape[0] != batch_size:
        raise ValueError(f"{name}: expected shape ({batch_size}, D), got {tuple(out.shape)}")
    if not torch.isfinite(out).all():
        raise ValueError(f"{name}: the embeddings contain NaN or inf values")
    return out


def normalize_labels(labels: object, num_attributes: int | None = None, name: str = "attributes") -> torch.Tensor:
    """Convert attribute labels to a float 0/1 tensor ``(B,M)``.

    Accepts 0/1, -1/+1 and the 1/2 coding of the Market-1501/DukeMTMC ``.mat`` files (2 = positive); the
    last two are converted with a warning.

    Raises:
        ValueError: not 2-D, width differs from ``num_attributes``, or values that are not binary.
    """
    if not isinstance(labels, torch.Tensor):
        labels = torch.as_tensor(labels)
    if labels.dim() == 1:
        labels = labels.unsqueeze(0)
    if labels.dim() != 2:
        raise ValueError(f"`{name}`: expected shape (B,M), got {tuple(labels.shape)}")
    if num_attributes is not None and labels.shape[1] != num_attributes:
        raise ValueError(
            f"`{name}`: expected {num_attributes} attributes per image (the schema's width), "
            f"got {labels.shape[1]}"
        )
    values = set(torch.unique(labels).tolist())
    if values <= {0, 1}:
        return labels.float()
    if values <= {-1, 1}:
        warnings.warn(f"`{name}`: converting -1/+1 labels to 0/1", stacklevel=3)
        return (labels > 0).float()
    if values <= {1, 2}:
        warnings.warn(f"`{name}`: converting 1/2 labels (.mat coding, 2 = yes) to 0/1", stacklevel=3)
        return (labels == 2).float()
    raise ValueError(
        f"`{name}`: labels must be binary (0/1, -1/+1 or 1/2), got values {sorted(values)[:8]}"
    )


def as_bool_mask(x: torch.Tensor, name: str) -> torch.Tensor:
    """Return a bool or 0/1 tensor as bool; anything else raises ``ValueError`` naming ``name``."""
    if x.dtype == torch.bool:
        return x
    if x.numel() and not ((x == 0) | (x == 1)).all():
        raise ValueError(f"`{name}`: expected a bool or 0/1 tensor")
    return x != 0
