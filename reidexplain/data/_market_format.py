"""The on-disk format of Market-1501 and DukeMTMC-reID: file names and the attribute ``.mat`` files.

Private helpers shared by the readers (:mod:`reidexplain.data.market1501`) and the writers
(:mod:`reidexplain.data._market_writer`). Both datasets use the same three folders and the same
``.mat`` struct layout; they differ in the file-name pattern, the attribute vocabulary and the name of
the annotation file (AMD-SPEC section 8).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import torch

from ..attributes import DUKEMTMC, MARKET1501, AttributeSchema

SPLIT_FOLDERS: dict[str, str] = {
    "train": "bounding_box_train",
    "query": "query",
    "gallery": "bounding_box_test",
}
"""Folder of each split under the dataset root."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
JUNK_PID = -1
DISTRACTOR_PID = 0


@dataclass(frozen=True)
class DiskFormat:
    """Everything that differs between the Market-1501 and DukeMTMC-reID layouts.

    Args:
        name: Readable dataset name used in messages.
        schema: Attribute vocabulary; the reader returns labels in this order.
        mat_name: File name of the attribute annotation.
        struct_name: Name of the top-level struct inside it.
        name_pattern: Regular expression for image names with groups ``pid`` and ``cam``.
        name_example: An example file name, shown in error messages.
        mat_field_order: Order of the attribute fields in the real annotation file (cosmetic: the
            reader matches fields by name).
        extra_fields: Fields of the real file the schema drops, with the value the writer stores.
    """

    name: str
    schema: AttributeSchema
    mat_name: str
    struct_name: str
    name_pattern: re.Pattern[str]
    name_example: str
    mat_field_order: tuple[str, ...]
    extra_fields: tuple[tuple[str, float], ...] = ()

    def parse_name(self, file_name: str) -> tuple[int, int] | None:
        """``(pid, camid)`` with a 0-based camera, or ``None`` if the name does not fit the pattern."""
        match = self.name_pattern.fullmatch(file_name)
        if match is None:
            return None
        pid, cam = int(match["pid"]), int(match["cam"])
        if cam < 1 or pid < JUNK_PID:
            return None
        return pid, cam - 1

    def layout_help(self, root: Path) -> str:
        folders = ", ".join(f"{root / f}/ ({s})" for s, f in SPLIT_FOLDERS.items())
        return (
            f"expected the {self.name} layout: {folders}, with images named like "
            f"{self.name_example!r}"
        )


MARKET_FORMAT = DiskFormat(
    name="Market-1501",
    schema=MARKET1501,
    mat_name="market_attribute.mat",
    struct_name="market_attribute",
    name_pattern=re.compile(
        r"(?P<pid>-?\d+)_c(?P<cam>\d+)s(?P<seq>\d+)_(?P<frame>\d+)_(?P<box>\d+)\.(?:jpg|jpeg|png)",
        re.IGNORECASE,
    ),
    name_example="0002_c1s1_000451_03.jpg",
    mat_field_order=(
        "backpack", "bag", "handbag", "downblack", "downblue", "downbrown", "downgray", "downgreen",
        "downpink", "downpurple", "downwhite", "downyellow", "upblack", "upblue", "upgreen", "upgray",
        "uppurple", "upred", "upwhite", "upyellow", "clothes", "down", "up", "hair", "hat", "gender",
    ),
    # The real file keeps a 4-class age (1 young .. 4 old) that the schema drops; 3 = adult.
    extra_fields=(("age", 3.0),),
)

DUKE_FORMAT = DiskFormat(
    name="DukeMTMC-reID",
    schema=DUKEMTMC,
    mat_name="duke_attribute.mat",
    struct_name="duke_attribute",
    name_pattern=re.compile(
        r"(?P<pid>-?\d+)_c(?P<cam>\d+)_f(?P<frame>\d+)\.(?:jpg|jpeg|png)", re.IGNORECASE
    ),
    name_example="0001_c2_f0046182.jpg",
    mat_field_order=(
        "backpack", "bag", "handbag", "boots", "gender", "hat", "shoes", "top", "downblack",
        "downwhite", "downred", "downgray", "downblue", "downgreen", "downbrown", "upblack",
        "upwhite", "upred", "uppurple", "upgray", "upblue", "upgreen", "upbrown",
    ),
)

for _fmt in (MARKET_FORMAT, DUKE_FORMAT):
    assert sorted(_fmt.mat_field_order) == sorted(_fmt.schema.names), _fmt.name


def find_attribute_file(root: Path, fmt: DiskFormat, attribute_file: str | Path | None) -> Path:
    """Locate the annotation: the explicit path, else ``root/<mat>``, else ``root/attribute/<mat>``.

    Raises:
        FileNotFoundError: No candidate exists; the message lists the paths tried.
    """
    if attribute_file is not None:
        path = Path(attribute_file)
        if not path.is_file():
            raise FileNotFoundError(f"attribute_file: {path} does not exist or is not a file")
        return path
    candidates = [root / fmt.mat_name, root / "attribute" / fmt.mat_name]
    for path in candidates:
        if path.is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"{fmt.name} attribute annotation not found (tried {tried}); pass `attribute_file=` with its "
        f"path, or `attributes=False` to read the images without attributes"
    )


def _field(struct: object, name: str, where: str) -> object:
    names = getattr(struct, "_fieldnames", None)
    if names is None or name not in names:
        raise ValueError(f"{where}: expected a struct with field {name!r}, found fields {names}")
    return getattr(struct, name)


def read_attribute_file(path: Path, fmt: DiskFormat) -> dict[str, dict[int, torch.Tensor]]:
    """Read an annotation file into ``{"train"|"test": {pid: (M,) float 0/1 labels}}``.

    The labels come out in the schema order; the file's 1/2 coding (2 = yes) becomes 0/1 and fields
    the schema does not use (Market's ``age``) are dropped.

    Raises:
        ValueError: Missing struct or fields, unequal lengths, or values other than 1 and 2.
    """
    where = f"{path}"
    try:
        content = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as err:  # scipy raises several unrelated types for a corrupt file
        raise ValueError(f"{where}: cannot read the .mat file ({err})") from err
    if fmt.struct_name not in content:
        found = [k for k in content if not k.startswith("__")]
        raise ValueError(f"{where}: expected a struct {fmt.struct_name!r}, found variables {found}")
    top = content[fmt.struct_name]
    out: dict[str, dict[int, torch.Tensor]] = {}
    for part in ("train", "test"):
        struct = _field(top, part, f"{where}: {fmt.struct_name}")
        part_where = f"{where}: {fmt.struct_name}.{part}"
        index = np.atleast_1d(_field(struct, "image_index", part_where))
        pids = [int(str(v).strip()) for v in index]
        missing = [a for a in fmt.schema.names if a not in getattr(struct, "_fieldnames", ())]
        if missing:
            raise ValueError(f"{part_where}: the attributes {missing} of {fmt.name} are missing")
        columns = []
        for attr in fmt.schema.names:
            values = np.atleast_1d(np.asarray(getattr(struct, attr), dtype=np.float64))
            if values.shape != (len(pids),):
                raise ValueError(
                    f"{part_where}.{attr}: expected {len(pids)} values (one per image_index entry), "
                    f"got shape {values.shape}"
                )
            bad = sorted(set(np.unique(values).tolist()) - {1.0, 2.0})
            if bad:
                raise ValueError(
                    f"{part_where}.{attr}: expected the 1/2 coding (2 = yes), found values {bad[:5]}"
                )
            columns.append(values == 2.0)
        table = torch.from_numpy(np.stack(columns, axis=1).astype(np.float32)) if pids else \
            torch.zeros(0, len(fmt.schema))
        out[part] = {pid: table[i] for i, pid in enumerate(pids)}
    return out


def write_attribute_file(
    path: Path, fmt: DiskFormat, parts: Mapping[str, Mapping[int, torch.Tensor]]
) -> None:
    """Write ``{"train"|"test": {pid: (M,) 0/1 labels in schema order}}`` in the real file's layout.

    Each part becomes a struct with one ``1 x N`` double field of 1/2 values per attribute (in the real
    file's field order, extra fields such as ``age`` first), and ``image_index``, a ``1 x N`` cell of
    4-digit person-id strings, identities sorted by id. ``test`` precedes ``train`` as in the real file.
    """
    top: dict[str, dict[str, np.ndarray]] = {}
    for part in ("test", "train"):
        labels = parts.get(part, {})
        pids = sorted(labels)
        struct: dict[str, np.ndarray] = {}
        for extra, value in fmt.extra_fields:
            struct[extra] = np.full((1, len(pids)), value, dtype=np.float64)
        for attr in fmt.mat_field_order:
            j = fmt.schema.index(attr)
            row = [2.0 if float(labels[p][j]) > 0.5 else 1.0 for p in pids]
            struct[attr] = np.asarray(row, dtype=np.float64).reshape(1, len(pids))
        index = np.empty((1, len(pids)), dtype=object)
        for i, pid in enumerate(pids):
            index[0, i] = f"{pid:04d}"
        struct["image_index"] = index
        top[part] = struct
    scipy.io.savemat(str(path), {fmt.struct_name: top})
