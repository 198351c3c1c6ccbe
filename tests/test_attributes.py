import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reidexplain.attributes import (
    DUKEMTMC,
    MARKET1501,
    SCHEMA_FORMAT_VERSION,
    SCHEMAS,
    SHARED,
    AttributeSchema,
    SchemaInferenceWarning,
    get_schema,
    list_schemas,
    project_labels,
    register_schema,
)
from reidexplain.registry import UnknownNameError


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
    with pytest.warns(SchemaInferenceWarning, match="width 23.*'dukemtmc'"):
        assert get_schema(None, num_attributes=23) is DUKEMTMC
    with pytest.warns(SchemaInferenceWarning, match="width 18.*'shared'"):
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
    assert z.sum().item() == pytest.approx(12.0, abs=1e-6)
    assert torch.all(z[:, SHARED.index("upred")] == 1)
    back = project_labels(z, SHARED, MARKET1501, fill=0)
    assert torch.equal(back, y)  # every positive here is a shared attribute
    with pytest.raises(ValueError, match="pass `fill`"):
        project_labels(z, SHARED, MARKET1501)
    with pytest.raises(ValueError, match="expected last dimension 26"):
        project_labels(torch.zeros(2, 18), "market1501", "shared")


# ---------------------------------------------------------------- width inference


@pytest.mark.parametrize(("width", "schema"), [(26, MARKET1501), (23, DUKEMTMC), (18, SHARED)])
def test_inferring_a_builtin_schema_from_the_width_warns_and_names_the_way_out(width, schema):
    with pytest.warns(SchemaInferenceWarning) as caught:
        assert get_schema(None, num_attributes=width) is schema
    message = str(caught[0].message)
    assert f"width {width}" in message and f"attributes={schema.name!r}" in message
    assert issubclass(SchemaInferenceWarning, UserWarning)


def test_explainer_fit_warns_when_it_infers_a_builtin_schema():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from helpers import amd_batches, amd_sequential_net

    from reidexplain.explainer import Explainer

    data = amd_batches(num_attributes=23, num_ids=2, per_id=2, batch_size=4)
    with pytest.warns(SchemaInferenceWarning, match="attributes='dukemtmc'"):
        inferred = Explainer(amd_sequential_net()).fit(data, epochs=1, progress=False)
    assert inferred.schema is DUKEMTMC
    with warnings.catch_warnings():
        warnings.simplefilter("error", SchemaInferenceWarning)
        explicit = Explainer(amd_sequential_net(), attributes="dukemtmc").fit(data, epochs=1, progress=False)
    assert explicit.schema is DUKEMTMC


def test_explicit_or_generic_schemas_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_schema("dukemtmc", num_attributes=23) is DUKEMTMC
        assert get_schema(DUKEMTMC, num_attributes=23) is DUKEMTMC
        assert get_schema(None, num_attributes=7).name == "generic7"  # claims no meaning


def test_inference_warning_can_be_silenced_by_category():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", category=SchemaInferenceWarning)
        assert get_schema(None, num_attributes=26) is MARKET1501


# ---------------------------------------------------------------- the registry


@pytest.fixture
def toy_schema() -> Iterator[AttributeSchema]:
    """A schema registered as ``toy`` (alias ``toy-v1``) for one test, then removed."""
    schema = AttributeSchema("Toy", ("hat", "scarf", "bag"), ("hat", "scarf", "bag"), (0.1, 0.2, 0.3),
                             groups={"worn": ("hat", "scarf")})
    register_schema(schema, aliases=["toy-v1"])
    yield schema
    for name in ("toy", "toy-v1"):
        if name in SCHEMAS:
            SCHEMAS.unregister(name)


def test_register_schema_makes_a_schema_known_by_name_and_alias(toy_schema):
    assert get_schema("toy") is toy_schema and get_schema("TOY-V1") is toy_schema
    assert "toy" in list_schemas() and "toy-v1" not in list_schemas()
    assert SCHEMAS.entry("toy").metadata["aliases"] == ("toy-v1",)
    assert SCHEMAS.entry("toy-v1").metadata["alias_of"] == "toy"
    register_schema(toy_schema, aliases=["toy-v1"])  # the same schema again is harmless


def test_register_schema_clash_registers_nothing(toy_schema):
    other = AttributeSchema.from_names(["a"], name="other")
    with pytest.raises(ValueError, match=r"\['toy'\] are already registered"):
        register_schema(other, aliases=["toy", "fresh-alias"])
    assert "other" not in SCHEMAS and "fresh-alias" not in SCHEMAS
    try:
        register_schema(other, aliases=["toy"], override=True)
        assert get_schema("toy") is other and get_schema("toy-v1") is toy_schema
    finally:
        SCHEMAS.unregister("other")


def test_register_schema_argument_errors():
    with pytest.raises(TypeError, match="AttributeSchema"):
        register_schema(["hat"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="list of names"):
        register_schema(AttributeSchema.from_names(["a"], name="x"), aliases="xx")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty"):
        register_schema(AttributeSchema.from_names(["a"], name="x"), aliases=[""])
    assert "x" not in SCHEMAS


def test_unknown_schema_is_an_unknown_name_error():
    with pytest.raises(UnknownNameError, match="expected one of"):
        get_schema("cuhk03")


def test_builtin_registry_is_unchanged_by_the_tests():
    assert list_schemas() == ["dukemtmc", "market1501", "market1501_age", "shared"]
    assert SCHEMAS.names() == ["duke", "dukemtmc", "dukemtmc-reid", "market", "market1501", "market1501_age",
                               "shared"]


# ---------------------------------------------------------------- serialisation


def _generic_with_groups() -> AttributeSchema:
    names = ("a", "b", "c", "d")
    return AttributeSchema("custom", names, ("A", "B", "C", "D"), (0.125, 0.5, 0.0, 1.0),
                           groups={"first": ("b", "a"), "second": ("c",)}, one_hot_groups=("first",))


@pytest.mark.parametrize(
    "schema", [MARKET1501, DUKEMTMC, SHARED, AttributeSchema.generic(5), _generic_with_groups()],
    ids=["market1501", "dukemtmc", "shared", "generic5", "custom"],
)
def test_to_dict_from_dict_round_trips_exactly(schema: AttributeSchema, tmp_path: Path):
    data = schema.to_dict()
    assert data["version"] == SCHEMA_FORMAT_VERSION
    restored = AttributeSchema.from_dict(data)
    assert restored == schema
    assert list(restored.groups) == list(schema.groups)  # group order kept too
    # Through JSON and through torch.save(weights_only=True), as a checkpoint stores it.
    assert AttributeSchema.from_dict(json.loads(json.dumps(data))) == schema
    torch.save({"schema": data}, tmp_path / "schema.pt")
    loaded = torch.load(tmp_path / "schema.pt", weights_only=True)["schema"]
    assert AttributeSchema.from_dict(loaded) == schema


def test_equality_sees_every_field():
    base = _generic_with_groups()
    d = base.to_dict()
    variants = [
        dict(d, name="other"),
        dict(d, labels=["A", "B", "C", "X"]),
        dict(d, positive_ratios=[0.125, 0.5, 0.0, 0.9]),
        dict(d, groups={"first": ["b", "a"]}, one_hot_groups=["first"]),
        dict(d, groups={"first": ["a", "b"], "second": ["c"]}),
        dict(d, one_hot_groups=[]),
    ]
    for variant in variants:
        assert AttributeSchema.from_dict(variant) != base


def test_sequences_are_normalised_so_equal_values_compare_equal():
    as_lists = AttributeSchema("s", ["a", "b"], ["a", "b"], [0.5, 1], groups={"g": ["a"]})
    as_tuples = AttributeSchema("s", ("a", "b"), ("a", "b"), (0.5, 1.0), groups={"g": ("a",)})
    assert as_lists == as_tuples and isinstance(as_lists.groups["g"], tuple)


_attribute_names = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                           min_size=1, max_size=12)


@st.composite
def _schemas(draw) -> AttributeSchema:
    names = draw(st.lists(_attribute_names, min_size=1, max_size=8, unique=True))
    labels = draw(st.lists(st.text(max_size=12), min_size=len(names), max_size=len(names)))
    ratios = draw(st.lists(st.floats(0.0, 1.0), min_size=len(names), max_size=len(names)))
    group_names = draw(st.lists(_attribute_names, max_size=3, unique=True))
    groups = {g: tuple(draw(st.lists(st.sampled_from(names), max_size=4, unique=True))) for g in group_names}
    one_hot = tuple(draw(st.lists(st.sampled_from(group_names), unique=True))) if group_names else ()
    return AttributeSchema(draw(_attribute_names), tuple(names), tuple(labels), tuple(ratios), groups,
                           one_hot)


@settings(max_examples=60, deadline=None)
@given(_schemas())
def test_round_trip_property(schema: AttributeSchema):
    assert AttributeSchema.from_dict(schema.to_dict()) == schema
    assert AttributeSchema.from_dict(json.loads(json.dumps(schema.to_dict()))) == schema


def test_legacy_version_less_dict_recovers_the_registered_schema():
    # What Explainer.save wrote before schemas had a format: no groups.
    legacy = {"name": MARKET1501.name, "names": list(MARKET1501.names),
              "labels": list(MARKET1501.labels), "positive_ratios": list(MARKET1501.positive_ratios)}
    assert AttributeSchema.from_dict(legacy) is MARKET1501
    custom = dict(legacy, name="mine")
    restored = AttributeSchema.from_dict(custom)
    assert restored.names == MARKET1501.names and restored.groups == {} and restored.name == "mine"
    changed = dict(legacy, labels=[*legacy["labels"][:-1], "yellow top"])
    assert AttributeSchema.from_dict(changed).groups == {}


def test_from_dict_errors():
    d = SHARED.to_dict()
    with pytest.raises(TypeError, match="mapping"):
        AttributeSchema.from_dict([("name", "x")])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="format version 2 is newer"):
        AttributeSchema.from_dict(dict(d, version=2))
    with pytest.raises(ValueError, match="version must be an int"):
        AttributeSchema.from_dict(dict(d, version="1"))
    with pytest.raises(ValueError, match="expected format"):
        AttributeSchema.from_dict(dict(d, format="something.else"))
    with pytest.raises(ValueError, match=r"missing \['groups'\]"):
        AttributeSchema.from_dict({k: v for k, v in d.items() if k != "groups"})
    with pytest.raises(ValueError, match=r"unknown \['colour'\]"):
        AttributeSchema.from_dict(dict(d, colour="red"))
    with pytest.raises(ValueError, match="missing"):
        AttributeSchema.from_dict({"name": "x"})
    with pytest.raises(ValueError, match="one-hot group 'nope'"):
        AttributeSchema.from_dict(dict(d, one_hot_groups=["nope"]))


def test_market_age_schema():
    from reidexplain.attributes import MARKET1501_AGE, MARKET_AGE_CLASSES

    schema = get_schema("market1501_age")
    assert schema is MARKET1501_AGE and len(schema) == 30
    assert schema.names[:26] == MARKET1501.names and schema.names[26:] == MARKET_AGE_CLASSES
    assert schema.groups["age"] == MARKET_AGE_CLASSES and "age" in schema.one_hot_groups
    assert abs(sum(schema.positive_ratios[26:]) - 1.0) < 1e-6
    with pytest.warns(UserWarning, match="market1501"):
        assert get_schema(None, num_attributes=26) is MARKET1501  # the default stays the 26 attributes
