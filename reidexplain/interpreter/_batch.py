"""Reading the batches of a user's loader (private)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import torch

from .._checks import check_images, normalize_labels

__all__ = ["Batch", "unpack_batch", "iter_batches"]

_FORMATS = ("dict batches with 'image' and 'attributes' (optional 'pid', 'camid'), or tuples "
            "(images, attributes), (images, pids, attributes) or (images, pids, camids, attributes)")


class Batch(NamedTuple):
    """One batch: images ``(B,3,H,W)``, 0/1 attributes ``(B,M)`` and optional pids/camids ``(B,)``."""

    images: torch.Tensor
    attributes: torch.Tensor
    pids: torch.Tensor | None
    camids: torch.Tensor | None


def _ids(x: object, name: str, batch: int) -> torch.Tensor | None:
    if x is None:
        return None
    t = torch.as_tensor(x).reshape(-1).long()
    if t.numel() != batch:
        raise ValueError(f"loader: `{name}` has {t.numel()} values for a batch of {batch} images")
    return t


def unpack_batch(batch: object, num_attributes: int | None = None) -> Batch:
    """Read a batch in one of the supported formats; labels go through ``normalize_labels``.

    Raises:
        TypeError: an unsupported batch type.
        ValueError: bad image shapes, attribute width or labels.
    """
    pids = camids = None
    if isinstance(batch, dict):
        images = batch.get("image", batch.get("images"))
        attrs = batch.get("attributes")
        if images is None or attrs is None:
            raise TypeError(f"loader: a dict batch needs 'image' and 'attributes' keys, got {sorted(batch)}")
        pids = batch.get("pid", batch.get("pids"))
        camids = batch.get("camid", batch.get("camids"))
    elif isinstance(batch, (tuple, list)) and len(batch) in (2, 3, 4):
        images, attrs = batch[0], batch[-1]
        if len(batch) >= 3:
            pids = batch[1]
        if len(batch) == 4:
            camids = batch[2]
    else:
        what = f"{type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__
        raise TypeError(f"loader: expected {_FORMATS}; got a {what}")
    images = check_images(images, "loader images")
    attrs = normalize_labels(attrs, num_attributes, "attributes")
    if attrs.shape[0] != images.shape[0]:
        raise ValueError(f"attributes: {attrs.shape[0]} rows for a batch of {images.shape[0]} images")
    b = images.shape[0]
    return Batch(images, attrs, _ids(pids, "pid", b), _ids(camids, "camid", b))


def iter_batches(loader: Iterable, num_attributes: int | None = None, warn: bool = True) -> Iterator[Batch]:
    """Unpack every batch of ``loader``; label conversion warnings are given once (if ``warn``), not per batch.

    Raises:
        ValueError: the loader yields no batch.
    """
    empty = True
    for i, raw in enumerate(loader):
        empty = False
        if i == 0 and warn:
            batch = unpack_batch(raw, num_attributes)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                batch = unpack_batch(raw, num_attributes)
        if num_attributes is None:
            num_attributes = batch.attributes.shape[1]
        yield batch
    if empty:
        raise ValueError("loader: it yielded no batches (empty dataset?)")
