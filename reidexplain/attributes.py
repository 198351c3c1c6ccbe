"""Attribute vocabularies: which semantic attributes an explanation is made of.

An :class:`AttributeSchema` fixes the order of ``M`` binary attributes, their readable labels, the
share of positive identities in the source dataset, and the groups that belong together (the upper-body
colours, the lower-body colours, ...). Three schemas ship with the library, following AMD-SPEC section 8:

* :data:`MARKET1501` (26 attributes, the annotation of Lin et al. without the 4-class age),
* :data:`DUKEMTMC` (23 attributes),
* :data:`SHARED` (the 18 attributes both datasets annotate, for cross-domain runs).

:data:`MARKET1501_AGE` (``"market1501_age"``, M = 30) adds Market-1501's 4-class age as four one-hot
attributes; it is optional, the 26-attribute schema stays the default.

Schemas are looked up by name in :data:`SCHEMAS`, a :class:`~reidexplain.registry.Registry`; add your
own with :func:`register_schema`. A schema is saved and restored exactly with
:meth:`AttributeSchema.to_dict` and :meth:`AttributeSchema.from_dict`.

Examples:
    >>> from reidexplain.attributes import get_schema
    >>> schema = get_schema("market1501")
    >>> len(schema), schema.names[:3]
    (26, ('backpack', 'bag', 'clothes'))
    >>> schema.label("up")
    'short sleeves'
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from reidexplain.registry import Registry, UnknownNameError

__all__ = [
    "AttributeSchema",
    "SCHEMA_FORMAT",
    "SCHEMA_FORMAT_VERSION",
    "SCHEMAS",
    "SchemaInferenceWarning",
    "MARKET1501",
    "MARKET1501_AGE",
    "DUKEMTMC",
    "SHARED",
    "register_schema",
    "get_schema",
    "list_schemas",
    "project_labels",
]

SCHEMA_FORMAT = "reidexplain.AttributeSchema"
"""The ``"format"`` tag of :meth:`AttributeSchema.to_dict`."""
SCHEMA_FORMAT_VERSION = 1
"""Version of :meth:`AttributeSchema.to_dict`; :meth:`AttributeSchema.from_dict` reads it and older ones."""

_FIELDS = ("name", "names", "labels", "positive_ratios", "groups", "one_hot_groups")


class SchemaInferenceWarning(UserWarning):
    """A built-in schema was chosen from the width of the attribute labels alone.

    Pass the schema explicitly (``Explainer(model, attributes="dukemtmc")``) to avoid it, or silence it
    with ``warnings.filterwarnings("ignore", category=SchemaInferenceWarning)``.

    Examples:
        >>> issubclass(SchemaInferenceWarning, UserWarning)
        True
    """


@dataclass(frozen=True)
class AttributeSchema:
    """An ordered vocabulary of binary attributes.

    Args:
        name: Short identifier of the schema (``"market1501"``).
        names: Attribute names in the fixed order used by labels, contributions and maps.
        labels: Readable label per attribute, shown in plots (``"backpack"``, ``"long hair"``).
        positive_ratios: Fraction in ``[0, 1]`` of identities for which the attribute is present.
        groups: Named groups of attributes (for example ``"upper_color"``).
        one_hot_groups: Names of the groups of which every person has exactly one member (a person has
            one upper-body colour). Used by the synthetic data and the optional colour prior.

    Sequences are stored as tuples (of ``str``; ratios as ``float``) and ``groups`` as a ``dict`` of
    tuples, whatever was passed, so that two schemas built from equal values compare equal. Equality
    compares every field; the order of ``groups`` does not matter, that of their members does.

    Examples:
        >>> schema = AttributeSchema("toy", ["hat", "bag"], ["hat", "bag"], [0.1, 0.3])
        >>> schema.index("bag"), schema.names
        (1, ('hat', 'bag'))
    """

    name: str
    names: tuple[str, ...]
    labels: tuple[str, ...]
    positive_ratios: tuple[float, ...]
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    one_hot_groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"AttributeSchema: `name` must be a non-empty string, got {self.name!r}")
        if not isinstance(self.groups, Mapping):
            raise TypeError(f"AttributeSchema: `groups` must be a mapping, got {type(self.groups).__name__}")
        for attr in ("names", "labels", "positive_ratios", "one_hot_groups"):
            if isinstance(getattr(self, attr), str):
                raise TypeError(f"AttributeSchema: `{attr}` must be a sequence, not a string")
        # frozen dataclass: normalise through object.__setattr__
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "labels", tuple(str(n) for n in self.labels))
        object.__setattr__(self, "positive_ratios", tuple(float(r) for r in self.positive_ratios))
        object.__setattr__(self, "groups", {str(g): tuple(str(a) for a in members)
                                            for g, members in self.groups.items()})
        object.__setattr__(self, "one_hot_groups", tuple(str(g) for g in self.one_hot_groups))
        m = len(self.names)
        if m == 0:
            raise ValueError("AttributeSchema: `names` must not be empty")
        if len(set(self.names)) != m:
            raise ValueError(f"AttributeSchema: `names` has duplicates: {self.names}")
        if len(self.labels) != m or len(self.positive_ratios) != m:
            raise ValueError(
                f"AttributeSchema: expected {m} labels and positive_ratios, got "
                f"{len(self.labels)} and {len(self.positive_ratios)}"
            )
        for group, members in self.groups.items():
            unknown = [a for a in members if a not in self.names]
            if unknown:
                raise ValueError(f"AttributeSchema: group {group!r} names unknown attributes {unknown}")
        for group in self.one_hot_groups:
            if group not in self.groups:
                raise ValueError(f"AttributeSchema: one-hot group {group!r} is not in `groups`")

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def index(self, name: str) -> int:
        """Position of attribute ``name`` in the schema order."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"attribute {name!r} is not in schema {self.name!r}: {self.names}") from None

    def label(self, name: str) -> str:
        """Readable label of attribute ``name``."""
        return self.labels[self.index(name)]

    def group_of(self, name: str) -> str | None:
        """The group attribute ``name`` belongs to, or ``None``."""
        for group, members in self.groups.items():
            if name in members:
                return group
        return None

    def ratios(self) -> torch.Tensor:
        """Positive ratios as a float tensor of shape ``(M,)``."""
        return torch.tensor(self.positive_ratios, dtype=torch.float32)

    def to_dict(self) -> dict[str, Any]:
        """Everything that defines the schema, as plain lists, strings and floats (JSON and
        ``torch.load(weights_only=True)`` safe), tagged with a format name and version.

        Returns:
            ``{"format", "version", "name", "names", "labels", "positive_ratios", "groups",
            "one_hot_groups"}``; ``groups`` maps each group to the list of its members, in order.

        Examples:
            >>> schema = AttributeSchema("toy", ("hat", "bag"), ("hat", "bag"), (0.1, 0.3),
            ...                          groups={"carried": ("bag",)})
            >>> d = schema.to_dict()
            >>> d["version"], d["groups"]
            (1, {'carried': ['bag']})
            >>> AttributeSchema.from_dict(d) == schema
            True
        """
        return {
            "format": SCHEMA_FORMAT,
            "version": SCHEMA_FORMAT_VERSION,
            "name": self.name,
            "names": list(self.names),
            "labels": list(self.labels),
            "positive_ratios": list(self.positive_ratios),
            "groups": {g: list(members) for g, members in self.groups.items()},
            "one_hot_groups": list(self.one_hot_groups),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttributeSchema:
        """Rebuild a schema from :meth:`to_dict`: ``from_dict(s.to_dict()) == s`` for every schema.

        Also reads the version-less dict that ``Explainer.save`` wrote before schemas had a format
        (``name``, ``names``, ``labels``, ``positive_ratios`` only): if a registered schema has that
        name and those exact names, labels and ratios, that schema (with its groups) is returned,
        otherwise a schema without groups.

        Args:
            data: The mapping written by :meth:`to_dict`.

        Returns:
            The schema.

        Raises:
            TypeError: ``data`` is not a mapping.
            ValueError: Another format, a version newer than :data:`SCHEMA_FORMAT_VERSION`, missing or
                unknown fields, or values that do not make a valid schema.

        Examples:
            >>> AttributeSchema.from_dict(MARKET1501.to_dict()) == MARKET1501
            True
            >>> AttributeSchema.from_dict({"version": 99})
            Traceback (most recent call last):
            ...
            ValueError: AttributeSchema.from_dict: format version 99 is newer than this reidexplain reads (1); upgrade reidexplain
        """
        where = "AttributeSchema.from_dict"
        if not isinstance(data, Mapping):
            raise TypeError(f"{where}: expected a mapping, got {type(data).__name__}")
        if "version" not in data:
            return cls._from_legacy_dict(data)
        fmt, version = data.get("format", SCHEMA_FORMAT), data["version"]
        if fmt != SCHEMA_FORMAT:
            raise ValueError(f"{where}: expected format {SCHEMA_FORMAT!r}, got {fmt!r}")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ValueError(f"{where}: format version must be an int >= 1, got {version!r}")
        if version > SCHEMA_FORMAT_VERSION:
            raise ValueError(f"{where}: format version {version} is newer than this reidexplain reads "
                             f"({SCHEMA_FORMAT_VERSION}); upgrade reidexplain")
        fields = {k: v for k, v in data.items() if k not in ("format", "version")}
        missing = [k for k in _FIELDS if k not in fields]
        unknown = sorted(set(fields) - set(_FIELDS))
        if missing or unknown:
            raise ValueError(f"{where}: version {version} needs the fields {list(_FIELDS)}; "
                             f"missing {missing}, unknown {unknown}")
        if not isinstance(fields["groups"], Mapping):
            raise ValueError(f"{where}: `groups` must be a mapping, got {type(fields['groups']).__name__}")
        try:
            return cls(**fields)
        except TypeError as err:
            raise ValueError(f"{where}: {err}") from None

    @classmethod
    def _from_legacy_dict(cls, data: Mapping[str, Any]) -> AttributeSchema:
        legacy = ("name", "names", "labels", "positive_ratios")
        missing = [k for k in legacy if k not in data]
        if missing:
            raise ValueError(f"AttributeSchema.from_dict: no `version` and not a version-less schema "
                             f"either (missing {missing})")
        schema = cls(**{k: data[k] for k in legacy})
        key = schema.name.lower()
        if key in SCHEMAS:
            known = SCHEMAS.get(key)
            if (known.name, known.names, known.labels, known.positive_ratios) == (
                    schema.name, schema.names, schema.labels, schema.positive_ratios):
                return known
        return schema

    @classmethod
    def generic(cls, num_attributes: int) -> AttributeSchema:
        """A schema of ``num_attributes`` unnamed attributes (``attr_0``, ``attr_1``, ...)."""
        if num_attributes < 1:
            raise ValueError(f"num_attributes must be >= 1, got {num_attributes}")
        names = tuple(f"attr_{i}" for i in range(num_attributes))
        return cls(f"generic{num_attributes}", names, names, tuple([0.5] * num_attributes))

    @classmethod
    def from_names(cls, names: Sequence[str], name: str = "custom") -> AttributeSchema:
        """A schema from a list of attribute names; labels equal names, ratios unknown (0.5)."""
        names = tuple(str(n) for n in names)
        return cls(name, names, names, tuple([0.5] * len(names)))


def _schema(name: str, rows: Sequence[tuple[str, str, float]], groups: dict[str, tuple[str, ...]],
            one_hot: tuple[str, ...]) -> AttributeSchema:
    return AttributeSchema(
        name=name,
        names=tuple(r[0] for r in rows),
        labels=tuple(r[1] for r in rows),
        positive_ratios=tuple(r[2] / 100.0 for r in rows),
        groups=groups,
        one_hot_groups=one_hot,
    )


# Market-1501 (Lin et al.), alphabetical order of the annotation file. Ratios: share of positive
# identities (AMD-SPEC section 8). For the two-valued attributes the annotation stores 1/2 and "2" is
# the positive class: up = short sleeves, down = short lower-body clothing, clothes = pants (vs dress
# or skirt), hair = long hair, gender = female.
_MARKET_ROWS = [
    ("backpack", "backpack", 26.5),
    ("bag", "shoulder bag", 24.6),
    ("clothes", "pants (not dress/skirt)", 85.4),
    ("down", "short lower-body clothing", 60.9),
    ("downblack", "lower black", 39.0),
    ("downblue", "lower blue", 16.4),
    ("downbrown", "lower brown", 9.19),
    ("downgray", "lower gray", 16.4),
    ("downgreen", "lower green", 1.86),
    ("downpink", "lower pink", 3.86),
    ("downpurple", "lower purple", 0.27),
    ("downwhite", "lower white", 7.72),
    ("downyellow", "lower yellow", 1.33),
    ("gender", "female", 42.6),
    ("hair", "long hair", 32.6),
    ("handbag", "handbag", 11.5),
    ("hat", "hat", 2.66),
    ("up", "short sleeves", 94.8),
    ("upblack", "upper black", 15.0),
    ("upblue", "upper blue", 6.13),
    ("upgray", "upper gray", 11.5),
    ("upgreen", "upper green", 7.46),
    ("uppurple", "upper purple", 3.99),
    ("upred", "upper red", 10.4),
    ("upwhite", "upper white", 30.4),
    ("upyellow", "upper yellow", 4.79),
]

# DukeMTMC-reID (23 attributes). The spec lists names only; the ratios below are our estimates of the
# published annotation statistics (a winter dataset: dark clothes, long tops, boots) and are used only
# to draw synthetic persons. Positive classes: boots = wears boots, shoes = light shoes,
# top = long upper-body clothing (coat), gender = female.
_DUKE_ROWS = [
    ("backpack", "backpack", 38.0),
    ("bag", "shoulder bag", 15.0),
    ("boots", "boots", 22.0),
    ("downblack", "lower black", 52.0),
    ("downblue", "lower blue", 26.0),
    ("downbrown", "lower brown", 4.0),
    ("downgray", "lower gray", 8.0),
    ("downgreen", "lower green", 1.5),
    ("downred", "lower red", 2.5),
    ("downwhite", "lower white", 6.0),
    ("gender", "female", 36.0),
    ("handbag", "handbag", 6.0),
    ("hat", "hat", 11.0),
    ("shoes", "light shoes", 20.0),
    ("top", "long top", 12.0),
    ("upblack", "upper black", 44.0),
    ("upblue", "upper blue", 8.0),
    ("upbrown", "upper brown", 6.0),
    ("upgray", "upper gray", 13.0),
    ("upgreen", "upper green", 3.0),
    ("uppurple", "upper purple", 1.0),
    ("upred", "upper red", 7.0),
    ("upwhite", "upper white", 18.0),
]

_SHARED_NAMES = (
    "backpack", "bag", "downblack", "downblue", "downbrown", "downgray", "downgreen", "downwhite",
    "gender", "handbag", "hat", "upblack", "upblue", "upgray", "upgreen", "uppurple", "upred", "upwhite",
)


def _color_groups(names: Sequence[str]) -> dict[str, tuple[str, ...]]:
    upper = tuple(n for n in names if n.startswith("up") and n != "up")
    lower = tuple(n for n in names if n.startswith("down") and n != "down")
    return {"upper_color": upper, "lower_color": lower}


def _market() -> AttributeSchema:
    names = [r[0] for r in _MARKET_ROWS]
    groups = _color_groups(names)
    groups.update(
        carried=("backpack", "bag", "handbag"),
        body=("gender", "hair", "hat"),
        garment_shape=("up", "down", "clothes"),
    )
    return _schema("market1501", _MARKET_ROWS, groups, ("upper_color", "lower_color"))


def _duke() -> AttributeSchema:
    names = [r[0] for r in _DUKE_ROWS]
    groups = _color_groups(names)
    groups.update(
        carried=("backpack", "bag", "handbag"),
        body=("gender", "hat"),
        garment_shape=("top", "boots", "shoes"),
    )
    return _schema("dukemtmc", _DUKE_ROWS, groups, ("upper_color", "lower_color"))


def _shared() -> AttributeSchema:
    market = dict((r[0], r) for r in _MARKET_ROWS)
    rows = [market[n] for n in _SHARED_NAMES]
    groups = _color_groups(_SHARED_NAMES)
    groups.update(carried=("backpack", "bag", "handbag"), body=("gender", "hat"))
    # Not one-hot: a person whose colour only the full schemas name (upper yellow) has none here.
    return _schema("shared", rows, groups, ())


MARKET1501: AttributeSchema = _market()
"""Market-1501 attribute schema (M = 26)."""

# Market-1501's `age` field (1 young, 2 teenager, 3 adult, 4 old) as one one-hot group, after the 26
# attributes. Ratios: rough estimates of the annotation's class shares (most identities are teenagers
# or adults), used only to draw synthetic persons.
MARKET_AGE_CLASSES: tuple[str, ...] = ("age_young", "age_teenager", "age_adult", "age_old")
"""Names of the four age attributes of :data:`MARKET1501_AGE`, in the order of the file's codes 1..4."""
_MARKET_AGE_ROWS = [
    ("age_young", "young (child)", 1.0),
    ("age_teenager", "teenager", 70.0),
    ("age_adult", "adult", 27.0),
    ("age_old", "old", 2.0),
]


def _market_age() -> AttributeSchema:
    groups = dict(MARKET1501.groups, age=MARKET_AGE_CLASSES)
    return _schema("market1501_age", _MARKET_ROWS + _MARKET_AGE_ROWS, groups,
                   (*MARKET1501.one_hot_groups, "age"))


MARKET1501_AGE: AttributeSchema = _market_age()
"""Market-1501 with its 4-class age as four one-hot attributes (M = 30, the 26 of MARKET1501 first)."""
DUKEMTMC: AttributeSchema = _duke()
"""DukeMTMC-reID attribute schema (M = 23)."""
SHARED: AttributeSchema = _shared()
"""The 18 attributes shared by Market-1501 and DukeMTMC-reID, for cross-domain runs."""

SCHEMAS: Registry[AttributeSchema] = Registry("attribute schema")
"""The schemas :func:`get_schema` knows by name: one entry per canonical name (metadata ``aliases``)
and one per alias (metadata ``alias_of``). Keys are lower-case; look-ups ignore case."""


def register_schema(schema: AttributeSchema, aliases: Iterable[str] = (), *,
                    override: bool = False) -> AttributeSchema:
    """Make ``schema`` known to :func:`get_schema` (and so to ``Explainer(attributes=...)``) by name.

    The schema is registered under ``schema.name`` and each alias, all lower-cased (names are
    case-insensitive). Either every name is registered or, on a clash, none.

    Args:
        schema: The schema.
        aliases: Other names for it (``("market",)`` for ``"market1501"``).
        override: Replace the entries of names that are already taken instead of raising.

    Returns:
        ``schema``, unchanged.

    Raises:
        TypeError: ``schema`` is not an :class:`AttributeSchema`, or ``aliases`` is a single string.
        ValueError: A name is taken by another schema (and ``override`` is false), or empty.

    Examples:
        >>> toy = AttributeSchema.from_names(["hat", "scarf"], name="toy")
        >>> _ = register_schema(toy, aliases=["toy-v1"])
        >>> get_schema("TOY-v1") is toy, "toy" in list_schemas()
        (True, True)
        >>> _ = SCHEMAS.unregister("toy"), SCHEMAS.unregister("toy-v1")  # leave nothing behind
        >>> "toy" in list_schemas()
        False
    """
    if not isinstance(schema, AttributeSchema):
        raise TypeError(f"register_schema: expected an AttributeSchema, got {type(schema).__name__}")
    if isinstance(aliases, str):
        raise TypeError(f"register_schema: `aliases` must be a list of names, got the string {aliases!r}")
    canonical = schema.name.lower()
    others: list[str] = []
    for alias in aliases:
        if not isinstance(alias, str) or not alias:
            raise ValueError(f"register_schema: aliases must be non-empty strings, got {alias!r}")
        key = alias.lower()
        if key != canonical and key not in others:
            others.append(key)
    if not override:
        taken = [k for k in (canonical, *others) if k in SCHEMAS and SCHEMAS.get(k) is not schema]
        if taken:
            raise ValueError(f"register_schema: the names {taken} are already registered to other "
                             "schemas (pass override=True to replace them)")
    SCHEMAS.register(canonical, schema, override=True, aliases=tuple(others))
    for key in others:
        SCHEMAS.register(key, schema, override=True, alias_of=canonical)
    return schema


register_schema(MARKET1501, aliases=("market",))
register_schema(DUKEMTMC, aliases=("duke", "dukemtmc-reid"))
register_schema(SHARED)
register_schema(MARKET1501_AGE)

# The widths from which get_schema(None, num_attributes=...) infers a built-in schema (with a warning).
_INFERRED_FROM_WIDTH = {26: "market1501", 23: "dukemtmc", 18: "shared"}


def list_schemas() -> list[str]:
    """Canonical names of the registered schemas (aliases left out), sorted.

    Examples:
        >>> list_schemas()
        ['dukemtmc', 'market1501', 'market1501_age', 'shared']
    """
    return sorted(e.name for e in SCHEMAS.entries() if "alias_of" not in e.metadata)


def _infer_from_width(width: int) -> AttributeSchema:
    name = _INFERRED_FROM_WIDTH.get(width)
    schema = SCHEMAS.get(name) if name is not None and name in SCHEMAS else None
    if schema is None or len(schema) != width:
        return AttributeSchema.generic(width)
    warnings.warn(
        f"attribute labels of width {width} were taken to be the built-in {schema.name!r} schema from "
        f"their width alone; pass attributes={schema.name!r} (or your own AttributeSchema or list of "
        "names) to say which attributes they are and silence this warning",
        SchemaInferenceWarning,
        stacklevel=3,
    )
    return schema


def get_schema(
    spec: str | AttributeSchema | Sequence[str] | None = None, num_attributes: int | None = None
) -> AttributeSchema:
    """Resolve a schema from a name, a schema, a list of attribute names, or a width.

    Args:
        spec: ``"market1501"``/``"market"``, ``"dukemtmc"``/``"duke"``, ``"shared"``, an
            :class:`AttributeSchema`, a list of names, or ``None`` to infer from ``num_attributes``.
        num_attributes: Label width. With another ``spec``, checked against its width. With
            ``spec=None`` the schema is inferred from the width alone: 26, 23 and 18 give the built-in
            :data:`MARKET1501`, :data:`DUKEMTMC` and :data:`SHARED` schemas **with a**
            :class:`SchemaInferenceWarning` (a width says nothing about what the labels mean: any
            23-wide labels would be read as DukeMTMC attributes), any other width gives generic names
            ``attr_0, attr_1, ...`` (which claim no meaning, so without a warning). Pass ``spec`` to
            choose the schema and avoid the inference.

    Returns:
        The schema.

    Raises:
        ValueError: Unknown name (an :class:`~reidexplain.registry.UnknownNameError`), or a width that
            does not match the schema.

    Examples:
        >>> get_schema("shared", num_attributes=18).name
        'shared'
        >>> get_schema(None, num_attributes=4).names
        ('attr_0', 'attr_1', 'attr_2', 'attr_3')
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     inferred = get_schema(None, num_attributes=23)
        >>> inferred.name, caught[0].category.__name__
        ('dukemtmc', 'SchemaInferenceWarning')
        >>> get_schema(["hat", "bag"]).names
        ('hat', 'bag')
    """
    if spec is None:
        if num_attributes is None:
            raise ValueError("get_schema: give `spec` or `num_attributes`")
        schema = _infer_from_width(int(num_attributes))
    elif isinstance(spec, AttributeSchema):
        schema = spec
    elif isinstance(spec, str):
        key = spec.lower()
        if key not in SCHEMAS:
            raise UnknownNameError(f"unknown attribute schema {spec!r}; expected one of {list_schemas()}")
        schema = SCHEMAS.get(key)
    elif isinstance(spec, Sequence):
        schema = AttributeSchema.from_names(spec)
    else:
        raise TypeError(
            f"attributes must be None, a schema name, an AttributeSchema or a list of names, "
            f"got {type(spec).__name__}"
        )
    if num_attributes is not None and len(schema) != int(num_attributes):
        raise ValueError(
            f"attribute labels have width {num_attributes} but schema {schema.name!r} has "
            f"{len(schema)} attributes"
        )
    return schema


def project_labels(
    labels: torch.Tensor,
    source: str | AttributeSchema,
    target: str | AttributeSchema,
    fill: float | None = None,
) -> torch.Tensor:
    """Re-express attribute labels of one schema in another, matching attributes by name.

    Args:
        labels: ``(..., M_source)`` labels in the order of ``source``.
        source: Schema of ``labels``.
        target: Schema to project onto.
        fill: Value for target attributes that ``source`` lacks. ``None`` (default) raises instead.

    Returns:
        ``(..., M_target)`` tensor of the same dtype.

    Raises:
        ValueError: Width mismatch, or a target attribute missing from ``source`` with ``fill=None``.

    Examples:
        >>> import torch
        >>> y = torch.zeros(26); y[MARKET1501.index("hat")] = 1
        >>> z = project_labels(y, "market1501", "shared")
        >>> z.shape, int(z[SHARED.index("hat")])
        (torch.Size([18]), 1)
    """
    src, tgt = get_schema(source), get_schema(target)
    if labels.shape[-1] != len(src):
        raise ValueError(
            f"labels: expected last dimension {len(src)} (schema {src.name!r}), got {labels.shape[-1]}"
        )
    missing = [n for n in tgt.names if n not in src]
    if missing and fill is None:
        raise ValueError(
            f"schema {src.name!r} has no attributes {missing} of {tgt.name!r}; pass `fill` to use a default"
        )
    out = torch.full((*labels.shape[:-1], len(tgt)), float(fill or 0), dtype=labels.dtype,
                     device=labels.device)
    for j, name in enumerate(tgt.names):
        if name in src:
            out[..., j] = labels[..., src.index(name)]
    return out
