"""Drawing one pedestrian from an :class:`Identity` and a :class:`Nuisance`.

Body geometry is written in body units (0 = top of the head, 1 = soles, x = 0 the body axis, +x the
side the person faces in side view) and mapped to pixels by the nuisance's scale, shift and mirror.
Every shape declares the identity fields it depends on (``deps``: geometry or colour) and the values it
needs to exist (``needs``); the canvas turns these into masks (see ``_canvas.py``). The draw order is
fixed and never depends on an attribute, which is what makes a counterfactual render change pixels only
inside the flipped attribute's masks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

from reidexplain.attributes import AttributeSchema
from reidexplain.data._canvas import Canvas, Shape
from reidexplain.data._domains import PALETTE
from reidexplain.data._identity import Identity, Nuisance, field_of


class MaskTags:
    """Mask indices (schema positions) of each :class:`Identity` field, for one schema."""

    def __init__(self, schema: AttributeSchema) -> None:
        index: dict[str, list[int]] = {}
        for k, name in enumerate(schema.names):
            index.setdefault(field_of(name, schema), []).append(k)
        self._index = index
        self._cache: dict[tuple[str, ...], int] = {}
        self._put_cache: dict[tuple[tuple[str, ...], tuple[tuple[str, bool], ...]], int] = {}

    def of(self, fields: Sequence[str]) -> int:
        """Mask bits of the schema attributes that read any of ``fields``."""
        key = tuple(fields)
        if key not in self._cache:
            value = 0
            for k in (k for f in key for k in self._index.get(f, ())):
                value |= 1 << k
            self._cache[key] = value
        return self._cache[key]

    def of_shape(self, deps: tuple[str, ...], needs: tuple[tuple[str, bool], ...]) -> int:
        """Mask bits of a shape that reads ``deps`` and exists for the values ``needs``."""
        value = self._put_cache.get((deps, needs))
        if value is None:
            value = self._put_cache[deps, needs] = self.of(tuple(deps) + tuple(f for f, _ in needs))
        return value


@lru_cache(maxsize=4096)
def _garment_rgb(name: str, tint: tuple[float, ...], saturation: float) -> np.ndarray:
    color = garment_rgb(name, tint, saturation)
    color.setflags(write=False)
    return color


def garment_rgb(name: str, tint: Sequence[float], saturation: float) -> np.ndarray:
    color = np.clip(np.asarray(PALETTE[name]) * np.asarray(tint), 0.0, 1.0)
    gray = color.mean()
    return np.clip(gray + saturation * (color - gray), 0.0, 1.0)


def shoe_rgb(ident: Identity) -> tuple[float, float, float]:
    t = ident.shoe_tone
    if ident.light_shoes:
        return 0.80 + 0.15 * t, 0.80 + 0.13 * t, 0.78 + 0.10 * t
    return 0.07 + 0.2 * t, 0.06 + 0.12 * t, 0.06 + 0.06 * t


def _scaled(color: Sequence[float], k: float) -> tuple[float, float, float]:
    """``np.asarray(color) * k`` in plain floats (the same double products, without numpy's overhead)."""
    return color[0] * k, color[1] * k, color[2] * k


class PersonPainter:
    """Draws ``ident`` seen through ``nuis`` on ``canvas``; masks indexed by ``tags``."""

    def __init__(self, canvas: Canvas, ident: Identity, nuis: Nuisance, tags: MaskTags,
                 saturation: float = 1.0) -> None:
        self.cv, self.id, self.nuis, self.tags = canvas, ident, nuis, tags
        h, w = canvas.height, canvas.width
        self.s = min(h * 0.84 * ident.height * nuis.scale, h - 2.0)
        self.top = float(np.clip((h - self.s) / 2 + nuis.shift_y * h, 1.0, h - 1.0 - self.s))
        self.cx = w / 2 + nuis.shift_x * w
        self.mir = -1.0 if nuis.mirror else 1.0
        self.frame = (self.cx, self.mir, self.s, self.top)  # body units to pixels, mapped by the canvas
        self.view = nuis.view
        self.side = nuis.view == "side"
        # Image side (in body x) of the shoulder bag and handbag: a person's right is on the viewer's
        # left when seen from the front.
        self.carry = ident.carry_side * (-1 if nuis.view == "front" else 1)
        bw, fem = ident.build, ident.female
        self.bw = bw
        self.sh = (0.100 if fem else 0.120) * bw
        self.wa = (0.078 if fem else 0.092) * bw
        self.hip = (0.120 if fem else 0.096) * bw
        self.upper = _garment_rgb(ident.upper_color, tuple(ident.upper_tint), saturation)
        self.lower = _garment_rgb(ident.lower_color, tuple(ident.lower_tint), saturation)
        self.masked = canvas.has_masks
        self.upper_t, self.lower_t = tuple(self.upper.tolist()), tuple(self.lower.tolist())
        self.skin = tuple(ident.skin)
        # Front/back: shoulder width (a gender cue) places the arms; side view: it does not.
        self.arm_deps: tuple[str, ...] = () if self.side else ("female",)
        self.wrists: dict[int, tuple[float, float]] = {}

    # ------------------------------------------------------------------ coordinates
    def P(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + self.mir * u * self.s, self.top + v * self.s

    def R(self, r: float) -> float:
        return r * self.s

    # The helpers below let the canvas apply `P` (same arithmetic, same order) as it records the shape.
    def poly(self, pts: Sequence[tuple[float, float]]) -> Shape | None:
        return self.cv.polygon(pts, self.frame)

    def cap(self, a: tuple[float, float], b: tuple[float, float], r: float) -> Shape | None:
        return self.caps(((a, b, r),))

    def caps(self, segments: Sequence[tuple[tuple[float, float], tuple[float, float], float]]) -> Shape | None:
        return self.cv.capsules(segments, self.frame)

    def ell(self, u: float, v: float, ru: float, rv: float) -> Shape | None:
        return self.ells([(u, v, ru, rv)])

    def ells(self, shapes: Sequence[tuple[float, float, float, float]]) -> Shape | None:
        return self.cv.ellipses(shapes, self.frame)

    def box(self, u0: float, v0: float, u1: float, v1: float, cut: float = 0.0) -> Shape | None:
        u0, u1 = min(u0, u1), max(u0, u1)
        if cut <= 0:
            (x0, y0), (x1, y1) = self.P(u0, v0), self.P(u1, v1)
            return self.cv.rect(x0, y0, x1, y1)
        return self.poly([(u0 + cut, v0), (u1 - cut, v0), (u1, v0 + cut), (u1, v1 - cut),
                          (u1 - cut, v1), (u0 + cut, v1), (u0, v1 - cut), (u0, v0 + cut)])

    def clip_v(self, region: Shape | None, above: float) -> Shape | None:
        return self.cv.clip(region, above=self.top + above * self.s)

    def clip_behind(self, region: Shape | None, u: float) -> Shape | None:
        x = self.P(u, 0.0)[0]
        return self.cv.clip(region, right=x) if self.mir > 0 else self.cv.clip(region, left=x)

    # ------------------------------------------------------------------ painting
    def put(self, make: Callable[[], Shape | None], color: Sequence[float], deps: tuple[str, ...] = (),
            needs: tuple[tuple[str, bool], ...] = ()) -> Shape | None:
        if needs:
            ident, failing = self.id, None
            for f, v in needs:
                if getattr(ident, f) != v:
                    if failing is not None or not self.masked:
                        return None
                    failing = f
            if failing is not None:
                would_be = self.tags.of((failing,))
                if would_be:
                    self.cv.paint(make(), color, present=False, would_be=would_be)
                return None
        region = make()
        if region is not None:
            self.cv.paint(region, color, self.tags.of_shape(deps, needs) if self.masked else None)
        return region

    def draw(self, flush: bool = True) -> None:
        """Record the person on the canvas and, unless ``flush`` is False, draw it (``Canvas.flush``)."""
        # Side view: the far limbs first and darker, then the near ones; front and back view: both
        # limbs of a pair in one call (they do not overlap), which halves the numpy calls.
        if self.side:
            self.arms((-1,), far=True)
            self.legs((-1,), far=True)
            self.legs((1,))
        else:
            self.legs((-1, 1))
        self.lower_body()
        self.torso()
        self.backpack()
        self.shoulder_bag()
        self.head()
        self.arms((1,) if self.side else (-1, 1))
        self.handbag()
        if flush:
            self.cv.flush()

    # ------------------------------------------------------------------ body parts
    def legs(self, signs: tuple[int, ...], far: bool = False) -> None:
        bw, swing = self.bw, self.nuis.swing
        shade = 0.78 if far else 1.0
        joints = []
        for sign in signs:
            if self.side:
                hip = (0.0, 0.5)
                phi = sign * swing * 0.38
                ankle = (0.445 * float(np.sin(phi)), 0.5 + 0.445 * float(np.cos(phi)))
            else:
                hip = (sign * 0.05 * bw, 0.5)
                ankle = (sign * 0.058 * bw, 0.945 - 0.02 * max(0.0, sign * swing))
            knee = ((hip[0] + ankle[0]) / 2, (hip[1] + ankle[1]) / 2)
            shaft = (ankle[0] + 0.3 * (knee[0] - ankle[0]), ankle[1] + 0.3 * (knee[1] - ankle[1]))
            joints.append((hip, knee, ankle, shaft))
        low = ("lower_color",)
        self.put(lambda: self.caps([s for h, k, a, _ in joints
                                    for s in ((h, k, 0.044 * bw), (k, a, 0.034 * bw))]), _scaled(self.skin, shade))
        self.put(lambda: self.caps([(h, k, 0.052 * bw) for h, k, _, _ in joints]), _scaled(self.lower_t, shade), low,
                 needs=(("skirt", False),))
        self.put(lambda: self.caps([(k, a, 0.043 * bw) for _, k, a, _ in joints]), _scaled(self.lower_t, shade), low,
                 needs=(("skirt", False), ("short_lower", False)))
        self.put(lambda: self.caps([(a, t, 0.047 * bw) for _, _, a, t in joints]),
                 _scaled(self.id.boots_rgb, shade), needs=(("boots", True),))
        fwd, rx = (0.022, 0.05 * bw) if self.side else (0.0, 0.034 * bw)
        self.put(lambda: self.ells([(a[0] + fwd, a[1] + 0.026, rx, 0.021) for _, _, a, _ in joints]),
                 _scaled(shoe_rgb(self.id), shade), ("light_shoes",))

    def lower_body(self) -> None:
        bw, wa, hip = self.bw, self.wa, self.hip
        if self.side:
            back = (0.09 if self.id.female else 0.075) * bw
            hips = [(-0.062 * bw, 0.41), (0.062 * bw, 0.41), (0.07 * bw, 0.5), (0.05 * bw, 0.565),
                    (-0.05 * bw, 0.565), (-back, 0.5)]
            skirt_top = [(-0.062 * bw, 0.41), (0.062 * bw, 0.41), (0.10 * bw, 0.70), (-0.11 * bw, 0.70)]
            skirt_low = [(-0.11 * bw, 0.695), (0.10 * bw, 0.695), (0.12 * bw, 0.93), (-0.13 * bw, 0.93)]
            coat = [(-0.066 * bw, 0.40), (0.066 * bw, 0.40), (0.085 * bw, 0.63), (-0.09 * bw, 0.63)]
            hips_deps: tuple[str, ...] = ("female",)
            skirt_deps: tuple[str, ...] = ()
        else:
            hem = max(0.14 * bw, hip + 0.03)
            hips = [(-wa, 0.41), (wa, 0.41), (hip, 0.5), (0.8 * hip, 0.565), (-0.8 * hip, 0.565),
                    (-hip, 0.5)]
            skirt_top = [(-wa - 0.006, 0.41), (wa + 0.006, 0.41), (hem, 0.70), (-hem, 0.70)]
            skirt_low = [(-hem, 0.695), (hem, 0.695), (hem + 0.035, 0.93), (-hem - 0.035, 0.93)]
            flare = max(hip, wa) + 0.035
            coat = [(-wa - 0.008, 0.40), (wa + 0.008, 0.40), (flare, 0.63), (-flare, 0.63)]
            hips_deps = skirt_deps = ("female",)
        low = ("lower_color",)
        self.put(lambda: self.poly(hips), self.lower, low + hips_deps, needs=(("skirt", False),))
        self.put(lambda: self.poly(skirt_top), self.lower, low + skirt_deps, needs=(("skirt", True),))
        self.put(lambda: self.poly(skirt_low), self.lower, low + skirt_deps,
                 needs=(("skirt", True), ("short_lower", False)))
        self.put(lambda: self.poly(coat), self.upper, ("upper_color",) + skirt_deps,
                 needs=(("long_top", True),))

    def torso(self) -> None:
        bw, sh, wa = self.bw, self.sh, self.wa
        if self.side:
            chest = (0.075 if self.id.female else 0.068) * bw
            waist = (0.052 if self.id.female else 0.062) * bw
            pts = [(-0.06 * bw, 0.16), (0.04 * bw, 0.16), (chest, 0.25), (waist, 0.45),
                   (-waist - 0.004, 0.45)]
        else:
            pts = [(-sh + 0.03, 0.16), (sh - 0.03, 0.16), (sh, 0.2), (wa + 0.004, 0.45),
                   (-wa - 0.004, 0.45), (-sh, 0.2)]
        deps = ("upper_color", "female")
        torso = self.put(lambda: self.poly(pts), self.upper, deps)
        if self.id.pattern == "stripes":
            light = self.upper.mean() < 0.35
            stripe = self.upper * 0.35 + 0.6 if light else self.upper * 0.6
            self.put(lambda: self.cv.stripes(torso, self.R(0.045), self.top + self.R(0.2), 0.45),
                     np.clip(stripe, 0.0, 1.0), deps)
        elif self.id.pattern == "logo" and self.view == "front":
            self.put(lambda: self.ell(0.0, 0.27, 0.034, 0.03), self.id.pattern_rgb)

    def backpack(self) -> None:
        bw, color = self.bw, self.id.backpack_rgb
        need = (("backpack", True),)
        if self.view == "back":
            self.put(lambda: self.box(-0.088 * bw, 0.195, 0.088 * bw, 0.41, 0.02), color, needs=need)
            self.put(lambda: self.box(-0.062 * bw, 0.32, 0.062 * bw, 0.395, 0.01), _scaled(color, 0.7),
                     needs=need)
        elif self.view == "front":
            self.put(lambda: self.caps([((sign * 0.046 * bw, 0.165), (sign * 0.058 * bw, 0.34), 0.011)
                                        for sign in (-1, 1)]), _scaled(color, 0.8), needs=need)
        else:
            self.put(lambda: self.box(-0.15 * bw, 0.195, -0.05 * bw, 0.415, 0.025), color, needs=need)
            self.put(lambda: self.cap((-0.03, 0.165), (0.04 * bw, 0.33), 0.01), _scaled(color, 0.8), needs=need)

    def shoulder_bag(self) -> None:
        bw, color, need = self.bw, self.id.bag_rgb, (("shoulder_bag", True),)
        if self.side:
            strap, bag = ((-0.035, 0.165), (0.03, 0.44)), (-0.05 * bw, 0.43, 0.045 * bw, 0.53)
        else:
            c = self.carry
            strap = ((-c * 0.07 * bw, 0.165), (c * 0.11 * bw, 0.455))
            bag = (c * 0.09 * bw, 0.43, c * 0.175 * bw, 0.535)
        self.put(lambda: self.cap(strap[0], strap[1], 0.009), _scaled(color, 0.6), needs=need)
        self.put(lambda: self.box(*bag, cut=0.012), color, needs=need)

    def head(self) -> None:
        hair, dark = self.id.hair_rgb, (0.08, 0.06, 0.06)
        hx = 0.006 if self.side else 0.0
        self.put(lambda: self.box(-0.022, 0.115, 0.022, 0.175), _scaled(self.skin, 0.92))
        self.put(lambda: self.ell(hx, 0.072, 0.05, 0.064), self.skin)
        cap = lambda: self.clip_v(self.ell(hx, 0.068, 0.054, 0.064), 0.05)  # noqa: E731
        if self.view == "front":
            self.put(lambda: self.ells([(-0.019, 0.079, 0.008, 0.006), (0.019, 0.079, 0.008, 0.006)]), dark)
            self.put(cap, hair)
        elif self.view == "back":
            self.put(lambda: self.ell(0.0, 0.07, 0.054, 0.066), hair)
        else:
            self.put(lambda: self.ell(0.036, 0.078, 0.007, 0.006), dark)
            self.put(cap, hair)
            self.put(lambda: self.clip_v(self.clip_behind(self.ell(hx, 0.07, 0.054, 0.066), 0.0), 0.11),
                     hair)
        long_hair = (("long_hair", True),)
        if self.view == "front":
            self.put(lambda: self.caps([((sign * 0.044, 0.07), (sign * 0.056, 0.245), 0.019)
                                        for sign in (-1, 1)]), hair, needs=long_hair)
        elif self.view == "back":
            self.put(lambda: self.cap((0.0, 0.08), (0.0, 0.24), 0.054), hair, needs=long_hair)
        else:
            self.put(lambda: self.cap((-0.03, 0.07), (-0.05, 0.245), 0.03), hair, needs=long_hair)
        hat, need = self.id.hat_rgb, (("hat", True),)
        self.put(lambda: self.clip_v(self.ell(hx, 0.066, 0.058, 0.064), 0.048), hat, needs=need)
        brim = (-0.055, 0.037, 0.095, 0.05) if self.side else (-0.068, 0.036, 0.068, 0.05)
        self.put(lambda: self.box(*brim), _scaled(hat, 0.8), needs=need)

    def arms(self, signs: tuple[int, ...], far: bool = False) -> None:
        bw, swing = self.bw, self.nuis.swing
        shade = 0.78 if far else 1.0
        points = []  # per arm: the point at fraction t of its length
        for sign in signs:
            if self.side:
                joint, angle, length = (-0.005, 0.195), -sign * swing * 0.5, 0.29
                direction = (float(np.sin(angle)), float(np.cos(angle)))
            else:
                joint = (sign * (self.sh - 0.024), 0.195)
                angle, length = 0.09 + 0.04 * sign * swing, 0.29 * (1.0 - 0.06 * abs(swing))
                direction = (sign * float(np.sin(angle)), float(np.cos(angle)))
            points.append(lambda t, j=joint, d=direction, n=length: (j[0] + t * n * d[0], j[1] + t * n * d[1]))
            self.wrists[sign] = points[-1](1.04)
        deps = self.arm_deps
        sleeve = ("upper_color",) + deps
        skin, upper = _scaled(self.skin, shade), _scaled(self.upper_t, shade)
        self.put(lambda: self.caps([(at(0.0), at(1.0), 0.026 * bw) for at in points]), skin, deps)
        self.put(lambda: self.caps([(at(0.0), at(0.4), 0.034 * bw) for at in points]), upper, sleeve)
        self.put(lambda: self.caps([(at(0.38), at(0.93), 0.031 * bw) for at in points]), upper, sleeve,
                 needs=(("short_sleeves", False),))
        self.put(lambda: self.ells([(*at(1.04), 0.022, 0.024) for at in points]), _scaled(skin, 0.95), deps)

    def handbag(self) -> None:
        sign = 1 if self.side else (self.carry > 0) - (self.carry < 0)
        wx, wy = self.wrists[sign]
        bw, color = self.bw, self.id.handbag_rgb
        need = (("handbag", True),)
        self.put(lambda: self.cap((wx - 0.018 * bw, wy + 0.03), (wx, wy), 0.006), _scaled(color, 0.6),
                 self.arm_deps, needs=need)
        self.put(lambda: self.box(wx - 0.038 * bw, wy + 0.02, wx + 0.038 * bw, wy + 0.095, 0.01),
                 color, self.arm_deps, needs=need)
