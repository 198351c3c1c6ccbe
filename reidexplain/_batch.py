"""The one reader of users' batches and dataset items: images, labels (possibly unknown), ids.

Every part of the library that takes a loader reads its batches here, so that the accepted formats,
the label conventions and the error messages are the same everywhere.

**Batch formats.** A dict with ``"image"`` (or ``"images"``) and ``"attributes"``, optional ``"pid"``
(``"pids"``), ``"camid"`` (``"camids"``) and ``"attribute_mask"``; or a tuple ``(images, attributes)``,
``(images, pids, attributes)`` or ``(images, pids, camids, attributes)``. Readers that need no labels
(feature extraction) take ``(images, pids, camids, ...)`` tuples and dicts without ``"attributes"``.

**Unknown labels.** A label can be unknown (not annotated) in two ways, which may be combined:

* the label tensor is float and holds ``NaN`` where the label is unknown;
* a dict batch carries a boolean ``"attribute_mask"`` of the labels' shape, ``True`` = known (the
  value under a ``False`` is ignored, whatever it is).

The reader returns the labels as 0/1 floats with 0 where unknown, plus ``known``: a bool ``(B,M)``
tensor, or ``None`` when every label is known. The readers of :mod:`reidexplain.data` give items with
both ``"attributes"`` (0 where unknown) and ``"attribute_mask"``.

Examples:
    >>> import torch
    >>> labels = torch.tensor([[1.0, float("nan")], [0.0, 1.0]])
    >>> batch = unpack_batch({"image": torch.rand(2, 3, 8, 4), "attributes": labels})
    >>> batch.attributes.tolist(), batch.known.tolist()
    ([[1.0, 0.0], [0.0, 1.0]], [[True, False], [True, True]])
    >>> unpack_batch((torch.rand(2, 3, 8, 4), torch.eye(2))).known is None
    True
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, NamedTuple

import torch

from ._checks import as_bool_mask, check_images, normalize_labels

__all__ = ["Batch", "unpack_batch", "iter_batches", "split_known", "item_field"]

_FORMATS = ("dict batches with 'image' and 'attributes' (optional 'pid', 'camid', 'attribute_mask'), or "
            "tuples (images, attributes), (images, pids, attributes) or (images, pids, camids, attributes)")
_FORMATS_NO_LABELS = "a dict with 'image', 'pid', 'camid' or a tuple (image, pid, camid, ...)"


class Batch(NamedTuple):
    """One batch read by :func:`unpack_batch`.

    Attributes:
        images: ``(B,3,H,W)`` float images.
        attributes: ``(B,M)`` float 0/1 labels, 0 where unknown; ``None`` when read without labels.
        pids: ``(B,)`` int64 person ids, or ``None``.
        camids: ``(B,)`` int64 camera ids, or ``None``.
        known: ``(B,M)`` bool, ``True`` where the label is known; ``None`` when every label is known.

    Examples:
        >>> import torch
        >>> b = Batch(torch.rand(1, 3, 8, 4), torch.ones(1, 2), None, None)
        >>> b.known is None, b.known_mask().tolist()
        (True, [[True, True]])
    """

    images: torch.Tensor
    attributes: torch.Tensor | None
    pids: torch.Tensor | None
    camids: torch.Tensor | None
    known: torch.Tensor | None = None

    def known_mask(self) -> torch.Tensor:
        """``known`` as a tensor: all ``True`` when every label is known.

        Raises:
            ValueError: the batch was read without labels.
        """
        if self.attributes is None:
            raise ValueError("Batch.known_mask: this batch was read without attribute labels")
        if self.known is None:
            return torch.ones_like(self.attributes, dtype=torch.bool)
        return self.known

    @property
    def num_unknown(self) -> int:
        """Number of unknown labels in the batch (0 without labels)."""
        return 0 if self.known is None else int((~self.known).sum())


def split_known(
    labels: object,
    mask: object = None,
    num_attributes: int | None = None,
    name: str = "attributes",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Split labels into 0/1 values and a known-mask, following the unknown-label convention.

    ``NaN`` entries and entries where ``mask`` is ``False`` are unknown; the known values go through
    :func:`reidexplain._checks.normalize_labels` (0/1, -1/+1 or 1/2 coding).

    Args:
        labels: ``(B,M)`` (or ``(M,)``) labels, a tensor or anything ``torch.as_tensor`` takes.
        mask: Optional bool (or 0/1) tensor of the same shape, ``True`` = known.
        num_attributes: Expected width ``M``.
        name: Argument name used in error messages.

    Returns:
        ``(labels (B,M) float 0/1 with 0 where unknown, known (B,M) bool or None if all are known)``.

    Raises:
        ValueError: wrong shapes or width, a mask that is not boolean, or known values that are not
            binary.

    Examples:
        >>> import torch
        >>> y, known = split_known(torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[True, True, False]]))
        >>> y.tolist(), known.tolist()
        ([[1.0, 0.0, 0.0]], [[True, True, False]])
    """
    if not isinstance(labels, torch.Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"`{name}`: expected a tensor of labels, got {type(labels).__name__}") from err
    if labels.dim() == 1:
        labels = labels.unsqueeze(0)
    if labels.dim() != 2:
        raise ValueError(f"`{name}`: expected shape (B,M), got {tuple(labels.shape)}")
    unknown = torch.isnan(labels) if labels.is_floating_point() else torch.zeros_like(labels, dtype=torch.bool)
    if mask is not None:
        mask_name = "attribute_mask" if name == "attributes" else f"{name} mask"
        if not isinstance(mask, torch.Tensor):
            mask = torch.as_tensor(mask)
        if mask.dim() == 1:
            mask = mask.unsqueeze(0)
        if mask.shape != labels.shape:
            raise ValueError(
                f"`{mask_name}`: expected the shape of the labels {tuple(labels.shape)}, got {tuple(mask.shape)}"
            )
        if mask.is_floating_point() and torch.isnan(mask).any():
            raise ValueError(f"`{mask_name}`: expected a bool or 0/1 tensor, got NaN values")
        unknown = unknown | ~as_bool_mask(mask, mask_name).to(unknown.device)
    if unknown.any():
        known_values = labels[~unknown]
        # Unknown entries take a value of the known ones, so that the coding is recognised as usual.
        fill = known_values.min() if known_values.numel() else labels.new_zeros(())
        labels = torch.where(unknown, fill.to(labels.dtype), labels)
    values = normalize_labels(labels, num_attributes, name)
    if mask is None and not unknown.any():
        return values, None
    known = ~unknown
    return values.masked_fill(unknown, 0.0), known


def _ids(x: object, name: str, batch: int, where: str) -> torch.Tensor | None:
    if x is None:
        return None
    try:
        t = torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{where}: `{name}` must be integer ids, got {type(x).__name__}") from err
    t = t.reshape(-1)
    if t.is_floating_point():
        if not torch.isfinite(t).all() or not torch.equal(t, t.round()):
            raise ValueError(f"{where}: `{name}` must be integer ids, got non-integer values")
    elif t.dtype == torch.bool:
        raise ValueError(f"{where}: `{name}` must be integer ids, got a bool tensor")
    if t.numel() != batch:
        raise ValueError(f"{where}: `{name}` has {t.numel()} values for a batch of {batch} images")
    return t.long()


def _get(batch: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        if key in batch and batch[key] is not None:
            return batch[key]
    return None


def unpack_batch(
    batch: object,
    num_attributes: int | None = None,
    *,
    attributes: bool = True,
    where: str = "loader",
) -> Batch:
    """Read one batch in any of the supported formats (see the module docstring).

    Args:
        batch: The batch (a dict, tuple or list; a :class:`Batch` is returned as it is).
        num_attributes: Expected label width ``M`` (checked when given).
        attributes: Read labels. With ``False`` (feature extraction) tuples are
            ``(images, pids, camids, ...)``, dicts need no ``"attributes"`` and ``Batch.attributes`` is
            ``None``.
        where: Prefix of the error messages (``"loader"``, ``"extract_features"``).

    Returns:
        A :class:`Batch`.

    Raises:
        TypeError: an unsupported batch type, or a dict without images (or labels).
        ValueError: bad image shapes, a label width other than ``num_attributes``, non-binary known
            labels, a bad ``attribute_mask``, or ids or labels whose count differs from the images'.

    Examples:
        >>> import torch
        >>> b = unpack_batch({"image": torch.rand(2, 3, 8, 4), "attributes": torch.ones(2, 3),
        ...                   "attribute_mask": torch.tensor([[1, 1, 0], [1, 1, 1]]), "pid": [4, 4]})
        >>> b.attributes.tolist(), b.known.sum().item(), b.pids.tolist()
        ([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], 5, [4, 4])
        >>> unpack_batch((torch.rand(2, 3, 8, 4), [1, 2], [0, 1]), attributes=False).camids.tolist()
        [0, 1]
    """
    if isinstance(batch, Batch):  # already read (a CheckedLoader's batches): only the width is checked
        if attributes and batch.attributes is not None and num_attributes is not None \
                and batch.attributes.shape[1] != num_attributes:
            raise ValueError(f"{where}: labels have {batch.attributes.shape[1]} attributes, expected "
                             f"{num_attributes}")
        return batch
    pids = camids = labels = mask = None
    if isinstance(batch, Mapping):
        images = _get(batch, "image", "images")
        pids = _get(batch, "pid", "pids")
        camids = _get(batch, "camid", "camids")
        if attributes:
            labels = batch.get("attributes")
            mask = batch.get("attribute_mask")
            if images is None or labels is None:
                raise TypeError(
                    f"{where}: a dict batch needs 'image' and 'attributes' keys, got {sorted(map(str, batch))}"
                )
        elif images is None:
            raise TypeError(f"{where}: expected {_FORMATS_NO_LABELS}; the dict has keys {sorted(map(str, batch))}")
    elif isinstance(batch, (tuple, list)) and attributes and len(batch) in (2, 3, 4):
        images, labels = batch[0], batch[-1]
        if len(batch) >= 3:
            pids = batch[1]
        if len(batch) == 4:
            camids = batch[2]
    elif isinstance(batch, (tuple, list)) and not attributes and len(batch) >= 1:
        images = batch[0]
        pids = batch[1] if len(batch) >= 2 else None
        camids = batch[2] if len(batch) >= 3 else None
    else:
        what = (f"{type(batch).__name__} of length {len(batch)}" if isinstance(batch, (tuple, list))
                else type(batch).__name__)
        raise TypeError(f"{where}: expected {_FORMATS if attributes else _FORMATS_NO_LABELS}; got a {what}")
    if not isinstance(images, torch.Tensor) and hasattr(images, "__array__"):
        images = torch.as_tensor(images)
    images = check_images(images, f"{where} images")
    b = images.shape[0]
    values = known = None
    if attributes:
        values, known = split_known(labels, mask, num_attributes, "attributes")
        if values.shape[0] != b:
            raise ValueError(f"attributes: {values.shape[0]} rows for a batch of {b} images")
    return Batch(images, values, _ids(pids, "pid", b, where), _ids(camids, "camid", b, where), known)


def iter_batches(
    loader: Iterable[Any],
    num_attributes: int | None = None,
    warn: bool = True,
    *,
    attributes: bool = True,
    where: str = "loader",
) -> Iterator[Batch]:
    """Unpack every batch of ``loader`` with :func:`unpack_batch`.

    The label-conversion warnings (-1/+1 or 1/2 coding) are given once, for the first batch (if
    ``warn``), not per batch; the label width of the first batch is required of the others.

    Raises:
        ValueError: the loader yields no batch, or a batch is malformed (see :func:`unpack_batch`).

    Examples:
        >>> import torch
        >>> loader = [(torch.rand(2, 3, 8, 4), torch.tensor([[0.0, float("nan")], [1.0, 1.0]]))] * 3
        >>> sum(b.num_unknown for b in iter_batches(loader))
        3
    """
    empty = True
    for i, raw in enumerate(loader):
        empty = False
        if i == 0 and warn:
            batch = unpack_batch(raw, num_attributes, attributes=attributes, where=where)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                batch = unpack_batch(raw, num_attributes, attributes=attributes, where=where)
        if num_attributes is None and batch.attributes is not None:
            num_attributes = batch.attributes.shape[1]
        yield batch
    if empty:
        raise ValueError(f"{where}: it yielded no batches (empty dataset?)")


def item_field(item: object, key: str, position: int, where: str = "dataset item") -> Any:
    """One field of a dataset item: ``item[key]`` for a dict, ``item[position]`` for a tuple.

    For code that reads single items cheaply (the pids of a dataset, a custom collate), without
    checking the whole item as :func:`unpack_batch` does.

    Raises:
        KeyError: a dict without ``key``.
        IndexError: a tuple too short for ``position``.
        TypeError: neither a dict nor a tuple.

    Examples:
        >>> item_field({"image": None, "pid": 3}, "pid", 1), item_field(("img", 7, 0), "pid", 1)
        (3, 7)
    """
    if isinstance(item, Mapping):
        if key not in item:
            raise KeyError(f"{where}: expected a key {key!r}, got keys {sorted(map(str, item))}")
        return item[key]
    if isinstance(item, (tuple, list)):
        if position >= len(item):
            raise IndexError(
                f"{where}: expected {key!r} at position {position} of the tuple, got a tuple of length {len(item)}"
            )
        return item[position]
    raise TypeError(
        f"{where}: expected {_FORMATS_NO_LABELS}, got {type(item).__name__}"
    )
