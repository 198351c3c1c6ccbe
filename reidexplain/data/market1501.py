"""Readers for Market-1501 and DukeMTMC-reID as they lie on disk, with their attribute annotations.

Both datasets share one layout (AMD-SPEC section 8)::

    root/
        bounding_box_train/    training images
        query/                 query images
        bounding_box_test/     gallery images
        market_attribute.mat   (or attribute/market_attribute.mat; duke_attribute.mat for Duke)

Market-1501 names images ``PPPP_cCsS_FFFFFF_NN.jpg`` (person id, camera, sequence, frame, box) and
DukeMTMC-reID ``PPPP_cC_fFFFFFFF.jpg``. Person id ``-1`` marks junk boxes and is always dropped; id
``0000`` marks distractors, dropped from the training and query splits and kept (with pid 0) in the
gallery, as the standard evaluation protocol does. Attributes are annotated per identity: the ``train``
struct of the ``.mat`` file covers the training ids and the ``test`` struct the query and gallery ids.

Labels can be unknown: entries the file leaves unannotated (value 0 instead of the 1/2 coding, as the
distributed DukeMTMC-attribute file does for some identities) and every label of an image whose
identity the annotation does not list (the distractors; those images also have
``has_attributes = False``). Items then carry ``"attributes"`` with 0 where unknown and the boolean
``"attribute_mask"`` (``True`` = known), the input convention of :mod:`reidexplain._batch`;
``dataset.num_unknown_labels`` counts them and the reader logs the count when there are any.

The writers :func:`write_market1501` and :func:`write_dukemtmc` produce the same layout from any
datasets of item dicts (the synthetic persons, for example), so that code written for the real data can
be tested without it.

Examples:
    >>> import tempfile, torch
    >>> from reidexplain.attributes import MARKET1501
    >>> class Tiny(torch.utils.data.Dataset):
    ...     schema = MARKET1501
    ...     def __init__(self, pids): self.pids = pids
    ...     def __len__(self): return len(self.pids)
    ...     def __getitem__(self, i):
    ...         return {"image": torch.rand(3, 32, 16), "pid": self.pids[i], "camid": i % 2,
    ...                 "attributes": torch.zeros(26)}
    >>> root = write_market1501({"train": Tiny([1, 1, 2]), "query": Tiny([3]),
    ...                          "gallery": Tiny([3, 3, 0])}, tempfile.mkdtemp(), progress=False)
    >>> train = Market1501(root, "train", relabel=True)
    >>> len(train), train.pids, train.original_pids, train[0]["image"].shape
    (3, [0, 0, 1], [1, 1, 2], torch.Size([3, 32, 16]))
    >>> gallery = Market1501(root, "gallery")
    >>> gallery.has_attributes.tolist(), gallery.num_unknown_labels  # the distractor's 26 labels
    ([False, True, True], 26)
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..attributes import AttributeSchema
from ._market_format import (
    DISTRACTOR_PID,
    DUKE_FORMAT,
    IMAGE_SUFFIXES,
    JUNK_PID,
    MARKET_FORMAT,
    SPLIT_FOLDERS,
    DiskFormat,
    find_attribute_file,
    read_attribute_file,
)
from ._market_writer import write_dukemtmc, write_market1501

__all__ = ["Market1501", "DukeMTMCreID", "write_market1501", "write_dukemtmc"]

log = logging.getLogger(__name__)

ImageSize = int | tuple[int, int]


def _check_image_size(image_size: object) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size: tuple[Any, ...] = (image_size, image_size)
    elif isinstance(image_size, Sequence) and len(image_size) == 2:
        size = tuple(image_size)
    else:
        raise TypeError(f"image_size: expected None, an int or a pair (H, W), got {image_size!r}")
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"image_size: expected positive integers (H, W), got {image_size!r}")
    return int(size[0]), int(size[1])


def load_rgb(path: str | Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    """An image file as a float ``(3,H,W)`` RGB tensor in ``[0, 1]``, resized to ``size = (H, W)``.

    Raises:
        ValueError: the file is not a readable image (the message names it).
    """
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if size is not None:
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError) as err:  # PIL's errors for truncated or foreign files
        raise ValueError(f"{path}: cannot read the image ({err})") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


class _ReIDFolder(Dataset):
    """Shared implementation of :class:`Market1501` and :class:`DukeMTMCreID`."""

    _format: DiskFormat = MARKET_FORMAT

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        attributes: bool | str | AttributeSchema = True,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        image_size: ImageSize | None = None,
        attribute_file: str | Path | None = None,
        relabel: bool = False,
    ) -> None:
        fmt = self._format
        if split not in SPLIT_FOLDERS:
            raise ValueError(f"split: expected one of {tuple(SPLIT_FOLDERS)}, got {split!r}")
        if relabel and split != "train":
            # Query and gallery relabelled on their own would no longer share ids.
            raise ValueError(
                f"relabel=True is only meaningful for split='train' (got split={split!r}); "
                "evaluation needs the original ids shared by query and gallery"
            )
        if transform is not None and not callable(transform):
            raise TypeError(f"transform: expected a callable or None, got {type(transform).__name__}")
        self.root = Path(root)
        self.split = split
        self.transform = transform
        self.image_size = _check_image_size(image_size)
        if not isinstance(attributes, (bool, str, AttributeSchema)):
            raise TypeError(
                f"attributes: expected True, False, a schema name or an AttributeSchema, got "
                f"{type(attributes).__name__}"
            )
        self.schema: AttributeSchema = fmt.resolve_schema(attributes) if attributes is not False else fmt.schema
        if not self.root.is_dir():
            raise FileNotFoundError(f"root: {self.root} is not a directory; {fmt.layout_help(self.root)}")
        folder = self.root / SPLIT_FOLDERS[split]
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{fmt.name} split {split!r}: folder {folder} not found; {fmt.layout_help(self.root)}"
            )

        self.paths: list[str] = []
        self.original_pids: list[int] = []
        self.camids: list[int] = []
        malformed: list[str] = []
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue  # Thumbs.db and friends ship with the real archives
            parsed = fmt.parse_name(path.name)
            if parsed is None:
                malformed.append(path.name)
                continue
            pid, camid = parsed
            if pid == JUNK_PID or (pid == DISTRACTOR_PID and split != "gallery"):
                continue
            self.paths.append(str(path))
            self.original_pids.append(pid)
            self.camids.append(camid)
        if malformed:
            warnings.warn(
                f"{fmt.name} {split}: skipped {len(malformed)} image(s) in {folder} whose names do not "
                f"match {fmt.name_example!r} (first: {malformed[0]!r})",
                stacklevel=3,
            )

        if relabel:
            mapping = {pid: i for i, pid in enumerate(sorted(set(self.original_pids)))}
            self.pids: list[int] = [mapping[p] for p in self.original_pids]
        else:
            self.pids = list(self.original_pids)

        n, m = len(self.paths), len(self.schema)
        self.has_attributes: torch.Tensor = torch.zeros(n, dtype=torch.bool)
        self.attributes: torch.Tensor | None = None
        self.attribute_mask: torch.Tensor | None = None
        self.attribute_file: Path | None = None
        if attributes is not False:
            self.attribute_file = find_attribute_file(self.root, fmt, attribute_file)
            part = "train" if split == "train" else "test"
            table = read_attribute_file(self.attribute_file, fmt, self.schema)[part]
            labels = torch.zeros(n, m)
            known = torch.zeros(n, m, dtype=torch.bool)
            unannotated: set[int] = set()
            for i, pid in enumerate(self.original_pids):
                row = table.get(pid)
                if row is None:
                    if pid != DISTRACTOR_PID:
                        unannotated.add(pid)
                    continue
                labels[i] = torch.nan_to_num(row, nan=0.0)
                known[i] = ~torch.isnan(row)
                self.has_attributes[i] = True
            if unannotated:
                warnings.warn(
                    f"{fmt.name} {split}: {len(unannotated)} identities have no attributes in "
                    f"{self.attribute_file} (for example {min(unannotated)}); their labels are unknown "
                    "(attribute_mask False) and has_attributes is False",
                    stacklevel=3,
                )
            self.attributes = labels
            self.attribute_mask = known
            if self.num_unknown_labels:
                in_file = int((~known[self.has_attributes]).sum())
                log.warning(
                    "%s %s: %d of %d labels are unknown (%d left unannotated in %s, %d of %d images "
                    "whose identity it does not list); items carry attribute_mask",
                    fmt.name, split, self.num_unknown_labels, n * m, in_file, self.attribute_file.name,
                    int((~self.has_attributes).sum()), n,
                )

    def __len__(self) -> int:
        return len(self.paths)

    def load_image(self, index: int) -> torch.Tensor:
        """Image ``index`` as a float ``(3,H,W)`` tensor in ``[0, 1]``, resized, before ``transform``."""
        return load_rgb(self.paths[index], self.image_size)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)  # numpy and 0-d tensor indices from custom samplers
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        index = index % len(self)
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        item: dict[str, Any] = {
            "image": image,
            "pid": self.pids[index],
            "camid": self.camids[index],
            "path": self.paths[index],
            "has_attributes": self.has_attributes[index],
        }
        if self.attributes is not None and self.attribute_mask is not None:
            item["attributes"] = self.attributes[index]
            item["attribute_mask"] = self.attribute_mask[index]
        return item

    @property
    def num_unknown_labels(self) -> int:
        """Number of unknown labels over the split (``attribute_mask`` False); 0 without attributes."""
        return 0 if self.attribute_mask is None else int((~self.attribute_mask).sum())

    @property
    def num_identities(self) -> int:
        """Number of distinct person ids in the split (the gallery's distractor id 0 counts as one)."""
        return len(set(self.pids))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, images={len(self)}, "
            f"identities={self.num_identities}, cameras={len(set(self.camids))})"
        )


class Market1501(_ReIDFolder):
    """Market-1501 read from its original folders, with the 26 attributes of Lin et al.

    Items are dicts ``{"image": float32 (3,H,W) in [0,1], "pid": int, "camid": int (0-based),
    "attributes": float32 (26,) 0/1 in the order of :data:`reidexplain.attributes.MARKET1501` (0 where
    unknown), "attribute_mask": bool (26,) (True = known), "has_attributes": bool tensor,
    "path": str}``; there are no pixel masks.

    Args:
        root: Folder holding ``bounding_box_train/``, ``query/`` and ``bounding_box_test/``.
        split: ``"train"``, ``"query"`` or ``"gallery"`` (``bounding_box_test/``).
        attributes: Read labels from ``market_attribute.mat``: ``True`` (or ``"market1501"``) for the
            26 attributes, ``"market1501_age"`` (or :data:`~reidexplain.attributes.MARKET1501_AGE`)
            for those plus the 4-class age as four one-hot attributes (M = 30). With ``False`` no file
            is needed, items carry no ``"attributes"`` and ``.attributes`` is ``None``.
        transform: Called on each ``(3,H,W)`` float image after loading and resizing.
        image_size: ``(H, W)`` (or one int for both) to resize every image to; ``None`` keeps the
            original size (128x64 for Market-1501).
        attribute_file: Explicit path of the ``.mat`` annotation; default: ``root/market_attribute.mat``,
            then ``root/attribute/market_attribute.mat``.
        relabel: Map the person ids of the training split to ``0..P-1`` (sorted by original id), as
            classification training needs. ``.original_pids`` keeps the ids of the file names.

    Attributes:
        schema: The attribute schema (:data:`~reidexplain.attributes.MARKET1501`, or
            :data:`~reidexplain.attributes.MARKET1501_AGE`).
        pids: Person id per image (relabelled if ``relabel``); gallery distractors have pid 0.
        original_pids: Person id per image as in the file names.
        camids: 0-based camera per image.
        paths: Image path per image.
        attributes: ``(N, M)`` float 0/1 labels (0 where unknown), or ``None`` with
            ``attributes=False``.
        attribute_mask: ``(N, M)`` bool, True where the label is known: False for entries the file
            leaves unannotated (0) and for every label of an image without annotation; ``None`` with
            ``attributes=False``.
        num_unknown_labels: Number of False entries of ``attribute_mask``.
        has_attributes: ``(N,)`` bool, False for images whose identity the annotation does not cover
            (the distractors); all their labels are unknown.

    Raises:
        FileNotFoundError: ``root``, the split's folder or the annotation file is missing.
        ValueError: Unknown split, ``relabel`` on query/gallery, a schema the annotation cannot
            produce, or a malformed annotation file (values other than 1, 2 and the unannotated 0).

    Examples:
        >>> import tempfile
        >>> Market1501(tempfile.mkdtemp(), "train")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        FileNotFoundError: Market-1501 split 'train': folder .../bounding_box_train not found; ...
    """

    _format = MARKET_FORMAT


class DukeMTMCreID(_ReIDFolder):
    """DukeMTMC-reID read from its original folders, with its 23 attributes.

    Same interface as :class:`Market1501`; images are named ``PPPP_cC_fFFFFFFF.jpg``, labels follow
    :data:`reidexplain.attributes.DUKEMTMC` and come from ``duke_attribute.mat`` (at the root or in
    ``root/attribute/``). The gallery's 408 distractor identities of the real dataset have ordinary ids
    and are annotated in the ``test`` struct, so they keep their attributes. Entries the distributed file
    leaves unannotated (0) are unknown: ``attribute_mask`` False, 0 in ``attributes``.

    Args:
        root: Folder holding ``bounding_box_train/``, ``query/`` and ``bounding_box_test/``.
        split: ``"train"``, ``"query"`` or ``"gallery"``.
        attributes: Read labels from ``duke_attribute.mat`` (``True`` or ``"dukemtmc"``).
        transform: Called on each ``(3,H,W)`` float image after loading and resizing.
        image_size: ``(H, W)`` or one int to resize to; ``None`` keeps the original (varying) size.
        attribute_file: Explicit path of the annotation file.
        relabel: Map training ids to ``0..P-1``; ``.original_pids`` keeps the file-name ids.

    Raises:
        FileNotFoundError: ``root``, the split's folder or the annotation file is missing.
        ValueError: Unknown split, ``relabel`` on query/gallery, or a malformed annotation file.

    Examples:
        >>> import tempfile
        >>> DukeMTMCreID(tempfile.mkdtemp(), "query")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        FileNotFoundError: DukeMTMC-reID split 'query': folder .../query not found; ...
    """

    _format = DUKE_FORMAT
