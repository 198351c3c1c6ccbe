"""The readers on annotation files with the distributed files' quirks; every label checked against the file.

The files are written here with scipy in the real layout (struct of ``test``/``train`` structs, one
``1 x N`` double row per attribute, ``image_index`` a cell of 4-digit strings), with the quirks of the
copies users download: values 0 (not annotated) instead of the 1/2 coding for some identities or some
entries, identities in the image folders that the annotation does not list, annotated identities
without images, a part with a single identity, ids stored as numbers, and Market's 4-class ``age``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from reidexplain.attributes import DUKEMTMC, MARKET1501, MARKET1501_AGE
from reidexplain.data import DukeMTMCreID, Market1501, write_market1501
from reidexplain.data._market_format import DUKE_FORMAT, MARKET_FORMAT

FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def _write_images(root, names_by_split):
    rng = np.random.default_rng(0)
    for split, names in names_by_split.items():
        folder = root / FOLDERS[split]
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.fromarray(rng.integers(0, 255, (16, 8, 3), dtype=np.uint8)).save(folder / name)


def _codes(pids, names, seed, unannotated_ids=(), holes=0):
    """1/2 codes per attribute, rows of ``unannotated_ids`` all 0 and ``holes`` random entries 0."""
    rng = np.random.default_rng(seed)
    table = rng.integers(1, 3, size=(len(pids), len(names))).astype(np.float64)
    for pid in unannotated_ids:
        table[pids.index(pid)] = 0.0
    if holes:
        flat = rng.choice(table.size, size=holes, replace=False)
        table.reshape(-1)[flat] = 0.0
    return table


def _struct(pids, names, table, extra=None, numeric_index=False):
    struct = {name: table[:, j].reshape(1, -1) for j, name in enumerate(names)}
    struct.update(extra or {})
    if numeric_index:
        struct["image_index"] = np.asarray(pids, dtype=np.float64).reshape(1, -1)
    else:
        index = np.empty((1, len(pids)), dtype=object)
        for i, pid in enumerate(pids):
            index[0, i] = f"{pid:04d}"
        struct["image_index"] = index
    return struct


def _expected(code):
    """The reader's label and known flag for one code of the file."""
    return (1.0 if code == 2 else 0.0), code in (1, 2)


@pytest.fixture(scope="module")
def duke(tmp_path_factory):
    root = tmp_path_factory.mktemp("duke")
    names = list(DUKE_FORMAT.mat_field_order)
    train_pids = [1, 3, 8, 12]
    test_pids = [5, 7, 9, 11, 40]  # 40 has no images; 13 has images but no row
    train = _codes(train_pids, names, 1, unannotated_ids=[8], holes=6)
    test = _codes(test_pids, names, 2, unannotated_ids=[7], holes=9)
    scipy.io.savemat(str(root / "duke_attribute.mat"), {"duke_attribute": {
        "test": _struct(test_pids, names, test), "train": _struct(train_pids, names, train)}})
    _write_images(root, {
        "train": ["0001_c1_f0000001.jpg", "0001_c2_f0000002.jpg", "0003_c1_f0000003.jpg",
                  "0008_c3_f0000004.jpg", "0012_c1_f0000005.jpg", "0012_c4_f0000006.jpg"],
        "query": ["0005_c1_f0000007.jpg", "0007_c2_f0000008.jpg", "0013_c1_f0000009.jpg"],
        "gallery": ["0005_c2_f0000010.jpg", "0007_c1_f0000011.jpg", "0009_c5_f0000012.jpg",
                    "0011_c6_f0000013.jpg", "0013_c2_f0000014.jpg"],
    })
    files = {"train": (train_pids, train), "test": (test_pids, test)}
    return root, names, files


@pytest.mark.parametrize("split", ["train", "query", "gallery"])
def test_duke_every_label_matches_the_file(duke, split, caplog):
    root, names, files = duke
    pids, table = files["train" if split == "train" else "test"]
    with caplog.at_level(logging.WARNING, logger="reidexplain.data.market1501"):
        if split == "train":
            ds = DukeMTMCreID(root, split)
        else:
            with pytest.warns(UserWarning, match="1 identities have no attributes.*13"):
                ds = DukeMTMCreID(root, split)
    assert ds.attribute_mask.shape == ds.attributes.shape == (len(ds), 23)
    expected_unknown = 0
    for i in range(len(ds)):
        item = ds[i]
        pid = ds.original_pids[i]
        if pid not in pids:  # in the folder, not in the annotation
            assert not item["has_attributes"] and not item["attribute_mask"].any()
            assert not item["attributes"].any()
            expected_unknown += 23
            continue
        assert item["has_attributes"]
        row = table[pids.index(pid)]
        for name, code in zip(names, row, strict=True):
            j = DUKEMTMC.index(name)
            value, known = _expected(code)
            assert item["attribute_mask"][j].item() == known, (pid, name)
            assert item["attributes"][j].item() == (value if known else 0.0), (pid, name)
            expected_unknown += not known
    assert ds.num_unknown_labels == expected_unknown > 0
    assert f"{expected_unknown} of {len(ds) * 23} labels are unknown" in caplog.text


def test_duke_unknowns_batch_to_known_masks(duke):
    from torch.utils.data import DataLoader

    from reidexplain._batch import iter_batches

    root, _, _ = duke
    ds = DukeMTMCreID(root, "train", image_size=(16, 8))
    batches = list(iter_batches(DataLoader(ds, batch_size=4)))
    known = torch.cat([b.known for b in batches])
    assert torch.equal(known, ds.attribute_mask)
    assert torch.equal(torch.cat([b.attributes for b in batches]), ds.attributes)


def test_duke_without_unknowns_logs_nothing(tmp_path, caplog):
    names = list(DUKE_FORMAT.mat_field_order)
    table = _codes([1], names, 3)
    # A single identity per part: the struct's rows load as scalars.
    scipy.io.savemat(str(tmp_path / "duke_attribute.mat"), {"duke_attribute": {
        "test": _struct([1], names, table), "train": _struct([1], names, table)}})
    _write_images(tmp_path, {"train": ["0001_c1_f0000001.jpg"], "query": [], "gallery": []})
    with caplog.at_level(logging.WARNING):
        ds = DukeMTMCreID(tmp_path, "train")
    assert ds.num_unknown_labels == 0 and ds.attribute_mask.all() and caplog.text == ""
    assert ds.attributes[0].tolist() == [float(table[0, names.index(n)] == 2) for n in DUKEMTMC.names]


def _market_root(tmp_path, ages_train, numeric_index=False, holes=0):
    names = list(MARKET_FORMAT.mat_field_order)
    train_pids, test_pids = [2, 4, 6, 9], [3, 5]
    train = _codes(train_pids, names, 4, holes=holes)
    test = _codes(test_pids, names, 5)
    scipy.io.savemat(str(tmp_path / "market_attribute.mat"), {"market_attribute": {
        "test": _struct(test_pids, names, test, {"age": np.array([[2.0, 3.0]])}),
        "train": _struct(train_pids, names, train, {"age": np.asarray(ages_train, float).reshape(1, -1)},
                         numeric_index=numeric_index)}})
    _write_images(tmp_path, {
        "train": [f"{p:04d}_c1s1_{i:06d}_01.jpg" for i, p in enumerate(train_pids)],
        "query": ["0003_c1s1_000100_01.jpg"],
        "gallery": ["0003_c2s1_000101_01.jpg", "0005_c3s1_000102_01.jpg", "0000_c1s1_000103_01.jpg"],
    })
    return names, train_pids, train


def test_market_age_as_one_hot_attributes(tmp_path):
    ages = [1, 4, 0, 3]  # identity 6 has no age annotated
    names, pids, table = _market_root(tmp_path, ages, numeric_index=True, holes=3)
    ds = Market1501(tmp_path, "train", attributes="market1501_age")
    assert ds.schema is MARKET1501_AGE and ds.attributes.shape == (4, 30)
    for i, pid in enumerate(ds.original_pids):
        row, age = table[pids.index(pid)], ages[pids.index(pid)]
        for name, code in zip(names, row, strict=True):
            j = MARKET1501_AGE.index(name)
            value, known = _expected(code)
            assert ds.attribute_mask[i, j].item() == known and ds.attributes[i, j].item() == (value if known else 0.0)
        one_hot = ds.attributes[i, 26:]
        if age == 0:
            assert not ds.attribute_mask[i, 26:].any() and not one_hot.any()
        else:
            assert ds.attribute_mask[i, 26:].all()
            assert one_hot.tolist() == [float(k == age - 1) for k in range(4)]
    default = Market1501(tmp_path, "train")
    assert default.schema is MARKET1501 and torch.equal(default.attributes, ds.attributes[:, :26])
    assert torch.equal(Market1501(tmp_path, "train", attributes=MARKET1501_AGE).attributes, ds.attributes)
    with pytest.raises(ValueError, match=r"provides the schemas \['market1501', 'market1501_age'\], got 'dukemtmc'"):
        Market1501(tmp_path, "train", attributes="dukemtmc")
    with pytest.raises(ValueError, match="provides the schemas"):
        DukeMTMCreID(tmp_path, "train", attributes="market1501_age")
    with pytest.raises(TypeError, match="attributes: expected True, False"):
        Market1501(tmp_path, "train", attributes=3)


def test_market_bad_age_and_codes(tmp_path):
    _market_root(tmp_path, [1, 5, 2, 2])
    with pytest.raises(ValueError, match=r"market_attribute.train.age: expected class codes 1..4.*\[5.0\]"):
        Market1501(tmp_path, "train", attributes="market1501_age")
    assert len(Market1501(tmp_path, "train")) == 4  # the default schema does not read the age


def test_writer_round_trip_of_unknowns_and_age(tmp_path):
    class Items(torch.utils.data.Dataset):
        schema = MARKET1501_AGE

        def __init__(self, pids, offset):
            self.pids, self.offset = pids, offset

        def __len__(self):
            return len(self.pids)

        def __getitem__(self, i):
            pid = self.pids[i]
            gen = torch.Generator().manual_seed(pid)
            labels = (torch.rand(30, generator=gen) < 0.5).float()
            labels[26:] = 0.0
            labels[26 + pid % 4] = 1.0
            mask = torch.ones(30, dtype=torch.bool)
            if pid % 3 == 0:
                labels[pid % 26] = float("nan")  # NaN-coded unknown
            if pid % 5 == 0:
                mask[26:] = False  # unknown age, by mask
            return {"image": torch.rand(3, 16, 8, generator=gen), "pid": pid, "camid": i % 2,
                    "attributes": labels, "attribute_mask": mask}

    splits = {"train": Items([3, 3, 5, 7], 0), "query": Items([10, 12], 1), "gallery": Items([10, 12, 15], 2)}
    root = write_market1501(splits, tmp_path, progress=False)
    raw = scipy.io.loadmat(str(root / "market_attribute.mat"))["market_attribute"][0, 0]["train"][0, 0]
    assert raw["age"][0].tolist() == [4.0, 0.0, 4.0]  # pids 3, 5 (masked), 7
    for split in ("train", "query", "gallery"):
        ds = Market1501(root, split, attributes="market1501_age")
        for i in range(len(ds)):
            src = splits[split][i]
            known = src["attribute_mask"] & ~torch.isnan(src["attributes"])
            assert torch.equal(ds.attribute_mask[i], known)
            assert torch.equal(ds.attributes[i], torch.where(known, src["attributes"], torch.zeros(30)))
        assert ds.num_unknown_labels == int(sum((~(splits[split][i]["attribute_mask"]
                                                   & ~torch.isnan(splits[split][i]["attributes"]))).sum()
                                                for i in range(len(ds))))
    # Written with the default schema, the age field is the constant 3 of the real file's layout.
    assert Market1501(root, "train").schema is MARKET1501
