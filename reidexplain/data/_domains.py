"""Domains ("market", "duke"): schema, cameras, colour palette, and how identities and photos are drawn.

Attribute frequencies follow the schema's positive ratios. Colours are drawn once per person from the
colour group's ratios renormalised to sum to one. A few attributes are correlated with gender as in the
real datasets (long hair, skirts, handbags, boots), with the conditional rates chosen so that the
marginal rate stays the schema's ratio. Fields the schema does not name are identity cues drawn from
``cue_rates``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from reidexplain.attributes import DUKEMTMC, MARKET1501, AttributeSchema
from reidexplain.data._identity import VIEWS, Identity, Nuisance, color_groups, color_name

PALETTE: dict[str, tuple[float, float, float]] = {
    "black": (0.07, 0.07, 0.08),
    "blue": (0.13, 0.26, 0.68),
    "brown": (0.45, 0.28, 0.13),
    "gray": (0.50, 0.50, 0.52),
    "green": (0.16, 0.52, 0.20),
    "pink": (0.95, 0.55, 0.70),
    "purple": (0.46, 0.18, 0.58),
    "red": (0.80, 0.10, 0.10),
    "white": (0.93, 0.93, 0.91),
    "yellow": (0.95, 0.82, 0.15),
}
SKINS = ((0.96, 0.80, 0.69), (0.89, 0.69, 0.55), (0.76, 0.55, 0.40), (0.56, 0.38, 0.26),
         (0.38, 0.25, 0.17))
HAIRS = ((0.06, 0.05, 0.05), (0.22, 0.13, 0.07), (0.42, 0.27, 0.13), (0.80, 0.66, 0.38),
         (0.55, 0.54, 0.52))
OBJECT_COLORS = ((0.10, 0.10, 0.12), (0.38, 0.22, 0.10), (0.12, 0.16, 0.35), (0.45, 0.45, 0.47),
                 (0.60, 0.12, 0.12), (0.62, 0.55, 0.38), (0.15, 0.35, 0.20), (0.85, 0.85, 0.82))

# Multiplier of the female rate over the marginal rate; the male rate is then solved for.
FEMALE_LIFT = {"long_hair": 2.0, "skirt": None, "handbag": 1.5, "boots": 1.6}


@dataclass(frozen=True)
class DomainSpec:
    """What distinguishes two synthetic datasets: vocabulary, cameras, clothing and light statistics."""

    name: str
    code: int
    schema: AttributeSchema
    num_cameras: int
    cue_rates: dict[str, float] = field(default_factory=dict)
    saturation: float = 1.0  # how vivid the clothes are
    gain: tuple[float, float] = (0.9, 1.15)
    cast_warmth: float = 0.04  # > 0: warm (red) cast, < 0: cool (blue)
    walls: tuple[str, ...] = ("brick", "windows", "foliage", "panels")
    grounds: tuple[str, ...] = ("tiles", "asphalt", "grass")
    wall_colors: tuple[tuple[float, float, float], ...] = ()
    ground_colors: tuple[tuple[float, float, float], ...] = ()
    occlusion_prob: float = 0.2


DOMAINS: dict[str, DomainSpec] = {
    "market": DomainSpec(
        name="market", code=1, schema=MARKET1501, num_cameras=6,
        cue_rates={"boots": 0.03, "light_shoes": 0.4, "long_top": 0.02},
        saturation=1.0, gain=(0.95, 1.2), cast_warmth=0.05,
        walls=("brick", "windows", "foliage", "panels"), grounds=("tiles", "asphalt", "grass"),
        wall_colors=((0.72, 0.66, 0.55), (0.62, 0.36, 0.28), (0.55, 0.62, 0.66), (0.80, 0.78, 0.72),
                     (0.35, 0.50, 0.30)),
        ground_colors=((0.58, 0.56, 0.52), (0.42, 0.42, 0.44), (0.66, 0.60, 0.50), (0.35, 0.52, 0.28)),
        occlusion_prob=0.2,
    ),
    "duke": DomainSpec(
        name="duke", code=2, schema=DUKEMTMC, num_cameras=8,
        cue_rates={"long_hair": 0.3, "short_sleeves": 0.15, "short_lower": 0.06, "skirt": 0.06},
        saturation=0.8, gain=(0.7, 0.95), cast_warmth=-0.05,
        walls=("brick", "windows", "trees", "panels"), grounds=("asphalt", "snow", "tiles"),
        wall_colors=((0.50, 0.30, 0.24), (0.45, 0.46, 0.50), (0.30, 0.28, 0.26), (0.66, 0.66, 0.68),
                     (0.38, 0.34, 0.30)),
        ground_colors=((0.30, 0.30, 0.32), (0.85, 0.86, 0.88), (0.48, 0.46, 0.44)),
        occlusion_prob=0.3,
    ),
}
_ALIASES = {"market": "market", "market1501": "market", "duke": "duke", "dukemtmc": "duke",
            "dukemtmc-reid": "duke"}


def get_domain(domain: str) -> DomainSpec:
    """The :class:`DomainSpec` of ``"market"`` or ``"duke"`` (aliases ``market1501``, ``dukemtmc``)."""
    if not isinstance(domain, str) or domain.lower() not in _ALIASES:
        raise ValueError(f"domain: expected 'market' or 'duke', got {domain!r}")
    return DOMAINS[_ALIASES[domain.lower()]]


def rng_for(seed: int, spec: DomainSpec, *keys: int) -> np.random.Generator:
    """An independent generator for (seed, domain, keys...): access order never matters."""
    # What np.random.default_rng(list) builds, without its dispatch (about 4 us less per image).
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), spec.code, *map(int, keys)])))


def _rate(spec: DomainSpec, schema_name: str | None, field_name: str) -> float:
    if schema_name is not None and schema_name in spec.schema:
        return spec.schema.positive_ratios[spec.schema.index(schema_name)]
    return spec.cue_rates.get(field_name, 0.0)


def _given_gender(p: float, p_female: float, lift: float | None, female: bool) -> float:
    """Conditional rate keeping the marginal ``p``; ``lift=None`` means females only."""
    p_f = min(p / max(p_female, 1e-6), 1.0) if lift is None else min(p * lift, 0.97)
    if female:
        return p_f
    return float(np.clip((p - p_female * p_f) / max(1.0 - p_female, 1e-6), 0.0, 1.0))


def _pick(rng: np.random.Generator, options: tuple) -> tuple:
    return options[int(rng.integers(len(options)))]


def _jitter(rng: np.random.Generator, color: tuple, amount: float) -> tuple[float, float, float]:
    out = np.clip(np.asarray(color) * (1.0 + rng.normal(0.0, amount, 3)), 0.0, 1.0)
    return tuple(float(v) for v in out)


def sample_identity(spec: DomainSpec, rng: np.random.Generator, pid: int) -> Identity:
    """Draw one person. The order of draws is fixed: do not reorder (it would change every dataset)."""
    schema = spec.schema
    colors = {}
    for group, members in color_groups(schema).items():
        ratios = np.array([schema.positive_ratios[schema.index(n)] for n in members])
        colors[group] = color_name(members[int(rng.choice(len(members), p=ratios / ratios.sum()))])
    p_female = _rate(spec, "gender", "female")
    female = bool(rng.random() < p_female)

    def draw(schema_name: str | None, field_name: str, invert: bool = False) -> bool:
        p = _rate(spec, schema_name, field_name)
        if invert and schema_name in schema:
            p = 1.0 - p
        if field_name in FEMALE_LIFT:
            p = _given_gender(p, p_female, FEMALE_LIFT[field_name], female)
        return bool(rng.random() < p)

    flags = {
        "long_hair": draw("hair", "long_hair"),
        "skirt": draw("clothes", "skirt", invert=True),
        "short_lower": draw("down", "short_lower"),
        "short_sleeves": draw("up", "short_sleeves"),
        "hat": draw("hat", "hat"),
        "backpack": draw("backpack", "backpack"),
        "shoulder_bag": draw("bag", "shoulder_bag"),
        "handbag": draw("handbag", "handbag"),
        "boots": draw("boots", "boots"),
        "light_shoes": draw("shoes", "light_shoes"),
        "long_top": draw("top", "long_top"),
    }
    height = float(np.clip(rng.normal(0.95 if female else 1.0, 0.035), 0.86, 1.07))
    build = float(np.clip(rng.normal(1.0, 0.06), 0.86, 1.16))
    pattern = ("plain", "stripes", "logo")[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]

    def tint() -> tuple[float, float, float]:
        shade = rng.uniform(0.85, 1.12)
        return tuple(float(v) for v in np.clip(shade * (1.0 + rng.normal(0.0, 0.05, 3)), 0.6, 1.3))

    return Identity(
        pid=int(pid), upper_color=colors["upper_color"], lower_color=colors["lower_color"],
        female=female, **flags,
        height=height, build=build,
        skin=_jitter(rng, _pick(rng, SKINS), 0.03),
        hair_rgb=_jitter(rng, _pick(rng, HAIRS), 0.08),
        shoe_tone=float(rng.random()),
        upper_tint=tint(), lower_tint=tint(),
        pattern=pattern, pattern_rgb=_jitter(rng, _pick(rng, OBJECT_COLORS), 0.1),
        hat_rgb=_jitter(rng, _pick(rng, OBJECT_COLORS), 0.1),
        backpack_rgb=_jitter(rng, _pick(rng, OBJECT_COLORS), 0.1),
        bag_rgb=_jitter(rng, _pick(rng, OBJECT_COLORS), 0.1),
        handbag_rgb=_jitter(rng, _pick(rng, OBJECT_COLORS), 0.1),
        boots_rgb=_jitter(rng, _pick(rng, OBJECT_COLORS[:3]), 0.1),
        carry_side=1 if rng.random() < 0.5 else -1,
    )


@dataclass(frozen=True)
class CameraLook:
    """Fixed properties of one camera of a domain."""

    wall: str
    ground: str
    wall_rgb: tuple[float, float, float]
    ground_rgb: tuple[float, float, float]
    horizon: float
    view_probs: tuple[float, float, float]
    gain: float
    cast: tuple[float, float, float]
    gradient: float
    saturation: float


def camera_look(spec: DomainSpec, camid: int) -> CameraLook:
    """The look of camera ``camid``: depends on the domain and camera only, never on the seed."""
    rng = np.random.default_rng([spec.code, int(camid), 7919])
    view_probs = rng.dirichlet([2.0, 2.0, 1.2])
    warm = spec.cast_warmth + rng.normal(0.0, 0.04)
    cast = np.clip(1.0 + np.array([warm, 0.0, -warm]) + rng.normal(0.0, 0.025, 3), 0.8, 1.2)
    return CameraLook(
        wall=spec.walls[camid % len(spec.walls)],
        ground=spec.grounds[(camid // len(spec.walls) + camid) % len(spec.grounds)],
        wall_rgb=_jitter(rng, spec.wall_colors[camid % len(spec.wall_colors)], 0.08),
        ground_rgb=_jitter(rng, spec.ground_colors[camid % len(spec.ground_colors)], 0.06),
        horizon=float(rng.uniform(0.45, 0.72)),
        view_probs=tuple(float(v) for v in view_probs),
        gain=float(rng.uniform(*spec.gain)),
        cast=tuple(float(v) for v in cast),
        gradient=float(rng.uniform(-0.25, 0.25)),
        saturation=float(rng.uniform(0.75, 1.15)),
    )


@lru_cache(maxsize=256)
def _view_cdf(view_probs: tuple[float, float, float]) -> list[float]:
    """The cumulative view probabilities exactly as ``Generator.choice`` computes them."""
    cdf = np.asarray(view_probs, dtype=np.float64).cumsum()
    cdf /= cdf[-1]
    return cdf.tolist()


def sample_nuisance(spec: DomainSpec, look: CameraLook, camid: int, rng: np.random.Generator,
                    strength: float, occlusion_prob: float) -> Nuisance:
    """Draw the per-image nuisance; every number is drawn even at ``strength=0`` (stable streams)."""
    # rng.choice(3, p=look.view_probs) without its checks: the same single uniform draw and cdf lookup.
    # Consecutive uniform draws are taken as one array: rng.random(n) yields what n rng.random() do.
    first = rng.random(2).tolist()
    view = VIEWS[bisect.bisect_right(_view_cdf(look.view_probs), first[0])]
    mirror = bool(first[1] < 0.5)
    u = rng.uniform(-1.0, 1.0, 6)
    cast = np.asarray(look.cast) * (1.0 + rng.normal(0.0, 0.03, 3) * strength)
    more = rng.random(7)
    occlude = bool(more[0] < occlusion_prob)
    box_kind, box = float(more[1]), more[2:6]
    if box_kind < 0.4:  # something low in front: a bench, a car bonnet, a bush
        y0 = 0.74 + 0.12 * box[0]
        x0 = 0.5 * box[1]
        occluder = (x0, y0, min(1.0, x0 + 0.4 + 0.6 * box[2]), 1.0)
    else:  # something at one side: a pole, a passer-by, a doorframe
        width = 0.18 + 0.22 * box[0]
        y0 = 0.6 * box[1]
        occluder = (0.0, y0, width, 1.0) if box[2] < 0.5 else (1.0 - width, y0, 1.0, 1.0)
    occ_offset, occ_shade = float(more[6]), float(rng.uniform(0.55, 0.9))
    noise_std = float(rng.uniform(0.005, 0.03))
    noise_seed = int(rng.integers(2**31 - 1))
    return Nuisance(
        camid=int(camid),
        view=view if strength > 0 else "front",
        mirror=mirror if strength > 0 else False,
        swing=float(u[0] * min(strength, 1.0)),
        scale=float(1.0 + (0.07 * u[1] - 0.02) * strength),
        shift_x=float(0.09 * u[2] * strength),
        shift_y=float(0.03 * u[3] * strength),
        bg_offset=float(0.5 + 0.5 * u[4]),
        gain=float(look.gain * (1.0 + 0.15 * u[5] * strength)),
        cast=tuple(float(v) for v in cast),
        gradient=float(look.gradient * min(strength, 1.0)),
        saturation=float(1.0 + (look.saturation - 1.0) * min(strength, 1.0)),
        occluder=tuple(float(v) for v in occluder) if (occlude and strength > 0) else None,
        occluder_offset=occ_offset,
        occluder_shade=occ_shade,
        noise_std=noise_std * strength,
        noise_seed=noise_seed,
    )
