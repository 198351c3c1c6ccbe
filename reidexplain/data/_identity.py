"""Who is drawn (:class:`Identity`) and how one photo of them is taken (:class:`Nuisance`).

An identity is a physical description that does not depend on the attribute schema: garment colours and
shapes, carried objects, body shape, plus cues that are not attributes (height, build, skin, hair
colour, pattern, object colours). A schema reads its labels off that description (``labels_of``), and a
counterfactual flips one schema attribute by editing the description (``flip_identity``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from reidexplain.attributes import AttributeSchema

RGB = tuple[float, float, float]

VIEWS = ("front", "back", "side")

# Schema attribute name -> Identity field (colour attributes are handled by their prefix).
FIELD_OF_ATTRIBUTE = {
    "backpack": "backpack",
    "bag": "shoulder_bag",
    "handbag": "handbag",
    "hat": "hat",
    "gender": "female",
    "hair": "long_hair",
    "up": "short_sleeves",
    "down": "short_lower",
    "clothes": "skirt",  # inverted: clothes = 1 means pants
    "boots": "boots",
    "shoes": "light_shoes",
    "top": "long_top",
}
INVERTED = {"clothes"}


@dataclass(frozen=True)
class Identity:
    """The draws that make one synthetic person, shared by all their images.

    Attribute fields (what a schema can label): ``upper_color``, ``lower_color`` (colour names such as
    ``"blue"``), ``short_sleeves``, ``short_lower``, ``skirt``, ``long_hair``, ``hat``, ``backpack``,
    ``shoulder_bag``, ``handbag``, ``female``, ``boots``, ``light_shoes``, ``long_top``. A field the
    domain's schema does not name (``boots`` in Market-1501) is just another identity cue.

    Identity cues that are never attributes: ``height`` and ``build`` (scale factors), ``skin``,
    ``hair_rgb``, ``shoe_tone`` (shade within dark or light shoes), ``upper_tint``/``lower_tint``
    (per-person shade of the garment colour), ``pattern`` (``"plain"``, ``"stripes"``, ``"logo"``) and
    ``pattern_rgb``, the colours of hat, backpack, shoulder bag, handbag and boots, and ``carry_side``
    (+1/-1, the side of the shoulder bag and the handbag).

    Examples:
        >>> from reidexplain.data import SyntheticPersons
        >>> person = SyntheticPersons(2, 1, seed=0).identity(0)
        >>> person.pid, isinstance(person.upper_color, str)
        (0, True)
    """

    pid: int
    upper_color: str
    lower_color: str
    short_sleeves: bool
    short_lower: bool
    skirt: bool
    long_hair: bool
    hat: bool
    backpack: bool
    shoulder_bag: bool
    handbag: bool
    female: bool
    boots: bool
    light_shoes: bool
    long_top: bool
    height: float = 1.0
    build: float = 1.0
    skin: RGB = (0.85, 0.66, 0.52)
    hair_rgb: RGB = (0.12, 0.09, 0.07)
    shoe_tone: float = 0.5
    upper_tint: RGB = (1.0, 1.0, 1.0)
    lower_tint: RGB = (1.0, 1.0, 1.0)
    pattern: str = "plain"
    pattern_rgb: RGB = (0.9, 0.9, 0.9)
    hat_rgb: RGB = (0.2, 0.2, 0.25)
    backpack_rgb: RGB = (0.15, 0.15, 0.18)
    bag_rgb: RGB = (0.35, 0.22, 0.12)
    handbag_rgb: RGB = (0.5, 0.1, 0.1)
    boots_rgb: RGB = (0.2, 0.13, 0.08)
    carry_side: int = 1


@dataclass(frozen=True)
class Nuisance:
    """The per-image draws: camera, view, pose, framing, light, occlusion and noise.

    Attributes:
        camid: Camera index (0-based); selects the background and the camera's light.
        view: ``"front"``, ``"back"`` or ``"side"``.
        mirror: Mirror the person horizontally (walking left instead of right).
        swing: Walking phase in ``[-1, 1]``: arm and leg swing.
        scale: Person size factor; ``shift_x``/``shift_y``: offset as a fraction of the image size.
        bg_offset: Horizontal offset (in ``[0, 1)``) of the crop in the camera's background.
        gain: Brightness gain; ``cast``: per-channel colour gain; ``gradient``: top-to-bottom light
            slope; ``saturation``: camera colour saturation.
        occluder: ``(x0, y0, x1, y1)`` box as fractions of the image, or ``None``; ``occluder_offset``:
            where in the background bank its clutter is cut from; ``occluder_shade``: its darkening.
        noise_std: Standard deviation of the Gaussian pixel noise; ``noise_seed``: its seed, so that
            a counterfactual render carries exactly the same noise.

    Examples:
        >>> from reidexplain.data import SyntheticPersons
        >>> SyntheticPersons(1, 1, seed=0).nuisance(0).view in ("front", "back", "side")
        True
    """

    camid: int
    view: str = "front"
    mirror: bool = False
    swing: float = 0.0
    scale: float = 1.0
    shift_x: float = 0.0
    shift_y: float = 0.0
    bg_offset: float = 0.0
    gain: float = 1.0
    cast: RGB = (1.0, 1.0, 1.0)
    gradient: float = 0.0
    saturation: float = 1.0
    occluder: tuple[float, float, float, float] | None = None
    occluder_offset: float = 0.5
    occluder_shade: float = 0.8
    noise_std: float = 0.0
    noise_seed: int = 0


BOOL_FIELDS = tuple(f.name for f in fields(Identity) if f.type in ("bool", bool))


def color_groups(schema: AttributeSchema) -> dict[str, tuple[str, ...]]:
    """``{"upper_color": names, "lower_color": names}`` of the schema (empty tuples if absent)."""
    return {g: tuple(schema.groups.get(g, ())) for g in ("upper_color", "lower_color")}


def color_name(attribute: str) -> str:
    """``"upblue"`` -> ``"blue"``, ``"downwhite"`` -> ``"white"``."""
    return attribute[2:] if attribute.startswith("up") else attribute[4:]


def field_of(attribute: str, schema: AttributeSchema) -> str:
    """The :class:`Identity` field that schema attribute ``attribute`` reads."""
    groups = color_groups(schema)
    for group, members in groups.items():
        if attribute in members:
            return group
    if attribute in FIELD_OF_ATTRIBUTE:
        return FIELD_OF_ATTRIBUTE[attribute]
    raise ValueError(
        f"attribute {attribute!r} of schema {schema.name!r} has no synthetic rendering; supported: "
        f"{sorted(FIELD_OF_ATTRIBUTE)} and the upper/lower colour groups"
    )


_LABEL_PLANS: dict[tuple, list[tuple[str, str | None, bool]]] = {}


def _label_plan(schema: AttributeSchema) -> list[tuple[str, str | None, bool]]:
    """Per attribute: (identity field, colour name or None, inverted); cached per schema."""
    key = (schema.name, schema.names, tuple(color_groups(schema).items()))
    if key not in _LABEL_PLANS:
        plan = []
        for name in schema.names:
            field = field_of(name, schema)
            color = color_name(name) if field in ("upper_color", "lower_color") else None
            plan.append((field, color, name in INVERTED))
        _LABEL_PLANS[key] = plan
    return _LABEL_PLANS[key]


def labels_of(identity: Identity, schema: AttributeSchema) -> np.ndarray:
    """The 0/1 labels ``(M,)`` (float32) that ``schema`` gives ``identity``."""
    values = []
    for field, color, inverted in _label_plan(schema):
        value = getattr(identity, field)
        values.append(value == color if color is not None else (not value) if inverted else bool(value))
    return np.asarray(values, dtype=np.float32)


def _most_frequent_other(schema: AttributeSchema, members: tuple[str, ...], current: str) -> str:
    ranked = sorted(members, key=lambda n: (-schema.positive_ratios[schema.index(n)], n))
    return next(color_name(n) for n in ranked if color_name(n) != current)


def resolve_flips(flip: str | int | list | tuple | None, schema: AttributeSchema) -> list[str]:
    """Normalise ``flip`` (a name, an index, or a list of them) to a list of attribute names."""
    if flip is None:
        return []
    items = list(flip) if isinstance(flip, (list, tuple)) else [flip]
    names = []
    for item in items:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= int(item) < len(schema):
                raise ValueError(f"flip: attribute index must be in [0, {len(schema)}), got {item}")
            names.append(schema.names[int(item)])
        elif isinstance(item, str):
            if item not in schema:
                raise ValueError(f"flip: unknown attribute {item!r}; schema {schema.name!r} has {schema.names}")
            names.append(item)
        else:
            raise TypeError(f"flip: expected an attribute name or index, got {type(item).__name__}")
    return names


def flip_identity(identity: Identity, schema: AttributeSchema, names: list[str]) -> Identity:
    """Toggle schema attributes ``names`` (in order) on ``identity``.

    A colour attribute that is off is switched on (the garment takes that colour); the current colour
    switched off becomes the group's most frequent other colour (by the schema's positive ratios).
    """
    for name in names:
        field = field_of(name, schema)
        if field in ("upper_color", "lower_color"):
            members = color_groups(schema)[field]
            current = getattr(identity, field)
            target = color_name(name)
            new = _most_frequent_other(schema, members, current) if current == target else target
            identity = replace(identity, **{field: new})
        else:
            identity = replace(identity, **{field: not getattr(identity, field)})
    return identity
