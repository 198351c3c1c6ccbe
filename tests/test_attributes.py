import pytest
import torch

from reidexplain.attributes import (
    DUKEMTMC,
    MARKET1501,
    SHARED,
    AttributeSchema,
    get_schema,
    list_schemas,
    project_labels,
)


def test_builtin_schema_sizes_and_order():
    assert len(MARKET1501) == 26 and len(DUKEMTMC) == 23 and len(SHARED) == 18
    # The Market-1501 annotation file is in alphabetical order.
    assert list(MARKET1501.names) == sorted(MARKET1501.names)
    assert MARKET1501.names[0] == "backpack" and MARKET1501.names[-1] == "upyellow"
    assert set(SHARED.names) == set(MARKET1501.names) & set(DUKEMTMC.names)


def test_positive_ratios_from_spec():
    assert MARKET1501.positive_ratios[MARKET1501.index("hat")] == pytest.approx(0.0266)
    assert MARKET1501.positive_ratios[MARKET1501.index("up")] == pytest.approx(0.948)
    assert all(0 < r < 1 for s in (MARKET1501, DUKEMTMC, SHARED) for r in s.positive_ratios)


def test_colour_groups_are_one_hot_groups():
    for schema in (MARKET1501, DUKEMTMC):
        upper = schema.groups["upper_color"]
        assert "up" not in upper and all(n.startswith("up") for n in upper)
        assert set(schema.one_hot_groups) == {"upper_color", "lower_color"}
    assert len(MARKET1501.groups["upper_color"]) == 8
    assert len(MARKET1501.groups["lower_color"]) == 9
    assert MARKET1501.group_of("downpink") == "lower_color"
    assert MARKET1501.group_of("nonexistent") is None


def test_lookup_by_name_width_and_list():
    assert get_schema("market1501") is MARKET1501
    assert get_schema("Duke") is DUKEMTMC
    assert get_schema(None, num_attributes=23) is DUKEMTMC
    assert get_schema(None, num_attributes=18) is SHARED
    generic = get_schema(None, num_attributes=5)
    assert generic.names == ("attr_0", "attr_1", "attr_2", "attr_3", "attr_4")
    assert get_schema(["a", "b"]).names == ("a", "b")
    assert list_schemas() == ["dukemtmc", "market1501", "market1501_age", "shared"]


def test_lookup_errors():
    with pytest.raises(ValueError, match="unknown attribute schema 'cuhk'"):
        get_schema("cuhk")
    with pytest.raises(ValueError, match="width 20 but schema 'market1501' has 26"):
        get_schema("market1501", num_attributes=20)
    with pytest.raises(TypeError, match="attributes must be"):
        get_schema(3.5)
    with pytest.raises(ValueError, match="duplicates"):
        AttributeSchema.from_names(["a", "a"])
    with pytest.raises(KeyError, match="'scarf' is not in schema"):
        MARKET1501.index("scarf")


def test_project_labels_by_name():
    y = torch.zeros(4, 26)
    for n in ("hat", "upred", "downblue"):
        y[:, MARKET1501.index(n)] = 1
    z = project_labels(y, "market1501", "shared")
    assert z.shape == (4, 18)
    assert z.sum().item() == 12
    assert torch.all(z[:, SHARED.index("upred")] == 1)
    back = project_labels(z, SHARED, MARKET1501, fill=0)
    assert torch.equal(back, y)  # every positive here is a shared attribute
    with pytest.raises(ValueError, match="pass `fill`"):
        project_labels(z, SHARED, MARKET1501)
    with pytest.raises(ValueError, match="expected last dimension 26"):
        project_labels(torch.zeros(2, 18), "market1501", "shared")


def test_market_age_schema():
    from reidexplain.attributes import MARKET1501_AGE, MARKET_AGE_CLASSES

    schema = get_schema("market1501_age")
    assert schema is MARKET1501_AGE and len(schema) == 30
    assert schema.names[:26] == MARKET1501.names and schema.names[26:] == MARKET_AGE_CLASSES
    assert schema.groups["age"] == MARKET_AGE_CLASSES and "age" in schema.one_hot_groups
    assert abs(sum(schema.positive_ratios[26:]) - 1.0) < 1e-6
    assert get_schema(None, num_attributes=26) is MARKET1501  # the default stays the 26 attributes
