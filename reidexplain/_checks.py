"""Input checks at the public boundary: typed errors that name the argument, expected and actual.

Every public entry point (:class:`reidexplain.Explainer`'s methods, the baselines' ``explain``, the
metrics) checks what it is given here, before anything reaches torch or Captum, so that a bad input is
answered by one error of reidexplain's that names the argument, what was expected and what was got.
The catalogue of bad inputs and what happens to each is in ``docs/bad-inputs.md``.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

__all__ = [
    "ZERO_DISTANCE",
    "ZeroDistanceWarning",
    "check_images",
    "check_pair",
    "check_embeddings",
    "check_batch_size",
    "check_model_devices",
    "check_loader",
    "CheckedLoader",
    "normalize_labels",
    "as_bool_mask",
]

ZERO_DISTANCE = 2e-6
"""Target distances at most this large count as 0 (twice the floor ``sqrt(EPS)`` of the euclidean
distance of :mod:`reidexplain.distance`): such a pair has nothing to explain."""


class ZeroDistanceWarning(UserWarning):
    """A pair's target distance is 0 (identical embeddings): its contributions and shares are set to 0.

    Examples:
        >>> issubclass(ZeroDistanceWarning, UserWarning)
        True
    """


def _where(mask: torch.Tensor, limit: int = 4) -> str:
    """The first indices of the ``True`` entries of ``mask``, as text."""
    idx = mask.nonzero().tolist()[:limit]
    text = ", ".join(str(tuple(i)) if len(i) > 1 else str(i[0]) for i in idx)
    return text + (", ..." if int(mask.sum()) > limit else "")


def check_images(
    x: object,
    name: str = "images",
    *,
    size: tuple[int, int] | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Return ``x`` as a finite floating-point ``(B,3,H,W)`` tensor; a ``(3,H,W)`` image gets a batch axis.

    The caller's tensor is never changed: a batch axis, a cast to ``dtype`` are new views or copies.

    Args:
        x: The images.
        name: The argument's name in error messages.
        size: The ``(H,W)`` the images must have (the size the interpreter was fitted on); ``None``: any.
        dtype: A floating-point dtype to cast the images to (the model's); ``None``: keep theirs.

    Returns:
        The checked ``(B,3,H,W)`` images.

    Raises:
        TypeError: ``x`` is not a tensor, or its dtype is not floating-point (integer, uint8 or bool
            images: the scaling and normalisation the model expects are unknown, so they are not guessed).
        ValueError: on the meta device (no data), wrong rank or channel count, an empty batch, NaN or inf
            values, or another size than ``size``.

    Examples:
        >>> import torch
        >>> check_images(torch.rand(3, 8, 4)).shape
        torch.Size([1, 3, 8, 4])
        >>> check_images(torch.rand(1, 3, 8, 4, dtype=torch.float64), dtype=torch.float32).dtype
        torch.float32
    """
    if not isinstance(x, torch.Tensor):
        hint = "; convert it with torch.as_tensor(x)" if hasattr(x, "__array__") else ""
        raise TypeError(f"`{name}`: expected a torch.Tensor of shape (B,3,H,W), got {type(x).__name__}{hint}")
    if x.device.type == "meta":
        raise ValueError(f"`{name}`: expected images with data, got a tensor on the meta device")
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"`{name}`: expected shape (B,3,H,W) or (3,H,W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"`{name}`: the batch is empty (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise TypeError(
            f"`{name}`: expected floating-point images, got {x.dtype}; convert them as the model expects "
            "them (e.g. images.float() / 255, then its normalisation): reidexplain does not guess the scaling"
        )
    if dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    bad = ~torch.isfinite(x)
    if bad.any():
        raise ValueError(
            f"`{name}`: expected finite images, got {int(bad.sum())} NaN or inf values "
            f"(first at {_where(bad, 1)})"
        )
    if size is not None and tuple(x.shape[-2:]) != tuple(size):
        h, w = size
        raise ValueError(
            f"`{name}`: expected images of size {h}x{w} (the size the interpreter was fitted on), got "
            f"{x.shape[-2]}x{x.shape[-1]}; resize them first, e.g. "
            f"torch.nn.functional.interpolate(images, size=({h}, {w}), mode='bilinear')"
        )
    return x


def check_pair(
    pair: object,
    name: str = "pair",
    *,
    size: tuple[int, int] | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check a pair ``(images_a, images_b)`` of equal shapes; returns two ``(B,3,H,W)`` tensors.

    Args:
        pair: ``(images_a, images_b)``.
        name: The argument's name in error messages.
        size: See :func:`check_images`.
        dtype: See :func:`check_images`.

    Raises:
        TypeError: not a tuple or list of two tensors, or images of a non-floating dtype.
        ValueError: see :func:`check_images`; or the two sides differ in shape.
    """
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(
            f"`{name}`: expected a tuple (image_a, image_b) of tensors, got {type(pair).__name__}"
            + (f" of length {len(pair)}" if isinstance(pair, (tuple, list)) else "")
        )
    a = check_images(pair[0], f"{name}[0]", dtype=dtype)
    b = check_images(pair[1], f"{name}[1]", dtype=dtype)
    if a.shape != b.shape:
        raise ValueError(
            f"`{name}`: the two images must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if size is not None:
        check_images(a, f"{name}[0]", size=size)
    return a, b


def check_embeddings(out: object, batch_size: int, name: str = "model output") -> torch.Tensor:
    """Check that a model returned finite ``(B,D)`` embeddings.

    Raises:
        TypeError: a tuple, list or dict (with how to select the embedding), or not a tensor.
        ValueError: not ``(batch_size, D)``, or NaN or inf values (the rows are named).

    Examples:
        >>> import torch
        >>> check_embeddings(torch.zeros(2, 4), 2).shape
        torch.Size([2, 4])
    """
    if isinstance(out, Mapping):
        keys = sorted(map(str, out))[:8]
        key = keys[0] if keys else "key"
        raise TypeError(
            f"{name}: expected a tensor of shape (B,D), got a {type(out).__name__} with keys {keys}; say which "
            f"part is the embedding with output=... (Explainer(model, output={key!r})), or wrap the model "
            f"with reidexplain.adapters.select_output(model, {key!r}) for the baselines"
        )
    if isinstance(out, (tuple, list)):
        kinds = [type(v).__name__ for v in out][:4]
        raise TypeError(
            f"{name}: expected a tensor of shape (B,D), got a {type(out).__name__} of {len(out)} items "
            f"({', '.join(kinds)}); say which part is the embedding with output=... (an index, a key or a "
            "callable: Explainer(model, output=0)), or wrap the model with "
            "reidexplain.adapters.select_output(model, 0) for the baselines"
        )
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor of shape (B,D), got {type(out).__name__}")
    if out.dim() != 2 or out.shape[0] != batch_size:
        raise ValueError(f"{name}: expected shape ({batch_size}, D), got {tuple(out.shape)}")
    bad = ~torch.isfinite(out)
    if bad.any():
        rows = bad.any(dim=1)
        raise ValueError(f"{name}: the embeddings contain NaN or inf values (images {_where(rows)} of the "
                         f"batch of {batch_size})")
    return out


def check_batch_size(value: object, name: str = "batch_size", allow_none: bool = False) -> int | None:
    """Check a chunk size: a positive int (or ``None`` if ``allow_none``).

    Raises:
        TypeError: not an int (a bool is not one).
        ValueError: below 1.

    Examples:
        >>> check_batch_size(8)
        8
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        expected = "a positive int or None" if allow_none else "a positive int"
        raise TypeError(f"`{name}`: expected {expected}, got {type(value).__name__} {value!r}")
    if value < 1:
        raise ValueError(f"`{name}`: expected a positive int, got {value}")
    return value


def check_model_devices(model: nn.Module, name: str = "model") -> torch.device | None:
    """The one device of a model's parameters and buffers (``None`` without any).

    Raises:
        ValueError: tensors on several devices, or on the meta device (a model not materialised).

    Examples:
        >>> from torch import nn
        >>> check_model_devices(nn.Linear(2, 2))
        device(type='cpu')
    """
    devices = {t.device for t in list(model.parameters()) + list(model.buffers())}
    if any(d.type == "meta" for d in devices):
        raise ValueError(f"`{name}`: expected a model with weights, got parameters on the meta device "
                         "(materialise it first: model.to_empty(device=...) and load_state_dict)")
    if len(devices) > 1:
        raise ValueError(f"`{name}`: expected its parameters and buffers on one device, got "
                         f"{sorted(map(str, devices))}; move it with model.to(device)")
    return next(iter(devices), None)


def check_loader(loader: object, name: str = "loader") -> Iterable[Any]:
    """Check that ``loader`` is an iterable of batches (not a single batch, tensor or string).

    Raises:
        TypeError: not iterable, or a tensor, dict or string (one batch passed as the loader).

    Examples:
        >>> check_loader([]) == []
        True
    """
    if isinstance(loader, (torch.Tensor, Mapping, str, bytes)):
        raise TypeError(f"`{name}`: expected an iterable of batches (a DataLoader or a list of batches), got "
                        f"a single {type(loader).__name__}; pass [batch] for one batch")
    if not isinstance(loader, Iterable):
        raise TypeError(f"`{name}`: expected an iterable of batches (a DataLoader or a list of batches), got "
                        f"{type(loader).__name__}")
    return loader


class CheckedLoader:
    """A loader whose every batch is checked (with the argument's name) and given as a read
    :class:`~reidexplain._batch.Batch`, which the training and evaluation loops take as it is.

    Each batch is read by :func:`reidexplain._batch.unpack_batch` with error messages that name the
    argument (``loader``, ``query_loader``...), its images are required to have the size of the first
    batch (or ``size``) and are cast to ``dtype``; the label-conversion warnings are given once. A
    one-shot iterator stays one: iterating it twice yields nothing the second time.

    Args:
        loader: The user's loader.
        name: Its argument name.
        num_attributes: The label width required (``None``: that of the first batch).
        size: The image size required (``None``: that of the first batch).
        dtype: Floating dtype the images are cast to (``None``: theirs).
        require_known: Raise at the end of a full pass in which no label was known.

    Raises:
        TypeError: see :func:`check_loader`; a malformed batch.
        ValueError: the loader yields no batch; a malformed batch, images of another size, or (with
            ``require_known``) no known label at all.

    Examples:
        >>> import torch
        >>> loader = CheckedLoader([(torch.rand(2, 3, 8, 4), torch.eye(2))], "loader")
        >>> [tuple(batch.images.shape) for batch in loader], len(loader)
        ([(2, 3, 8, 4)], 1)
    """

    def __init__(self, loader: Iterable[Any], name: str, num_attributes: int | None = None,
                 size: tuple[int, int] | None = None, dtype: torch.dtype | None = None,
                 require_known: bool = False) -> None:
        self.loader = check_loader(loader, name)
        self.name = name
        self.num_attributes = num_attributes
        self.size = None if size is None else tuple(size)
        self.fitted_size = self.size
        self.dtype = dtype
        self.require_known = require_known
        self._warned = False

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        from ._batch import unpack_batch

        empty, known = True, 0
        for i, raw in enumerate(self.loader):
            empty = False
            with warnings.catch_warnings():
                if self._warned:
                    warnings.simplefilter("ignore")
                batch = unpack_batch(raw, self.num_attributes, where=self.name)
            self._warned = True
            if self.num_attributes is None:
                self.num_attributes = batch.attributes.shape[1]
            if self.fitted_size is not None:
                check_images(batch.images, f"{self.name} images", size=self.fitted_size)
            size = tuple(batch.images.shape[-2:])
            if self.size is None:
                self.size = size
            elif size != self.size:
                raise ValueError(
                    f"`{self.name}`: expected every image of size {self.size[0]}x{self.size[1]} (the size of "
                    f"the first batch), got {size[0]}x{size[1]} in batch {i}"
                )
            known += batch.attributes.numel() if batch.known is None else int(batch.known.sum())
            yield batch if self.dtype is None else batch._replace(images=batch.images.to(self.dtype))
        if empty and not (isinstance(self.loader, Iterator) and self._warned):
            raise ValueError(f"`{self.name}`: it yielded no batches (empty dataset?)")
        if self.require_known and not empty and known == 0:
            raise ValueError(
                f"`{self.name}`: every attribute label is unknown (NaN or attribute_mask False); AMD learns "
                "what the attributes are from the known labels: give at least some"
            )


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
