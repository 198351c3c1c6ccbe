"""Write datasets of item dicts in the exact on-disk layout of Market-1501 or DukeMTMC-reID.

Re-exported by :mod:`reidexplain.data.market1501`; see there for the layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .._progress import progress_bar
from ..attributes import AttributeSchema, get_schema, project_labels
from ._market_format import (
    DISTRACTOR_PID,
    DUKE_FORMAT,
    IMAGE_SUFFIXES,
    JUNK_PID,
    MARKET_FORMAT,
    SPLIT_FOLDERS,
    DiskFormat,
    write_attribute_file,
)

__all__ = ["write_market1501", "write_dukemtmc"]

_MAX_CAMERAS = 9  # one digit in both naming schemes, as the usual ``c(\d)`` parsers expect


def _file_name(fmt: DiskFormat, pid: int, camid: int, frame: int) -> str:
    pid_text = "-1" if pid == JUNK_PID else f"{pid:04d}"
    if fmt is DUKE_FORMAT:
        return f"{pid_text}_c{camid + 1}_f{frame:07d}.jpg"
    return f"{pid_text}_c{camid + 1}s1_{frame:06d}_01.jpg"


def _to_uint8_hwc(image: object, where: str) -> np.ndarray:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"{where}: expected a torch.Tensor image, got {type(image).__name__}")
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"{where}: expected an image of shape (3,H,W), got {tuple(image.shape)}")
    image = image.detach().cpu()
    if image.dtype != torch.uint8:
        image = (image.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return image.permute(1, 2, 0).contiguous().numpy()


def _dataset_schema(dataset: object, width: int, split: str) -> AttributeSchema:
    schema = getattr(dataset, "schema", None)
    if schema is None:
        try:
            return get_schema(None, num_attributes=width)
        except ValueError as err:
            raise ValueError(f"splits[{split!r}]: has no `.schema` and {err}") from None
    return get_schema(schema)


def _target_schema(schema: AttributeSchema, fmt: DiskFormat) -> AttributeSchema:
    """The schema written: the format's, or a richer one it offers (age) whose extras ``schema`` has."""
    for option in fmt.schemas[1:]:
        extras = option.names[len(fmt.schema):]
        if all(a in schema for a in extras):
            return option
    return fmt.schema


def _labels(item: Mapping[str, Any], schema: AttributeSchema, fmt: DiskFormat, target: AttributeSchema,
            where: str) -> torch.Tensor:
    """The item's labels in the ``target`` order, NaN where unknown (NaN or ``attribute_mask`` False)."""
    if "attributes" not in item:
        raise ValueError(f"{where}: the item has no 'attributes'; the {fmt.name} layout needs them")
    labels = torch.as_tensor(item["attributes"]).detach().cpu().float().reshape(-1)
    if labels.numel() != len(schema):
        raise ValueError(
            f"{where}: expected {len(schema)} attributes (schema {schema.name!r}), got {labels.numel()}"
        )
    mask = item.get("attribute_mask")
    if mask is not None:
        mask = torch.as_tensor(mask).detach().cpu().reshape(-1)
        if mask.shape != labels.shape:
            raise ValueError(f"{where}: attribute_mask has {mask.numel()} entries for {labels.numel()} labels")
        labels = torch.where(mask.bool(), labels, torch.full_like(labels, float("nan")))
    known = ~torch.isnan(labels)
    if not bool(((labels[known] == 0) | (labels[known] == 1)).all()):
        raise ValueError(
            f"{where}: attributes must be 0/1 (NaN = unknown), got values {sorted(set(labels[known].tolist()))[:5]}"
        )
    if schema.names == target.names:
        return labels
    try:
        return project_labels(labels, schema, target)
    except ValueError:
        missing = [a for a in target.names if a not in schema]
        raise ValueError(
            f"{where}: cannot write attribute schema {schema.name!r} as {fmt.name}: it lacks the "
            f"{fmt.name} attributes {missing}"
        ) from None


def _same_labels(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())


def _prepare_root(root: Path, overwrite: bool) -> None:
    for folder in SPLIT_FOLDERS.values():
        path = root / folder
        existing = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES] if path.is_dir() else []
        if existing and not overwrite:
            raise FileExistsError(
                f"root: {path} already holds {len(existing)} images; pass overwrite=True to replace "
                "them or choose an empty root"
            )
        for old in existing:
            old.unlink()
        path.mkdir(parents=True, exist_ok=True)


def _write(
    fmt: DiskFormat,
    splits: Mapping[str, Any],
    root: str | Path,
    quality: int,
    progress: bool,
    pid_offset: int,
    overwrite: bool,
) -> Path:
    if not isinstance(splits, Mapping):
        raise TypeError(f"splits: expected a dict of datasets, got {type(splits).__name__}")
    if set(splits) != set(SPLIT_FOLDERS):
        raise ValueError(
            f"splits: expected exactly the keys {sorted(SPLIT_FOLDERS)}, got {sorted(map(str, splits))}"
        )
    if not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality: expected an int JPEG quality in [1, 100], got {quality!r}")
    if not isinstance(pid_offset, int) or pid_offset < 0:
        raise ValueError(f"pid_offset: expected a non-negative int, got {pid_offset!r}")
    root = Path(root)
    _prepare_root(root, overwrite)

    annotations: dict[str, dict[int, torch.Tensor]] = {"train": {}, "test": {}}
    written = fmt.schema
    total = sum(len(splits[s]) for s in SPLIT_FOLDERS)
    frame = 0
    with progress_bar(total=total, desc=f"writing {fmt.name}", enabled=progress) as bar:
        for split, folder in SPLIT_FOLDERS.items():
            dataset = splits[split]
            part = annotations["train" if split == "train" else "test"]
            schema: AttributeSchema | None = None
            for i in range(len(dataset)):
                where = f"splits[{split!r}][{i}]"
                item = dataset[i]
                pid, camid = int(item["pid"]), int(item["camid"])
                if pid < JUNK_PID:
                    raise ValueError(f"{where}: pid must be >= -1 (-1 = junk), got {pid}")
                if pid >= 0:
                    pid += pid_offset
                if pid > 9999:
                    raise ValueError(f"{where}: pid {pid} does not fit the 4-digit {fmt.name} names")
                if pid == DISTRACTOR_PID and split != "gallery":
                    raise ValueError(
                        f"{where}: pid 0 marks a distractor in the {fmt.name} layout and would be "
                        f"dropped from the {split!r} split when read; pass pid_offset=1 if your "
                        "identities are numbered from 0"
                    )
                if not 0 <= camid < _MAX_CAMERAS:
                    raise ValueError(f"{where}: camid must be in [0, {_MAX_CAMERAS - 1}], got {camid}")
                pixels = _to_uint8_hwc(item["image"], f"{where}['image']")
                frame += 1
                # Full-resolution chroma (4:4:4): the default 4:2:0 halves colour resolution, and
                # small synthetic persons are told apart by garment colours.
                Image.fromarray(pixels).save(
                    root / folder / _file_name(fmt, pid, camid, frame),
                    format="JPEG", quality=quality, subsampling=0,
                )
                if pid > DISTRACTOR_PID:
                    if schema is None:
                        width = torch.as_tensor(item.get("attributes", torch.zeros(0))).numel()
                        schema = _dataset_schema(dataset, width, split)
                        target = _target_schema(schema, fmt)
                        if annotations["train"] or annotations["test"]:
                            if target is not written:
                                raise ValueError(
                                    f"splits[{split!r}]: schema {schema.name!r} gives {target.name!r} "
                                    f"labels, the other splits {written.name!r}; use one schema"
                                )
                        written = target
                    labels = _labels(item, schema, fmt, written, where)
                    known = part.setdefault(pid, labels)
                    if not _same_labels(known, labels):
                        differ = ~((known == labels) | (torch.isnan(known) & torch.isnan(labels)))
                        changed = [written.names[j] for j in torch.nonzero(differ).flatten()]
                        raise ValueError(
                            f"{where}: identity {pid} has attributes that differ between its images "
                            f"({changed}); the {fmt.name} annotation stores one row per identity"
                        )
                bar.update(1)
    write_attribute_file(root / fmt.mat_name, fmt, annotations, written)
    return root


def write_market1501(
    splits: Mapping[str, Any],
    root: str | Path,
    quality: int = 95,
    progress: bool = True,
    *,
    pid_offset: int = 0,
    overwrite: bool = False,
) -> Path:
    """Save train/query/gallery datasets in Market-1501's exact layout, attributes included.

    Images are written as JPEG (without chroma subsampling) to ``root/bounding_box_train/``, ``root/query/`` and
    ``root/bounding_box_test/`` with names ``PPPP_cCsS_FFFFFF_NN.jpg`` (4-digit person id, 1-based
    camera, sequence 1, a frame number unique over the whole root, box 01; pid -1 is written as
    ``-1``). ``root/market_attribute.mat`` holds the struct ``market_attribute`` with ``test``
    (identities of query and gallery) and ``train`` structs: per attribute a ``1 x N`` row of 1/2
    values (2 = yes; 0 = not annotated, for labels that are NaN or outside the item's
    ``"attribute_mask"``), ``age`` (from the one-hot age attributes of
    :data:`~reidexplain.attributes.MARKET1501_AGE` when the labels have them, else a constant 3,
    adult) as in the real file, and ``image_index``, the 4-digit ids. Gallery images with pid 0 are
    distractors and get no annotation.

    Args:
        splits: ``{"train": ds, "query": ds, "gallery": ds}``; each dataset yields item dicts with
            ``"image"`` (float ``(3,H,W)`` in ``[0,1]`` or uint8), ``"pid"``, ``"camid"`` (0-based,
            at most 8), ``"attributes"`` (0/1, NaN = unknown) and optionally ``"attribute_mask"``. Labels are taken in ``ds.schema`` order and projected
            onto :data:`~reidexplain.attributes.MARKET1501` by name; without ``.schema`` a width
            of 26 is assumed to be Market-1501.
        root: Output folder (created if needed).
        quality: JPEG quality, 1-100.
        progress: Show a progress bar.
        pid_offset: Added to every non-negative pid; use 1 when identities are numbered from 0,
            because pid 0 means "distractor" on disk.
        overwrite: Replace images already present in the three folders instead of raising.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: Wrong keys, pid 0 outside the gallery, a pid or camera that does not fit the
            names, labels that are not 0/1, a schema lacking Market-1501 attributes, or an identity
            whose images disagree on its attributes.
        FileExistsError: The folders already hold images and ``overwrite`` is False.

    Examples:
        >>> import tempfile, torch
        >>> from reidexplain.attributes import MARKET1501
        >>> class Tiny(torch.utils.data.Dataset):
        ...     schema = MARKET1501
        ...     def __len__(self): return 2
        ...     def __getitem__(self, i):
        ...         return {"image": torch.rand(3, 16, 8), "pid": 7, "camid": i,
        ...                 "attributes": torch.ones(26)}
        >>> root = write_market1501({"train": Tiny(), "query": Tiny(), "gallery": Tiny()},
        ...                         tempfile.mkdtemp(), progress=False)
        >>> sorted(p.name for p in (root / "query").iterdir())
        ['0007_c1s1_000003_01.jpg', '0007_c2s1_000004_01.jpg']
    """
    return _write(MARKET_FORMAT, splits, root, quality, progress, pid_offset, overwrite)


def write_dukemtmc(
    splits: Mapping[str, Any],
    root: str | Path,
    quality: int = 95,
    progress: bool = True,
    *,
    pid_offset: int = 0,
    overwrite: bool = False,
) -> Path:
    """Save train/query/gallery datasets in DukeMTMC-reID's layout, attributes included.

    Same folders as :func:`write_market1501`; names ``PPPP_cC_fFFFFFFF.jpg`` (4-digit id, 1-based
    camera, a 7-digit frame number unique over the root) and ``root/duke_attribute.mat`` with the
    struct ``duke_attribute`` (``test`` and ``train``, one 1/2 row per attribute of
    :data:`~reidexplain.attributes.DUKEMTMC`, and ``image_index``; no age field).

    Args:
        splits: ``{"train": ds, "query": ds, "gallery": ds}`` of item dicts (see
            :func:`write_market1501`); labels are projected onto the 23 DukeMTMC attributes by name.
        root: Output folder (created if needed).
        quality: JPEG quality, 1-100.
        progress: Show a progress bar.
        pid_offset: Added to every non-negative pid (pid 0 means "distractor" on disk).
        overwrite: Replace images already present in the three folders instead of raising.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: As :func:`write_market1501`; a Market-1501 schema cannot be written as DukeMTMC
            (it has no ``boots``, ``shoes``, ``top``, ...).
        FileExistsError: The folders already hold images and ``overwrite`` is False.

    Examples:
        >>> import tempfile, torch
        >>> from reidexplain.attributes import DUKEMTMC
        >>> class Tiny(torch.utils.data.Dataset):
        ...     schema = DUKEMTMC
        ...     def __len__(self): return 1
        ...     def __getitem__(self, i):
        ...         return {"image": torch.rand(3, 16, 8), "pid": 12, "camid": 7,
        ...                 "attributes": torch.zeros(23)}
        >>> root = write_dukemtmc({"train": Tiny(), "query": Tiny(), "gallery": Tiny()},
        ...                       tempfile.mkdtemp(), progress=False)
        >>> [p.name for p in (root / "bounding_box_test").iterdir()]
        ['0012_c8_f0000003.jpg']
    """
    return _write(DUKE_FORMAT, splits, root, quality, progress, pid_offset, overwrite)
