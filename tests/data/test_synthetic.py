"""Synthetic persons: determinism, item format, attribute statistics, masks, counterfactuals, splits."""

from __future__ import annotations

import dataclasses
import math
from functools import cache

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from reidexplain.data import Identity, Nuisance, SyntheticPersons, synthetic_splits

SMALL = (64, 32)
DOMAINS = ("market", "duke")


@cache
def small(domain: str, seed: int) -> SyntheticPersons:
    return SyntheticPersons(12, 3, domain=domain, seed=seed, image_size=SMALL)


def color_groups(data: SyntheticPersons) -> list[list[int]]:
    return [[data.schema.index(n) for n in data.schema.groups[g]] for g in ("upper_color", "lower_color")]


# ---------------------------------------------------------------------------------------- items
@pytest.mark.parametrize("domain, m, cams", [("market", 26, 6), ("duke", 23, 8)])
def test_item_format(domain, m, cams):
    data = SyntheticPersons(3, 2, domain=domain, seed=0)
    assert len(data) == 6 and len(data.schema) == m
    for i in (0, 5):
        item = data[i]
        assert set(item) == {"image", "pid", "camid", "attributes", "masks"}
        assert item["image"].shape == (3, 128, 64) and item["image"].dtype == torch.float32
        assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0
        assert item["masks"].shape == (m, 128, 64) and item["masks"].dtype == torch.bool
        assert item["attributes"].shape == (m,) and item["attributes"].dtype == torch.float32
        assert set(item["attributes"].tolist()) <= {0.0, 1.0}
        assert item["pid"] == data.pids[i] == i // 2
        assert item["camid"] == data.camids[i] and 0 <= item["camid"] < cams
        torch.testing.assert_close(item["attributes"], data.attributes[i])
        # The image is not flat: a textured background and a person on it.
        assert float(item["image"].std()) > 0.08


def test_determinism_and_access_order():
    a = SyntheticPersons(5, 3, seed=7, image_size=SMALL)
    b = SyntheticPersons(5, 3, seed=7, image_size=SMALL)
    later = b[11]["image"]  # b is read in another order than a
    first = b[0]["image"]
    assert torch.equal(a[0]["image"], first) and torch.equal(a[11]["image"], later)
    assert torch.equal(a[0]["masks"], b[0]["masks"])
    c = SyntheticPersons(5, 3, seed=8, image_size=SMALL)
    assert not torch.equal(a[0]["image"], c[0]["image"])
    assert a.identity(0) != c.identity(0)
    # Images of one person differ (nuisance), and two persons differ.
    assert float((a[0]["image"] - a[1]["image"]).abs().mean()) > 0.02
    assert a.identity(0) != a.identity(3)


def test_render_reproduces_item_and_counterfactual_helper():
    data = small("duke", 0)
    for i in (0, 4, 35):
        item = data[i]
        again = data.render(data.identity(i), data.nuisance(i))
        assert torch.equal(item["image"], again["image"]) and torch.equal(item["masks"], again["masks"])
    flipped = data.counterfactual(4, "hat")
    k = data.schema.index("hat")
    assert float(flipped["attributes"][k]) == 1.0 - float(data.attributes[4, k])


def test_without_masks_and_zero_nuisance():
    data = SyntheticPersons(2, 2, image_size=SMALL, with_masks=False, nuisance_strength=0.0)
    item = data[1]
    assert "masks" not in item and item["image"].shape == (3, *SMALL)
    nuisance = data.nuisance(1)
    assert (nuisance.view, nuisance.mirror, nuisance.occluder, nuisance.noise_std) == ("front", False, None, 0.0)
    with_masks = SyntheticPersons(2, 2, image_size=SMALL, nuisance_strength=0.0)
    assert torch.equal(with_masks[1]["image"], item["image"])


# ---------------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("domain", DOMAINS)
def test_attribute_frequencies_follow_schema(domain):
    n = 3000
    data = SyntheticPersons(n, 1, domain=domain, seed=3)
    labels = data.attributes
    assert labels.shape == (n, len(data.schema))
    expected = torch.tensor(data.schema.positive_ratios, dtype=torch.float64)
    for group in color_groups(data):
        expected[group] = expected[group] / expected[group].sum()
        assert torch.all(labels[:, group].sum(1) == 1), "exactly one colour per garment"
    observed = labels.double().mean(0)
    tolerance = 4.5 * torch.sqrt(expected * (1 - expected) / n) + 0.004
    bad = {data.schema.names[k]: (round(float(observed[k]), 4), round(float(expected[k]), 4))
           for k in range(len(data.schema)) if abs(observed[k] - expected[k]) > tolerance[k]}
    assert not bad, f"observed vs expected rates: {bad}"
    if domain == "market":
        hat = data.schema.index("hat")
        assert 0.01 < float(observed[hat]) < 0.045  # rare stays rare
        # Skirts (clothes = 0) only on women: a bias of the real data we keep.
        skirt = labels[:, data.schema.index("clothes")] == 0
        assert torch.all(labels[skirt, data.schema.index("gender")] == 1)


def test_identity_cues_vary_between_look_alikes():
    data = SyntheticPersons(400, 1, seed=1)
    labels = [tuple(row.tolist()) for row in data.attributes]
    seen: dict[tuple, int] = {}
    pair = None
    for k, row in enumerate(labels):
        if row in seen:
            pair = (seen[row], k)
            break
        seen[row] = k
    assert pair is not None, "400 persons should contain two with the same labels"
    a, b = data.identity(pair[0]), data.identity(pair[1])
    cues = ("height", "build", "skin", "hair_rgb", "upper_tint", "lower_tint", "shoe_tone")
    assert sum(getattr(a, c) != getattr(b, c) for c in cues) >= 5


# ---------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("domain", DOMAINS)
def test_masks_non_empty_inside_and_shared_by_colour_group(domain):
    data = SyntheticPersons(20, 2, domain=domain, seed=2, image_size=(128, 64))
    h, w = data.image_size
    for i in range(len(data)):
        masks = data[i]["masks"]
        area = masks.flatten(1).sum(1)
        assert torch.all(area > 0), [data.schema.names[k] for k in torch.nonzero(area == 0).flatten()]
        # Every mask is a part of the person, never most of the image.
        assert torch.all(area < 0.35 * h * w)
        for group in color_groups(data):
            assert all(torch.equal(masks[group[0]], masks[k]) for k in group[1:])
    hat = data[0]["masks"][data.schema.index("hat")]
    rows = torch.nonzero(hat)[:, 0].float()
    assert float(rows.max()) < 0.3 * h  # the hat region is at the top of the image


# ---------------------------------------------------------------------------------------- counterfactuals
@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(domain=st.sampled_from(DOMAINS), seed=st.integers(0, 3), item=st.integers(0, 35),
       picks=st.lists(st.integers(0, 25), min_size=1, max_size=2))
def test_counterfactual_changes_pixels_only_inside_masks(domain, seed, item, picks):
    data = small(domain, seed)
    flips = [p % len(data.schema) for p in picks]
    identity, nuisance = data.identity(item), data.nuisance(item)
    original = data.render(identity, nuisance)
    flipped = data.render(identity, nuisance, flip=flips)
    changed = (original["image"] != flipped["image"]).any(0)
    allowed = torch.zeros_like(changed)
    for k in flips:
        allowed |= original["masks"][k] | flipped["masks"][k]
    assert not bool((changed & ~allowed).any()), (domain, seed, item, flips)
    if len(flips) == 1:
        k = flips[0]
        assert float(flipped["attributes"][k]) == 1.0 - float(original["attributes"][k])
        for group in color_groups(data):
            assert float(flipped["attributes"][group].sum()) == pytest.approx(1.0, abs=1e-6)
        if nuisance.occluder is None:
            assert bool(changed.any()), f"flipping {data.schema.names[k]} changed no pixel"


def test_colour_flip_rule():
    data = small("market", 0)
    person = dataclasses.replace(data.identity(0), upper_color="white")
    assert data.flipped(person, "upwhite").upper_color == "black"  # most frequent other colour
    assert data.flipped(person, "upred").upper_color == "red"
    assert data.flipped(person, data.schema.index("upred")).upper_color == "red"
    black = dataclasses.replace(person, upper_color="black")
    assert data.flipped(black, "upblack").upper_color == "white"
    assert data.flipped(person, ["hat", "hat"]) == person


def test_render_of_an_edited_identity():
    data = small("market", 1)
    nuisance = dataclasses.replace(data.nuisance(0), view="back", occluder=None)
    person = dataclasses.replace(data.identity(0), backpack=True, upper_color="red")
    item = data.render(person, nuisance)
    labels = dict(zip(data.schema.names, item["attributes"].tolist(), strict=True))
    assert labels["backpack"] == 1.0 and labels["upred"] == 1.0
    backpack = item["masks"][data.schema.index("backpack")]
    upper = item["masks"][data.schema.index("upred")]
    bare = data.render(dataclasses.replace(person, backpack=False), nuisance)
    upper_bare = bare["masks"][data.schema.index("upred")]
    # Seen from the back, the pack hides the middle of the shirt: the shirt's mask shrinks there
    # (only anti-aliased edges and the arms drawn over the pack still overlap it).
    assert int(backpack.sum()) > 60
    assert int((backpack & upper_bare).sum()) == int(backpack.sum())
    assert int((backpack & upper).sum()) < 0.4 * int(backpack.sum())


# ---------------------------------------------------------------------------------------- splits
@pytest.mark.parametrize("domain", DOMAINS)
def test_splits_are_disjoint_and_every_query_has_a_cross_camera_match(domain):
    splits = synthetic_splits(6, 8, 5, domain=domain, seed=4, image_size=SMALL)
    train, query, gallery = splits["train"], splits["query"], splits["gallery"]
    assert set(train.pids) == set(range(6))
    assert set(query.pids) == set(gallery.pids) == set(range(6, 14))
    assert len(query) + len(gallery) == 8 * 5 and len(train) == 6 * 5
    assert len(query) > 8  # Market style: one query per camera, not one per person
    gallery_pairs = set(zip(gallery.pids, gallery.camids, strict=True))
    for pid, camid in zip(query.pids, query.camids, strict=True):
        assert any(p == pid and c != camid for p, c in gallery_pairs), (pid, camid)
    item = query[0]
    assert item["pid"] == query.pids[0] and item["camid"] == query.camids[0]
    assert query.attributes.shape == (len(query), len(query.schema))
    assert torch.equal(query.render(query.identity(0), query.nuisance(0))["image"], item["image"])


def test_splits_with_two_images_per_person():
    splits = synthetic_splits(2, 5, 2, seed=0, image_size=SMALL)
    assert len(splits["query"]) == 5 and len(splits["gallery"]) == 5
    for pid, camid in zip(splits["query"].pids, splits["query"].camids, strict=True):
        k = splits["gallery"].pids.index(pid)
        assert splits["gallery"].camids[k] != camid


def test_dataloader_batches_items():
    data = small("market", 0)
    batch = next(iter(DataLoader(data, batch_size=4, shuffle=False)))
    assert batch["image"].shape == (4, 3, *SMALL)
    assert batch["masks"].shape == (4, 26, *SMALL) and batch["masks"].dtype == torch.bool
    assert batch["pid"].tolist() == data.pids[:4] and batch["camid"].tolist() == data.camids[:4]
    torch.testing.assert_close(batch["attributes"], data.attributes[:4])


# ---------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, error, match", [
    ({"num_identities": 0}, ValueError, "num_identities"),
    ({"images_per_id": 1.5}, TypeError, "images_per_id"),
    ({"domain": "cuhk"}, ValueError, "domain"),
    ({"image_size": (16, 8)}, ValueError, "image_size"),
    ({"image_size": 128}, TypeError, "image_size"),
    ({"cameras": [0, 9]}, ValueError, "cameras"),
    ({"nuisance_strength": -1.0}, ValueError, "nuisance_strength"),
])
def test_invalid_arguments(kwargs, error, match):
    args = {"num_identities": 2, "images_per_id": 2, **kwargs}
    with pytest.raises(error, match=match):
        SyntheticPersons(**args)


def test_invalid_render_inputs():
    data = small("market", 0)
    with pytest.raises(ValueError, match="flip"):
        data.render(data.identity(0), data.nuisance(0), flip="boots")  # a Duke attribute
    with pytest.raises(ValueError, match="flip"):
        data.render(data.identity(0), data.nuisance(0), flip=26)
    with pytest.raises(TypeError, match="nuisance"):
        data.render(data.identity(0), None)
    with pytest.raises(TypeError, match="identity"):
        data.render("person", data.nuisance(0))
    with pytest.raises(ValueError, match="lower_color"):  # pink is a Market colour, not a Duke one
        small("duke", 0).render(dataclasses.replace(small("duke", 0).identity(0), lower_color="pink"),
                                small("duke", 0).nuisance(0))
    with pytest.raises(ValueError, match="camid"):
        data.render(data.identity(0), Nuisance(camid=7))
    with pytest.raises(IndexError):
        data[len(data)]
    with pytest.raises(ValueError, match="images_per_id"):
        synthetic_splits(2, 2, 1)
    assert isinstance(data.identity(-1), Identity)
    assert math.isclose(float(np.mean(data.attributes.numpy())), float(data.attributes.mean()))


@pytest.mark.parametrize("with_masks", [True, False])
def test_getitems_renders_the_same_items_as_getitem(with_masks):
    data = SyntheticPersons(4, 3, domain="duke", seed=5, image_size=SMALL, with_masks=with_masks)
    indices = [11, 0, -1, 3, 3, 7]
    for batch in (1, 4):
        data.BATCH = batch
        items = data.__getitems__(indices)
        assert len(items) == len(indices)
        for i, item in zip(indices, items, strict=True):
            single = data[i]
            assert set(item) == set(single)
            for key, value in single.items():
                assert torch.equal(item[key], value) if torch.is_tensor(value) else item[key] == value
    assert data.__getitems__([]) == []
    with pytest.raises(IndexError):
        data.__getitems__([0, 12])
    # DataLoader uses __getitems__ for a batch of indices.
    loader = DataLoader(data, batch_size=5, shuffle=False)
    first = next(iter(loader))
    assert torch.equal(first["image"], torch.stack([data[i]["image"] for i in range(5)]))
