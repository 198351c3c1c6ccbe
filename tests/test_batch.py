"""The one batch reader: formats, unknown labels (NaN or attribute_mask) and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reidexplain._batch import Batch, item_field, iter_batches, split_known, unpack_batch

NAN = float("nan")


def _images(b=3):
    return torch.rand(b, 3, 8, 4, generator=torch.Generator().manual_seed(b))


@pytest.mark.parametrize("fmt", ["dict", "dict_plural", "pair", "triple", "quad"])
def test_formats_without_unknowns(fmt):
    x, y = _images(), torch.tensor([[0, 1], [1, 1], [0, 0]])
    pids, cams = torch.tensor([5, 5, 6]), torch.tensor([0, 1, 0])
    raw = {"dict": {"image": x, "attributes": y, "pid": pids, "camid": cams},
           "dict_plural": {"images": x, "attributes": y, "pids": pids, "camids": cams},
           "pair": (x, y), "triple": (x, pids, y), "quad": [x, pids, cams, y]}[fmt]
    b = unpack_batch(raw, 2)
    assert isinstance(b, Batch) and b.known is None and b.num_unknown == 0
    assert torch.equal(b.images, x) and b.attributes.dtype == torch.float32
    assert torch.equal(b.attributes, y.float())
    assert torch.equal(b.known_mask(), torch.ones(3, 2, dtype=torch.bool))
    if fmt in ("dict", "dict_plural", "quad"):
        assert b.pids.tolist() == [5, 5, 6] and b.camids.tolist() == [0, 1, 0]
    if fmt == "pair":
        assert b.pids is None and b.camids is None


def test_nan_coded_labels_become_a_mask():
    y = torch.tensor([[1.0, NAN, 0.0], [NAN, NAN, NAN], [0.0, 1.0, 1.0]])
    b = unpack_batch((_images(), y))
    expected_known = ~torch.isnan(y)
    assert torch.equal(b.known, expected_known)
    assert torch.equal(b.attributes, torch.nan_to_num(y, nan=0.0))
    assert b.num_unknown == int((~expected_known).sum())


def test_attribute_mask_and_nan_combine_and_values_under_false_are_ignored():
    # The 1/2 coding of the .mat files with 0 (unannotated) under the mask, and one NaN.
    y = torch.tensor([[2.0, 1.0, 0.0], [1.0, NAN, 2.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    with pytest.warns(UserWarning, match="1/2 labels"):
        b = unpack_batch({"image": _images(2), "attributes": y, "attribute_mask": mask})
    assert b.known.tolist() == [[True, True, False], [True, False, True]]
    assert b.attributes.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    all_masked = unpack_batch({"image": _images(2), "attributes": torch.full((2, 3), 7.0),
                               "attribute_mask": torch.zeros(2, 3, dtype=torch.bool)})
    assert not all_masked.known.any() and all_masked.attributes.abs().sum() == 0
    given = unpack_batch({"image": _images(2), "attributes": torch.ones(2, 3),
                          "attribute_mask": torch.ones(2, 3)})
    assert given.known is not None and given.known.all()  # a mask given is kept, even all True


def test_split_known_matches_unpack_batch():
    y = np.array([[0.0, np.nan], [1.0, 1.0]])
    values, known = split_known(y)
    assert values.tolist() == [[0.0, 0.0], [1.0, 1.0]] and known.tolist() == [[True, False], [True, True]]
    values, known = split_known(torch.tensor([1, 0]))
    assert values.shape == (1, 2) and known is None


def test_bad_batches_have_clear_errors():
    x = _images()
    with pytest.raises(TypeError, match="needs 'image' and 'attributes'.*\\['image'\\]"):
        unpack_batch({"image": x})
    with pytest.raises(TypeError, match="got a tuple of length 5"):
        unpack_batch((x, x, x, x, x))
    with pytest.raises(TypeError, match="got a str"):
        unpack_batch("batch")
    with pytest.raises(ValueError, match=r"expected 4 attributes.*got 2"):
        unpack_batch((x, torch.zeros(3, 2)), 4)
    with pytest.raises(ValueError, match="2 rows for a batch of 3"):
        unpack_batch((x, torch.zeros(2, 2)))
    with pytest.raises(ValueError, match="must be binary"):
        unpack_batch((x, torch.tensor([[0.0, 3.0], [0.0, 1.0], [1.0, 1.0]])))
    with pytest.raises(ValueError, match=r"`attribute_mask`: expected the shape"):
        unpack_batch({"image": x, "attributes": torch.zeros(3, 2), "attribute_mask": torch.ones(3, 3)})
    with pytest.raises(ValueError, match=r"`attribute_mask`: expected a bool or 0/1"):
        unpack_batch({"image": x, "attributes": torch.zeros(3, 2), "attribute_mask": torch.full((3, 2), 0.5)})
    with pytest.raises(ValueError, match="`pid` has 2 values for a batch of 3"):
        unpack_batch((x, [1, 2], torch.zeros(3, 2)))
    with pytest.raises(ValueError, match="`pid` must be integer ids"):
        unpack_batch((x, torch.tensor([1.5, 2.0, 3.0]), torch.zeros(3, 2)))
    with pytest.raises(ValueError, match=r"expected shape \(B,3,H,W\)"):
        unpack_batch((torch.rand(3, 1, 8, 4), torch.zeros(3, 2)))
    with pytest.raises(TypeError, match="extract_features: expected a dict with 'image'"):
        unpack_batch({"pid": 1}, attributes=False, where="extract_features")


def test_without_labels():
    x = _images()
    b = unpack_batch({"image": x, "pid": [1, 2, 3]}, attributes=False)
    assert b.attributes is None and b.known is None and b.camids is None and b.pids.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="without attribute labels"):
        b.known_mask()
    t = unpack_batch((x.numpy(), [1, 2, 3], [0, 0, 1], "ignored"), attributes=False)
    assert torch.allclose(t.images, x) and t.camids.tolist() == [0, 0, 1]


def test_iter_batches_warns_once_and_counts_unknowns():
    y = torch.tensor([[-1.0, 1.0], [1.0, NAN]])
    loader = [(_images(2), y)] * 3
    with pytest.warns(UserWarning, match="-1/\\+1") as record:
        batches = list(iter_batches(loader))
    assert len(record) == 1 and len(batches) == 3
    assert sum(b.num_unknown for b in batches) == 3
    assert batches[0].attributes.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match="yielded no batches"):
        list(iter_batches([]))
    with pytest.raises(ValueError, match="expected 2 attributes"):
        list(iter_batches([(_images(2), torch.zeros(2, 2)), (_images(2), torch.zeros(2, 3))]))


def test_item_field():
    assert item_field({"pid": 4}, "pid", 1) == 4 and item_field((0, 9), "pid", 1) == 9
    with pytest.raises(KeyError, match="expected a key 'pid'"):
        item_field({"image": 0}, "pid", 1)
    with pytest.raises(IndexError, match="position 2"):
        item_field((0, 1), "camid", 2)
    with pytest.raises(TypeError, match="got int"):
        item_field(3, "pid", 1)
