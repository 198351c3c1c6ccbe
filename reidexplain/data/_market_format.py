"""The on-disk format of Market-1501 and DukeMTMC-reID: file names and the attribute ``.mat`` files.

Private helpers shared by the readers (:mod:`reidexplain.data.market1501`) and the writers
(:mod:`reidexplain.data._market_writer`). Both datasets use the same three folders and the same
``.mat`` struct layout; they differ in the file-name pattern, the attribute vocabulary and the name of
the annotation file (AMD-SPEC section 8).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import torch

from ..attributes import DUKEMTMC, MARKET1501, MARKET1501_AGE, MARKET_AGE_CLASSES, AttributeSchema

SPLIT_FOLDERS: dict[str, str] = {
    "train": "bounding_box_train",
    "query": "query",
    "gallery": "bounding_box_test",
}
"""Folder of each split under the dataset root."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
UNANNOTATED_CODES = (0.0,)
"""Values of the annotation files that mean "not annotated" (as does NaN): the label becomes unknown."""
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
        class_fields: Multi-class fields that an optional schema reads as one-hot attributes:
            ``(field, attribute names for the codes 1, 2, ...)`` (Market's ``age``).
        schemas: The schemas the reader can produce, by name (the first is the default).
    """

    name: str
    schema: AttributeSchema
    mat_name: str
    struct_name: str
    name_pattern: re.Pattern[str]
    name_example: str
    mat_field_order: tuple[str, ...]
    extra_fields: tuple[tuple[str, float], ...] = ()
    class_fields: tuple[tuple[str, tuple[str, ...]], ...] = ()
    schemas: tuple[AttributeSchema, ...] = ()

    def resolve_schema(self, spec: object) -> AttributeSchema:
        """The schema to read: ``True`` the default, a name or an :class:`AttributeSchema` of ``schemas``.

        Raises:
            ValueError: a schema this dataset's annotation cannot produce.
        """
        options = self.schemas or (self.schema,)
        if spec is True:
            return options[0]
        for schema in options:
            if spec is schema or spec == schema.name or spec == schema:
                return schema
        names = [s.name for s in options]
        shown = spec.name if isinstance(spec, AttributeSchema) else repr(spec)
        raise ValueError(
            f"attributes: the {self.name} annotation provides the schemas {names}, got {shown}; pass "
            "True for the default, one of these names, or False for no attributes"
        )

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
    # The real file keeps a 4-class age (1 young .. 4 old) that the default schema drops; the writer
    # stores 3 (adult) unless the labels carry the age attributes of MARKET1501_AGE.
    extra_fields=(("age", 3.0),),
    class_fields=(("age", MARKET_AGE_CLASSES),),
    schemas=(MARKET1501, MARKET1501_AGE),
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
    assert all(s.names[: len(_fmt.schema)] == _fmt.schema.names for s in _fmt.schemas), _fmt.name


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


def _pid_of(value: object, where: str, position: int) -> int:
    # The real files hold 4-digit strings ('0002'); numbers and padded strings are accepted too.
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        number = float("nan")
    if not number == number or number != int(number):
        raise ValueError(f"{where}.image_index[{position}]: expected a person id like '0002', got {value!r}")
    return int(number)


def _codes(struct: object, field: str, count: int, where: str) -> np.ndarray:
    values = np.atleast_1d(np.asarray(getattr(struct, field), dtype=np.float64))
    if values.shape != (count,):
        raise ValueError(
            f"{where}.{field}: expected {count} values (one per image_index entry), got shape {values.shape}"
        )
    return values


def read_attribute_file(
    path: Path, fmt: DiskFormat, schema: AttributeSchema | None = None
) -> dict[str, dict[int, torch.Tensor]]:
    """Read an annotation file into ``{"train"|"test": {pid: (M,) float labels}}``, NaN = unknown.

    The labels come out in the order of ``schema`` (default ``fmt.schema``); the file's 1/2 coding
    (2 = yes) becomes 0/1. Entries the file leaves unannotated (0, or NaN) become NaN, the unknown-label
    code; fields the schema does not use (Market's ``age`` in the default schema) are dropped. A
    multi-class field of ``fmt.class_fields`` (``age``, codes 1..4) becomes one-hot attributes when the
    schema names them, all four NaN where the code is 0.

    Raises:
        ValueError: Missing struct or fields, unequal lengths, a malformed ``image_index``, an identity
            listed twice, or values other than 1, 2 and the unannotated 0 (other codes than 0..K for a
            class field).
    """
    schema = fmt.schema if schema is None else schema
    class_of = {name: (fieldname, k) for fieldname, names in fmt.class_fields
                for k, name in enumerate(names)}
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
        pids = [_pid_of(v, part_where, i) for i, v in enumerate(index)]
        repeated = sorted({p for p in pids if pids.count(p) > 1})
        if repeated:
            raise ValueError(f"{part_where}.image_index: identities listed more than once: {repeated[:5]}")
        fields = {class_of[a][0] if a in class_of else a for a in schema.names}
        missing = sorted(f for f in fields if f not in getattr(struct, "_fieldnames", ()))
        if missing:
            raise ValueError(f"{part_where}: the attributes {missing} of {fmt.name} are missing")
        columns = []
        class_codes: dict[str, np.ndarray] = {}
        for attr in schema.names:
            if attr in class_of:
                fieldname, k = class_of[attr]
                if fieldname not in class_codes:
                    values = _codes(struct, fieldname, len(pids), part_where)
                    classes = len(dict(fmt.class_fields)[fieldname])
                    allowed = set(range(1, classes + 1)) | set(UNANNOTATED_CODES)
                    bad = sorted(set(np.unique(values[~np.isnan(values)]).tolist()) - allowed)
                    if bad:
                        raise ValueError(
                            f"{part_where}.{fieldname}: expected class codes 1..{classes} (0 = not "
                            f"annotated), found values {bad[:5]}"
                        )
                    class_codes[fieldname] = values
                values = class_codes[fieldname]
                column = np.where(values == k + 1, 1.0, 0.0)
            else:
                values = _codes(struct, attr, len(pids), part_where)
                bad = sorted(set(np.unique(values[~np.isnan(values)]).tolist()) - {1.0, 2.0, *UNANNOTATED_CODES})
                if bad:
                    raise ValueError(
                        f"{part_where}.{attr}: expected the 1/2 coding (2 = yes; 0 = not annotated), found "
                        f"values {bad[:5]}"
                    )
                column = np.where(values == 2.0, 1.0, 0.0)
            unknown = np.isnan(values) | np.isin(values, UNANNOTATED_CODES)
            columns.append(np.where(unknown, np.nan, column))
        table = torch.from_numpy(np.stack(columns, axis=1).astype(np.float32)) if pids else \
            torch.zeros(0, len(schema))
        out[part] = {pid: table[i] for i, pid in enumerate(pids)}
    return out


def write_attribute_file(
    path: Path, fmt: DiskFormat, parts: Mapping[str, Mapping[int, torch.Tensor]],
    schema: AttributeSchema | None = None,
) -> None:
    """Write ``{"train"|"test": {pid: (M,) labels in the order of schema}}`` in the real file's layout.

    Each part becomes a struct with one ``1 x N`` double field of 1/2 values per attribute (in the real
    file's field order, extra fields such as ``age`` first), and ``image_index``, a ``1 x N`` cell of
    4-digit person-id strings, identities sorted by id. ``test`` precedes ``train`` as in the real file.
    NaN labels (unknown) are written as 0, the files' "not annotated". With a ``schema`` naming the
    one-hot attributes of a class field (``MARKET1501_AGE``) the field holds their class code (0 where
    unknown); otherwise it holds the constant of ``fmt.extra_fields``.
    """
    schema = fmt.schema if schema is None else schema
    top: dict[str, dict[str, np.ndarray]] = {}
    for part in ("test", "train"):
        labels = parts.get(part, {})
        pids = sorted(labels)
        struct: dict[str, np.ndarray] = {}
        for extra, value in fmt.extra_fields:
            row = [value] * len(pids)
            classes = dict(fmt.class_fields).get(extra, ())
            if classes and all(c in schema for c in classes):
                cols = [schema.index(c) for c in classes]
                row = []
                for p in pids:
                    one_hot = labels[p][cols]
                    known = not bool(torch.isnan(one_hot).any()) and float(one_hot.sum()) == 1.0
                    row.append(float(int(torch.argmax(one_hot)) + 1) if known else 0.0)
            struct[extra] = np.asarray(row, dtype=np.float64).reshape(1, len(pids))
        for attr in fmt.mat_field_order:
            j = schema.index(attr)
            row = [0.0 if math.isnan(float(labels[p][j])) else 2.0 if float(labels[p][j]) > 0.5 else 1.0
                   for p in pids]
            struct[attr] = np.asarray(row, dtype=np.float64).reshape(1, len(pids))
        index = np.empty((1, len(pids)), dtype=object)
        for i, pid in enumerate(pids):
            index[0, i] = f"{pid:04d}"
        struct["image_index"] = index
        top[part] = struct
    scipy.io.savemat(str(path), {fmt.struct_name: top})
