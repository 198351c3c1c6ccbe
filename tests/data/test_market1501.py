"""Market-1501 / DukeMTMC-reID readers and writers: round trips through the real on-disk layout."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from reidexplain.attributes import DUKEMTMC, MARKET1501, SHARED, AttributeSchema
from reidexplain.data.market1501 import DukeMTMCreID, Market1501, write_dukemtmc, write_market1501

H, W = 32, 16


class TinyPersons(Dataset):
    """Smooth random images of a few identities whose attributes are fixed per identity."""

    def __init__(self, pids, camids, schema=MARKET1501, seed=0, noisy_pid=None):
        gen = torch.Generator().manual_seed(seed)
        self.schema = schema
        self.pids = list(pids)
        self.camids = list(camids)
        low = torch.rand(len(self.pids), 3, 8, 4, generator=gen)
        # Smooth images: JPEG reproduces them closely, as it does real photographs.
        self.images = F.interpolate(low, size=(H, W), mode="bilinear", align_corners=False)
        # Labels depend on the identity only, so that query and gallery agree on shared ids.
        self.labels = {
            pid: (torch.rand(len(schema), generator=torch.Generator().manual_seed(pid)) < 0.4).float()
            for pid in set(self.pids)
        }
        self.noisy_pid = noisy_pid

    def __len__(self):
        return len(self.pids)

    def __getitem__(self, i):
        attributes = self.labels[self.pids[i]].clone()
        if self.pids[i] == self.noisy_pid and i % 2:
            attributes[0] = 1 - attributes[0]
        return {"image": self.images[i], "pid": self.pids[i], "camid": self.camids[i],
                "attributes": attributes}


def make_splits(schema=MARKET1501):
    return {
        "train": TinyPersons([5, 5, 5, 9, 9, 12, 12, 12], [0, 1, 2, 0, 3, 5, 4, 4], schema, seed=1),
        "query": TinyPersons([20, 31], [0, 1], schema, seed=2),
        "gallery": TinyPersons([20, 20, 31, 0, 0, 40], [1, 2, 0, 3, 4, 5], schema, seed=3),
    }


def _frame(path, duke=False):
    pattern = r"_f(\d+)\.jpg$" if duke else r"_c\ds1_(\d+)_01\.jpg$"
    return int(re.search(pattern, path).group(1))


def _sources(splits):
    return [ds[i] for name in ("train", "query", "gallery") for ds in [splits[name]]
            for i in range(len(ds))]


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    splits = make_splits()
    root = write_market1501(splits, tmp_path_factory.mktemp("market"), progress=False)
    return splits, root


@pytest.mark.parametrize("split", ["train", "query", "gallery"])
def test_market_round_trip(market, split):
    splits, root = market
    sources = _sources(splits)
    ds = Market1501(root, split)
    assert len(ds) == len(splits[split])
    assert sorted(ds.pids) == sorted(splits[split].pids)
    for i in range(len(ds)):
        item = ds[i]
        src = sources[_frame(item["path"]) - 1]  # frames count the written images from 1
        assert item["pid"] == src["pid"] and item["camid"] == src["camid"]
        assert item["image"].dtype == torch.float32 and item["image"].shape == (3, H, W)
        assert (item["image"] - src["image"]).abs().mean().item() < 0.03
        if src["pid"] == 0:  # gallery distractor: no annotation, every label unknown
            assert not item["has_attributes"] and not item["attributes"].any()
            assert not item["attribute_mask"].any()
        else:
            assert item["has_attributes"] and item["attribute_mask"].all()
            assert torch.equal(item["attributes"], src["attributes"])
    assert ds.attributes.shape == (len(ds), 26)
    assert ds.schema is MARKET1501
    assert ds.camids == [ds[i]["camid"] for i in range(len(ds))]


def test_market_file_names_and_mat_layout(market):
    splits, root = market
    names = sorted(p.name for p in (root / "bounding_box_train").iterdir())
    assert names[0] == "0005_c1s1_000001_01.jpg" and len(names) == 8
    gallery = sorted(p.name for p in (root / "bounding_box_test").iterdir())
    assert sum(n.startswith("0000_") for n in gallery) == 2
    frames = [_frame(str(p)) for f in ("bounding_box_train", "query", "bounding_box_test")
              for p in (root / f).iterdir()]
    assert sorted(frames) == list(range(1, 17))
    raw = scipy.io.loadmat(str(root / "market_attribute.mat"))
    top = raw["market_attribute"][0, 0]
    assert top.dtype.names == ("test", "train")
    train = top["train"][0, 0]
    assert train.dtype.names[0] == "age" and train.dtype.names[-1] == "image_index"
    assert set(train.dtype.names) == set(MARKET1501.names) | {"age", "image_index"}
    assert [str(x[0]) for x in train["image_index"][0]] == ["0005", "0009", "0012"]
    assert train["hat"].shape == (1, 3) and set(np.unique(train["hat"])) <= {1.0, 2.0}
    hat = MARKET1501.index("hat")
    expected = [2.0 if splits["train"].labels[p][hat] else 1.0 for p in (5, 9, 12)]
    assert train["hat"][0].tolist() == expected
    test = top["test"][0, 0]
    assert [str(x[0]) for x in test["image_index"][0]] == ["0020", "0031", "0040"]


def test_relabel_and_original_pids(market):
    _, root = market
    ds = Market1501(root, "train", relabel=True)
    assert ds.original_pids == [5, 5, 5, 9, 9, 12, 12, 12]
    assert ds.pids == [0, 0, 0, 1, 1, 2, 2, 2]
    assert [ds[i]["pid"] for i in (0, 3, 7)] == [0, 1, 2]
    assert Market1501(root, "train").pids == ds.original_pids
    with pytest.raises(ValueError, match="only meaningful for split='train'"):
        Market1501(root, "query", relabel=True)


def test_resize_transform_no_attributes_and_loader(market, tmp_path):
    _, root = market
    ds = Market1501(root, "gallery", image_size=(16, 8), transform=lambda x: 1.0 - x)
    item = ds[0]
    assert item["image"].shape == (3, 16, 8)
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 16, 8) and batch["attributes"].shape == (4, 26)
    assert batch["has_attributes"].tolist() == [False, False, True, True]
    copy = tmp_path / "noattr"
    shutil.copytree(root, copy)
    (copy / "market_attribute.mat").unlink()
    plain = Market1501(copy, "query", attributes=False)
    assert plain.attributes is None and "attributes" not in plain[0]
    assert not plain.has_attributes.any() and len(plain) == 2


def test_junk_distractors_and_malformed_names(market, tmp_path):
    _, root = market
    copy = tmp_path / "market"
    shutil.copytree(root, copy)
    one = next((copy / "query").iterdir())
    for folder in ("bounding_box_train", "query", "bounding_box_test"):
        shutil.copy(one, copy / folder / "-1_c1s1_000901_01.jpg")
        shutil.copy(one, copy / folder / "0000_c2s1_000902_01.jpg")
        shutil.copy(one, copy / folder / "0007.jpg")
        (copy / folder / "Thumbs.db").write_bytes(b"\0")
    with pytest.warns(UserWarning, match=r"skipped 1 image\(s\).*'0007.jpg'"):
        train = Market1501(copy, "train")
    assert len(train) == 8 and 0 not in train.pids and -1 not in train.pids
    with pytest.warns(UserWarning, match="skipped 1 image"):
        query = Market1501(copy, "query")
    assert sorted(query.pids) == [20, 31]
    with pytest.warns(UserWarning, match="skipped 1 image"):
        gallery = Market1501(copy, "gallery")
    assert sorted(gallery.pids) == [0, 0, 0, 20, 20, 31, 40]
    assert gallery.has_attributes.sum().item() == 4


def test_reader_errors(market, tmp_path):
    _, root = market
    with pytest.raises(FileNotFoundError, match="nowhere is not a directory.*bounding_box_train"):
        Market1501(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"bounding_box_test not found.*0002_c1s1_000451_03"):
        Market1501(tmp_path / "empty", "gallery")
    with pytest.raises(ValueError, match="split: expected one of"):
        Market1501(root, "test")
    with pytest.raises(TypeError, match="image_size"):
        Market1501(root, image_size="big")
    copy = tmp_path / "nomat"
    shutil.copytree(root, copy)
    (copy / "market_attribute.mat").rename(copy / "elsewhere.mat")
    with pytest.raises(FileNotFoundError, match="attribute annotation not found.*attribute_file="):
        Market1501(copy, "train")
    assert len(Market1501(copy, "train", attribute_file=copy / "elsewhere.mat")) == 8
    (copy / "attribute").mkdir()
    (copy / "elsewhere.mat").rename(copy / "attribute" / "market_attribute.mat")
    assert Market1501(copy, "train").attributes.sum() > 0
    with pytest.raises(FileNotFoundError, match="attribute_file"):
        Market1501(copy, "train", attribute_file=copy / "missing.mat")


def test_malformed_mat_files(market, tmp_path):
    _, root = market
    copy = tmp_path / "badmat"
    shutil.copytree(root, copy)
    mat = copy / "market_attribute.mat"
    good = {k: 1.0 * np.ones((1, 3)) for k in MARKET1501.names}
    good["image_index"] = np.array([["0005", "0009", "0012"]], dtype=object)
    three = dict(good, hat=np.array([[3.0, 1.0, 1.0]]))
    scipy.io.savemat(str(mat), {"market_attribute": {"train": three, "test": good}})
    with pytest.raises(ValueError, match=r"market_attribute.train.hat: expected the 1/2 coding.*\[3.0\]"):
        Market1501(copy, "train")
    scipy.io.savemat(str(mat), {"market_attribute": {"train": good}})
    with pytest.raises(ValueError, match="field 'test'"):
        Market1501(copy, "query")
    no_hat = {k: v for k, v in good.items() if k != "hat"}
    scipy.io.savemat(str(mat), {"market_attribute": {"train": no_hat, "test": good}})
    with pytest.raises(ValueError, match=r"attributes \['hat'\] of Market-1501 are missing"):
        Market1501(copy, "train")
    scipy.io.savemat(str(mat), {"other": good})
    with pytest.raises(ValueError, match="expected a struct 'market_attribute'"):
        Market1501(copy, "train")
    # A test struct that misses identity 40: its images keep zeros and a warning names it.
    partial = dict(good, image_index=np.array([["0020", "0031", "0099"]], dtype=object))
    scipy.io.savemat(str(mat), {"market_attribute": {"train": good, "test": partial}})
    with pytest.warns(UserWarning, match="1 identities have no attributes.*40"):
        gallery = Market1501(copy, "gallery")
    assert gallery.has_attributes.tolist() == [False, False, True, True, True, False]
    assert gallery.attributes[2].tolist() == [0.0] * 26  # 1 = "no" in the 1/2 coding


def test_duke_round_trip(tmp_path):
    splits = make_splits(DUKEMTMC)
    splits["gallery"] = TinyPersons([20, 31, 40, 40], [7, 6, 0, 1], DUKEMTMC, seed=4)
    root = write_dukemtmc(splits, tmp_path, quality=90, progress=False)
    assert (root / "duke_attribute.mat").is_file()
    assert sorted(p.name for p in (root / "query").iterdir()) == [
        "0020_c1_f0000009.jpg", "0031_c2_f0000010.jpg"]
    raw = scipy.io.loadmat(str(root / "duke_attribute.mat"))
    assert "age" not in raw["duke_attribute"][0, 0]["train"][0, 0].dtype.names
    sources = _sources(splits)
    for split in ("train", "query", "gallery"):
        ds = DukeMTMCreID(root, split)
        assert ds.schema is DUKEMTMC and ds.attributes.shape == (len(splits[split]), 23)
        assert ds.has_attributes.all()
        for i in range(len(ds)):
            item = ds[i]
            src = sources[_frame(item["path"], duke=True) - 1]
            assert (item["pid"], item["camid"]) == (src["pid"], src["camid"])
            assert torch.equal(item["attributes"], src["attributes"])
            assert (item["image"] - src["image"]).abs().mean().item() < 0.03
    with pytest.raises(FileNotFoundError, match="DukeMTMC-reID split 'train': folder"):
        DukeMTMCreID(root / "bounding_box_train", "train")  # wrong root: no folders inside
    with pytest.warns(UserWarning, match=r"skipped 2 image\(s\)"):
        assert len(Market1501(root, "query", attributes=False)) == 0  # Duke names are not Market's


def test_writer_schemas(tmp_path):
    reordered = AttributeSchema.from_names(list(reversed(MARKET1501.names)))
    splits = make_splits(reordered)
    root = write_market1501(splits, tmp_path / "reordered", progress=False)
    ds = Market1501(root, "train")
    flip = list(reversed(range(26)))
    assert torch.equal(ds.attributes[0], splits["train"].labels[5][flip])
    with pytest.raises(ValueError, match=r"cannot write attribute schema 'shared' as Market-1501.*'clothes'"):
        write_market1501(make_splits(SHARED), tmp_path / "shared", progress=False)
    with pytest.raises(ValueError, match=r"cannot write attribute schema 'market1501' as DukeMTMC-reID"):
        write_dukemtmc(make_splits(MARKET1501), tmp_path / "m2d", progress=False)


def test_writer_errors(tmp_path):
    splits = make_splits()
    with pytest.raises(ValueError, match="expected exactly the keys"):
        write_market1501({"train": splits["train"]}, tmp_path / "a", progress=False)
    bad = dict(splits, train=TinyPersons([5, 5, 6, 6], [0, 1, 0, 1], noisy_pid=6))
    with pytest.raises(ValueError, match=r"identity 6 has attributes that differ.*\['backpack'\]"):
        write_market1501(bad, tmp_path / "b", progress=False)
    zero = dict(splits, train=TinyPersons([0, 0, 1], [0, 1, 0]))
    with pytest.raises(ValueError, match="pid 0 marks a distractor.*pid_offset=1"):
        write_market1501(zero, tmp_path / "c", progress=False)
    root = write_market1501(zero, tmp_path / "d", progress=False, pid_offset=1)
    assert Market1501(root, "train").pids == [1, 1, 2]
    assert sorted(Market1501(root, "gallery").pids) == [1, 1, 21, 21, 32, 41]
    with pytest.raises(FileExistsError, match="already holds 3 images"):
        write_market1501(splits, root, progress=False)
    write_market1501(splits, root, progress=False, overwrite=True)
    assert len(Market1501(root, "train")) == 8
    cams = dict(splits, query=TinyPersons([20], [9]))
    with pytest.raises(ValueError, match=r"camid must be in \[0, 8\], got 9"):
        write_market1501(cams, tmp_path / "e", progress=False)
    with pytest.raises(ValueError, match="quality"):
        write_market1501(splits, tmp_path / "f", quality=0, progress=False)
