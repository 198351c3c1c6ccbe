"""Users' own data: a folder of person images plus a CSV of attribute labels.

The CSV has a header row and one row per image file (a ``file`` column with the file name, or the path
relative to ``root``) or one row per person (a ``pid`` column); every other column is an attribute
unless ``attributes=`` names the attribute columns. Cells hold ``0``/``1`` (also ``yes``/``no``,
``true``/``false``); an empty cell or one of ``unknown_values`` is an unknown label. Person id and
camera come from ``pid``/``camid`` columns of a per-file CSV when it has them, else from the file name
with :data:`DEFAULT_NAME_PATTERN` (Market-style ``0002_c1...``: the number before ``_c`` is the person,
the number after it the 1-based camera).

Items follow the same convention as :class:`~reidexplain.data.Market1501`:
``{"image", "pid", "camid", "path", "attributes" (0 where unknown), "attribute_mask" (True = known),
"has_attributes"}``.

Examples:
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("0001_c1_a.png", "0001_c2_b.png", "0002_c1_c.png"):
    ...     Image.new("RGB", (8, 16)).save(root / name)
    >>> _ = (root / "labels.csv").write_text("pid,hat,bag\\n1,1,0\\n2,0,\\n")
    >>> data = ImageFolderCSV(root, root / "labels.csv")
    >>> len(data), data.schema.names, data.pids, data.camids
    (3, ('hat', 'bag'), [1, 1, 2], [0, 1, 0])
    >>> data[2]["attributes"].tolist(), data[2]["attribute_mask"].tolist(), data.num_unknown_labels
    ([0.0, 0.0], [True, False], 1)
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..attributes import AttributeSchema
from ._market_format import IMAGE_SUFFIXES
from .market1501 import ImageSize, _check_image_size, load_rgb

__all__ = ["ImageFolderCSV", "DEFAULT_NAME_PATTERN"]

log = logging.getLogger(__name__)

DEFAULT_NAME_PATTERN = r"(?P<pid>\d+)_c(?P<camid>\d+)"
"""File-name pattern (matched at the start of the name): the person id, ``_c``, the 1-based camera."""

_TRUE = {"1", "1.0", "yes", "true", "y", "t"}
_FALSE = {"0", "0.0", "no", "false", "n", "f"}


def _as_pattern(pattern: str | re.Pattern[str]) -> re.Pattern[str]:
    compiled = re.compile(pattern) if isinstance(pattern, str) else pattern
    if not isinstance(compiled, re.Pattern) or "pid" not in compiled.groupindex:
        raise ValueError(f"name_pattern: expected a regular expression with a group 'pid', got {pattern!r}")
    return compiled


class ImageFolderCSV(Dataset):
    """Images under ``root`` with attribute labels from a CSV (per file or per person).

    Args:
        root: Folder of the images (searched recursively for ``.jpg``, ``.jpeg``, ``.png``).
        csv_path: The CSV file, with a header row.
        attributes: Names of the attribute columns, in the order wanted; default: every column other
            than the key and id columns, in the file's order.
        schema: An :class:`~reidexplain.attributes.AttributeSchema` to use instead of one made from the
            column names (its names must be columns of the CSV; they are read in its order).
        key: ``"file"`` (one row per image) or ``"pid"`` (one row per person); default: ``"file"`` if
            the CSV has a ``file_column``, else ``"pid"``.
        file_column: Name of the file-name column.
        pid_column: Name of the person-id column (per-file CSVs may have one; it then overrides the
            file name).
        camid_column: Name of the camera column of a per-file CSV (0-based values); without it cameras
            come from the file name.
        name_pattern: Regular expression matched at the start of each file name, with a group ``pid``
            and optionally ``camid``; images whose name does not match raise (or are skipped, see
            ``unmatched``) when the id or camera is needed from the name.
        first_camera: Number of the first camera in the file names (``c1`` means camid 0).
        unknown_values: Cell values (besides the empty cell) meaning "unknown", compared after
            stripping and ignoring case.
        images_without_rows: ``"error"`` (default), ``"unknown"`` (keep the image, every label
            unknown, ``has_attributes`` False) or ``"skip"`` (drop it).
        unmatched: ``"error"`` (default) or ``"skip"`` for images whose names do not fit
            ``name_pattern`` when the ids come from the names.
        transform: Called on each ``(3,H,W)`` float image after loading and resizing.
        image_size: ``(H, W)`` (or one int) to resize to; ``None`` keeps the original size.

    Attributes:
        schema: The attribute schema (names = the attribute columns).
        paths: Image paths, sorted.
        pids: Person id per image.
        camids: 0-based camera per image (0 when neither a column nor the pattern gives one).
        attributes: ``(N, M)`` float 0/1 labels, 0 where unknown.
        attribute_mask: ``(N, M)`` bool, True where the label is known.
        has_attributes: ``(N,)`` bool, False for images kept without a row.
        num_unknown_labels: Number of unknown labels.

    Raises:
        FileNotFoundError: ``root`` or ``csv_path`` is missing.
        ValueError: a CSV without a header or key column, a duplicate or empty key, a row naming a file
            or person with no image (the row's line is given), an image without a row, a file name
            that does not fit the pattern, a cell that is neither 0/1 nor unknown, an attribute
            column that does not exist, or no images at all.

    Examples:
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> Image.new("RGB", (8, 16)).save(root / "a.png")
        >>> _ = (root / "l.csv").write_text("file,pid,camid,hat\\na.png,7,2,?\\n")
        >>> item = ImageFolderCSV(root, root / "l.csv")[0]
        >>> item["pid"], item["camid"], item["attribute_mask"].tolist(), tuple(item["image"].shape)
        (7, 2, [False], (3, 16, 8))
    """

    def __init__(
        self,
        root: str | Path,
        csv_path: str | Path,
        attributes: Sequence[str] | None = None,
        *,
        schema: AttributeSchema | None = None,
        key: str | None = None,
        file_column: str = "file",
        pid_column: str = "pid",
        camid_column: str = "camid",
        name_pattern: str | re.Pattern[str] = DEFAULT_NAME_PATTERN,
        first_camera: int = 1,
        unknown_values: Collection[str] = ("na", "nan", "?", "-", "unknown"),
        images_without_rows: str = "error",
        unmatched: str = "error",
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        image_size: ImageSize | None = None,
    ) -> None:
        self.root = Path(root)
        self.csv_path = Path(csv_path)
        if not self.root.is_dir():
            raise FileNotFoundError(f"root: {self.root} is not a directory")
        if not self.csv_path.is_file():
            raise FileNotFoundError(f"csv_path: {self.csv_path} does not exist or is not a file")
        if images_without_rows not in ("error", "unknown", "skip"):
            raise ValueError(
                f"images_without_rows: expected 'error', 'unknown' or 'skip', got {images_without_rows!r}"
            )
        if unmatched not in ("error", "skip"):
            raise ValueError(f"unmatched: expected 'error' or 'skip', got {unmatched!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform: expected a callable or None, got {type(transform).__name__}")
        self.transform = transform
        self.image_size = _check_image_size(image_size)
        pattern = _as_pattern(name_pattern)
        unknown = {str(v).strip().lower() for v in unknown_values} | {""}

        header, rows = self._read_csv()
        if key is None:
            key = "file" if file_column in header else "pid"
        if key not in ("file", "pid"):
            raise ValueError(f"key: expected 'file' or 'pid', got {key!r}")
        key_column = file_column if key == "file" else pid_column
        if key_column not in header:
            raise ValueError(
                f"{self.csv_path}: expected a column {key_column!r} (key={key!r}); the header is {header}"
            )
        id_columns = {key_column, pid_column, camid_column} if key == "file" else {key_column}
        names = self._attribute_names(header, attributes, schema, id_columns)
        self.schema: AttributeSchema = schema if schema is not None else AttributeSchema.from_names(names)

        images = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ValueError(f"root: no images ({', '.join(IMAGE_SUFFIXES)}) found under {self.root}")
        table: dict[Any, tuple[int, list[float], list[bool], dict[str, str]]] = {}
        for line, row in rows:
            cell = row.get(key_column, "").strip()
            if not cell:
                raise ValueError(f"{self.csv_path}, line {line}: empty {key_column!r}")
            row_key: Any = cell.replace("\\", "/") if key == "file" else self._int(cell, key_column, line)
            if row_key in table:
                raise ValueError(
                    f"{self.csv_path}, line {line}: {key_column} {cell!r} repeats line {table[row_key][0]}"
                )
            values, known = [], []
            for name in names:
                raw = (row.get(name) or "").strip()
                low = raw.lower()
                if low in unknown:
                    values.append(0.0)
                    known.append(False)
                elif low in _TRUE or low in _FALSE:
                    values.append(1.0 if low in _TRUE else 0.0)
                    known.append(True)
                else:
                    raise ValueError(
                        f"{self.csv_path}, line {line}, column {name!r}: expected 0/1 (or an unknown "
                        f"value: empty, {sorted(unknown - {''})}), got {raw!r}"
                    )
            table[row_key] = (line, values, known, row)

        self.paths: list[str] = []
        self.pids: list[int] = []
        self.camids: list[int] = []
        labels: list[list[float]] = []
        masks: list[list[bool]] = []
        annotated: list[bool] = []
        used: set[Any] = set()
        without_rows: list[str] = []
        m = len(names)
        for path in images:
            rel = path.relative_to(self.root).as_posix()
            pid = camid = row_key = None
            if key == "file":
                row_key = rel if rel in table else path.name if path.name in table else None
                if row_key is not None:
                    row = table[row_key][3]
                    if pid_column in header and (row.get(pid_column) or "").strip():
                        pid = self._int(row[pid_column], pid_column, table[row_key][0])
                    if camid_column in header and (row.get(camid_column) or "").strip():
                        camid = self._int(row[camid_column], camid_column, table[row_key][0])
            if pid is None or camid is None:
                match = pattern.match(path.name)
                if match is None:
                    if key == "file" and pid is not None:
                        camid = 0
                    elif unmatched == "skip":
                        if key == "file" and row_key is not None:
                            used.add(row_key)  # skipped on purpose: its row is not an orphan
                        continue
                    else:
                        raise ValueError(
                            f"{rel}: the file name does not match name_pattern {pattern.pattern!r} (needed "
                            "for the person id/camera); pass name_pattern=, pid/camid columns, or "
                            "unmatched='skip'"
                        )
                else:
                    pid = int(match["pid"]) if pid is None else pid
                    if camid is None:
                        camid = int(match["camid"]) - first_camera if "camid" in pattern.groupindex else 0
            if key == "pid":
                row_key = pid if pid in table else None
            if row_key is None:
                if images_without_rows == "skip":
                    continue
                without_rows.append(rel)
                labels.append([0.0] * m)
                masks.append([False] * m)
                annotated.append(False)
            else:
                used.add(row_key)
                labels.append(table[row_key][1])
                masks.append(table[row_key][2])
                annotated.append(True)
            self.paths.append(str(path))
            self.pids.append(int(pid))  # type: ignore[arg-type]
            self.camids.append(int(camid))  # type: ignore[arg-type]
        if without_rows and images_without_rows == "error":
            what = "file" if key == "file" else "person id"
            raise ValueError(
                f"{len(without_rows)} image(s) have no row in {self.csv_path} (by {what}), first: "
                f"{without_rows[0]!r}; pass images_without_rows='unknown' or 'skip' to keep or drop them"
            )
        orphans = [k for k in table if k not in used]
        if orphans:
            first = min(orphans, key=lambda k: table[k][0])
            raise ValueError(
                f"{self.csv_path}, line {table[first][0]}: {key_column} {first!r} matches no image under "
                f"{self.root} ({len(orphans)} such row(s))"
            )
        if not self.paths:
            raise ValueError(f"root: every image under {self.root} was skipped")
        self.attributes: torch.Tensor = torch.tensor(labels, dtype=torch.float32).reshape(-1, m)
        self.attribute_mask: torch.Tensor = torch.tensor(masks, dtype=torch.bool).reshape(-1, m)
        self.has_attributes: torch.Tensor = torch.tensor(annotated, dtype=torch.bool)
        if self.num_unknown_labels:
            log.warning("%s: %d of %d labels are unknown (%d image(s) without a row); items carry "
                        "attribute_mask", self.csv_path.name, self.num_unknown_labels, self.attribute_mask.numel(),
                        len(without_rows))

    def _read_csv(self) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
        with open(self.csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames:
                raise ValueError(f"{self.csv_path}: empty file, expected a header row")
            header = [h.strip() for h in reader.fieldnames]
            if len(set(header)) != len(header):
                raise ValueError(f"{self.csv_path}: repeated column names in the header {header}")
            reader.fieldnames = header
            rows = []
            for row in reader:
                if None in row:
                    raise ValueError(f"{self.csv_path}, line {reader.line_num}: more cells than columns")
                if any((v or "").strip() for v in row.values()):
                    rows.append((reader.line_num, row))
        return header, rows

    def _attribute_names(self, header: list[str], attributes: Sequence[str] | None,
                         schema: AttributeSchema | None, id_columns: set[str]) -> list[str]:
        if schema is not None and attributes is not None:
            raise ValueError("give `attributes` or `schema`, not both")
        wanted = list(schema.names) if schema is not None else (
            [str(a) for a in attributes] if attributes is not None else None)
        if wanted is None:
            names = [h for h in header if h not in id_columns]
            if not names:
                raise ValueError(f"{self.csv_path}: no attribute columns besides {sorted(id_columns)}")
            return names
        missing = [a for a in wanted if a not in header]
        if missing:
            raise ValueError(f"{self.csv_path}: attribute columns {missing} are not in the header {header}")
        return wanted

    def _int(self, cell: str, column: str, line: int) -> int:
        try:
            return int(cell.strip())
        except ValueError:
            raise ValueError(f"{self.csv_path}, line {line}, column {column!r}: expected an integer, "
                             f"got {cell!r}") from None

    @property
    def num_unknown_labels(self) -> int:
        """Number of unknown labels (``attribute_mask`` False)."""
        return int((~self.attribute_mask).sum())

    @property
    def num_identities(self) -> int:
        """Number of distinct person ids."""
        return len(set(self.pids))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        index %= len(self)
        image = load_rgb(self.paths[index], self.image_size)
        if self.transform is not None:
            image = self.transform(image)
        return {
            "image": image,
            "pid": self.pids[index],
            "camid": self.camids[index],
            "path": self.paths[index],
            "attributes": self.attributes[index],
            "attribute_mask": self.attribute_mask[index],
            "has_attributes": self.has_attributes[index],
        }

    def __repr__(self) -> str:
        return (f"ImageFolderCSV(root={str(self.root)!r}, images={len(self)}, identities={self.num_identities}, "
                f"attributes={len(self.schema)}, unknown_labels={self.num_unknown_labels})")
