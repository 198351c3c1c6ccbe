"""ImageFolderCSV: users' own images and CSV labels, per file or per person, with clear errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import reidexplain
from reidexplain._batch import iter_batches
from reidexplain.attributes import AttributeSchema
from reidexplain.data import ImageFolderCSV


def _images(root, names, size=(16, 8)):
    rng = np.random.default_rng(len(names))
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)
    return root


def _csv(path, text):
    path.write_text(text)
    return path


def test_per_file_csv_with_unknowns(tmp_path, caplog):
    _images(tmp_path, ["0001_c1_x.png", "0001_c3_y.png", "sub/0002_c2_z.png"])
    rows = {"0001_c1_x.png": ("1", "0", "yes"), "0001_c3_y.png": ("", "1", "NA"), "sub/0002_c2_z.png": ("0", "?", "false")}
    text = "file,hat,bag,female\n" + "".join(f"{k},{','.join(v)}\n" for k, v in rows.items())
    with caplog.at_level(logging.WARNING):
        ds = ImageFolderCSV(tmp_path, _csv(tmp_path / "labels.csv", text))
    assert ds.schema.names == ("hat", "bag", "female") and len(ds) == 3
    assert ds.pids == [1, 1, 2] and ds.camids == [0, 2, 1]
    for i, path in enumerate(ds.paths):
        rel = path[len(str(tmp_path)) + 1:].replace("\\", "/")
        for j, cell in enumerate(rows[rel]):
            known = cell.lower() not in ("", "na", "?")
            assert ds.attribute_mask[i, j].item() == known
            assert ds.attributes[i, j].item() == (1.0 if cell.lower() in ("1", "yes") else 0.0)
    assert ds.num_unknown_labels == 3 and "3 of 9 labels are unknown" in caplog.text
    item = ds[0]
    assert set(item) == {"image", "pid", "camid", "path", "attributes", "attribute_mask", "has_attributes"}
    assert item["image"].shape == (3, 16, 8) and item["image"].dtype == torch.float32
    batches = list(iter_batches(DataLoader(ds, batch_size=2)))
    assert torch.equal(torch.cat([b.known for b in batches]), ds.attribute_mask)


def test_per_person_csv_columns_schema_and_resize(tmp_path):
    _images(tmp_path, ["0005_c1_a.jpg", "0005_c2_b.jpg", "0009_c1_c.jpg"], size=(20, 10))
    csv_path = _csv(tmp_path / "people.csv", "pid,hat,bag,note\n5,1,0,0\n9,0,1,1\n")
    ds = ImageFolderCSV(tmp_path, csv_path, attributes=["bag", "hat"], image_size=(16, 8),
                        transform=lambda x: 1 - x)
    assert ds.schema.names == ("bag", "hat") and ds.attributes.tolist() == [[0, 1], [0, 1], [1, 0]]
    assert ds.attribute_mask.all() and ds.num_unknown_labels == 0 and ds.num_identities == 2
    assert ds[1]["image"].shape == (3, 16, 8)
    schema = AttributeSchema.from_names(["hat", "note"], name="mine")
    assert ImageFolderCSV(tmp_path, csv_path, schema=schema).schema is schema


def test_given_id_columns_and_custom_pattern(tmp_path):
    _images(tmp_path, ["cam4-person12-001.png", "anything.png"])
    csv_path = _csv(tmp_path / "l.csv", "file,pid,camid,hat\ncam4-person12-001.png,,,1\nanything.png,3,1,0\n")
    ds = ImageFolderCSV(tmp_path, csv_path, name_pattern=r"cam(?P<camid>\d+)-person(?P<pid>\d+)")
    by_name = {p.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]: (pid, cam) for p, pid, cam in zip(ds.paths, ds.pids, ds.camids,
                                                                                          strict=True)}
    assert by_name == {"cam4-person12-001.png": (12, 3), "anything.png": (3, 1)}


def test_images_without_rows(tmp_path):
    _images(tmp_path, ["0001_c1_a.png", "0002_c1_b.png"])
    csv_path = _csv(tmp_path / "l.csv", "file,hat\n0001_c1_a.png,1\n")
    with pytest.raises(ValueError, match=r"1 image\(s\) have no row.*'0002_c1_b.png'.*images_without_rows"):
        ImageFolderCSV(tmp_path, csv_path)
    kept = ImageFolderCSV(tmp_path, csv_path, images_without_rows="unknown")
    assert kept.has_attributes.tolist() == [True, False] and kept.attribute_mask.tolist() == [[True], [False]]
    assert len(ImageFolderCSV(tmp_path, csv_path, images_without_rows="skip")) == 1


def test_bad_csvs_name_the_row_and_the_file(tmp_path):
    _images(tmp_path, ["0001_c1_a.png", "0002_c1_b.png", "junk.png"])

    def make(text, **kwargs):
        return ImageFolderCSV(tmp_path, _csv(tmp_path / "bad.csv", text), **kwargs)

    ok = "0001_c1_a.png,1\n0002_c1_b.png,0\njunk.png,1\n"
    with pytest.raises(ValueError, match=r"line 3, column 'hat': expected 0/1.*got '2'"):
        make("file,hat\n0001_c1_a.png,1\n0002_c1_b.png,2\njunk.png,0\n")
    with pytest.raises(ValueError, match=r"line 5: file 'missing.png' matches no image"):
        make("file,hat\n" + ok + "missing.png,1\n", unmatched="skip")
    with pytest.raises(ValueError, match=r"line 3: file '0001_c1_a.png' repeats line 2"):
        make("file,hat\n0001_c1_a.png,1\n0001_c1_a.png,0\n")
    with pytest.raises(ValueError, match=r"junk.png: the file name does not match name_pattern"):
        make("file,hat\n" + ok)
    assert len(make("file,hat\n" + ok, unmatched="skip")) == 2
    with pytest.raises(ValueError, match=r"line 2, column 'pid': expected an integer, got 'x'"):
        make("pid,hat\nx,1\n", unmatched="skip")
    with pytest.raises(ValueError, match=r"line 3: pid 7 matches no image"):
        make("pid,hat\n1,1\n7,0\n2,1\n", unmatched="skip")
    with pytest.raises(ValueError, match=r"columns \['boots'\] are not in the header"):
        make("file,hat\n" + ok, attributes=["boots"])
    with pytest.raises(ValueError, match="expected a column 'file'"):
        make("pid,hat\n1,1\n", key="file")
    with pytest.raises(ValueError, match="empty file"):
        make("")
    with pytest.raises(ValueError, match="no attribute columns"):
        make("file\n0001_c1_a.png\n")
    with pytest.raises(ValueError, match="more cells than columns"):
        make("file,hat\n0001_c1_a.png,1,1\n")
    with pytest.raises(FileNotFoundError, match="csv_path"):
        ImageFolderCSV(tmp_path, tmp_path / "none.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        ImageFolderCSV(tmp_path / "empty", _csv(tmp_path / "bad.csv", "file,hat\n" + ok))
    with pytest.raises(ValueError, match="group 'pid'"):
        make("file,hat\n" + ok, name_pattern=r"(\d+)")


def test_exported_from_the_package():
    assert reidexplain.ImageFolderCSV is ImageFolderCSV
