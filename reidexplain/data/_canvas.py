"""Vectorised drawing of anti-aliased shapes on a float canvas, with per-attribute mask bookkeeping.

Every shape is evaluated only inside its bounding window, from a signed distance (in pixels) built from
1-D coordinate vectors by broadcasting; its coverage is ``clip(0.5 - distance, 0, 1)``, a one-pixel
anti-aliased edge. There is no per-pixel Python loop; the cost is a few numpy calls per shape.

Masks follow one rule that makes counterfactual renders exact (see ``synthetic.py``): a shape drawn
with tags ``T`` (the attributes its existence, geometry or colour depend on) sets the masks of ``T``
wherever it covers a pixel and clears every other mask where it is fully opaque. A shape absent only
because one attribute has the other value adds its footprint to that attribute's mask (where it *would*
be seen) without painting. Masks are kept as one bit per attribute in an integer image, so that a
shape updates all of them with a handful of operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Color = np.ndarray  # (3, 1, 1) float32, or (3, h, w) for a textured fill
MAX_MASKS = 64


@dataclass
class Region:
    """Coverage ``alpha`` (h, w) of a shape inside the window ``[y0:y1, x0:x1]`` of the canvas."""

    y0: int
    y1: int
    x0: int
    x1: int
    alpha: np.ndarray


def rgb(values: tuple[float, float, float] | np.ndarray) -> Color:
    """A colour as a broadcastable ``(3, 1, 1)`` float32 array."""
    return np.asarray(values, dtype=np.float32).reshape(3, 1, 1)


def _coverage(dist: np.ndarray) -> np.ndarray:
    """In place: signed distance -> anti-aliased coverage in [0, 1]."""
    np.subtract(np.float32(0.5), dist, out=dist)
    np.maximum(dist, np.float32(0.0), out=dist)
    np.minimum(dist, np.float32(1.0), out=dist)
    return dist


class Canvas:
    """An RGB float image ``(3, H, W)`` plus up to 64 boolean masks, drawn on with shapes."""

    def __init__(self, height: int, width: int, num_masks: int, with_masks: bool = True) -> None:
        if num_masks > MAX_MASKS:
            raise ValueError(f"num_masks: at most {MAX_MASKS} attributes can be masked, got {num_masks}")
        self.height, self.width, self.num_masks = height, width, num_masks
        self.image = np.zeros((3, height, width), dtype=np.float32)
        # 32-bit words when they suffice: unpacking them into masks is then twice as fast.
        self._dtype = np.uint32 if num_masks <= 32 else np.uint64
        self.bits = np.zeros((height, width), dtype=self._dtype) if with_masks else None
        # Pixel centres at integer + 0.5, so that a shape and its mirror image cover mirrored pixels.
        self._xs = np.arange(width, dtype=np.float32) + np.float32(0.5)
        self._ys = np.arange(height, dtype=np.float32) + np.float32(0.5)

    @property
    def has_masks(self) -> bool:
        return self.bits is not None

    def masks(self) -> np.ndarray | None:
        """The ``(num_masks, H, W)`` boolean masks, unpacked from the bit image."""
        if self.bits is None:
            return None
        powers = (self._dtype(1) << np.arange(self.num_masks, dtype=self._dtype))[:, None, None]
        return (self.bits[None] & powers) != 0

    # ------------------------------------------------------------------ windows
    def _window(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int] | None:
        ix0, iy0 = max(math.floor(x0) - 1, 0), max(math.floor(y0) - 1, 0)
        ix1, iy1 = min(math.ceil(x1) + 1, self.width), min(math.ceil(y1) + 1, self.height)
        if ix0 >= ix1 or iy0 >= iy1:
            return None
        return iy0, iy1, ix0, ix1

    def _axes(self, win: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        return self._xs[win[2]:win[3]], self._ys[win[0]:win[1]]

    # ------------------------------------------------------------------ shapes
    def capsules(self, segments: list[tuple[tuple[float, float], tuple[float, float], float]]) -> Region | None:
        """The union of capsules ``(p0, p1, radius)``: segments (pixel ``(x, y)``) thickened by a radius.

        All capsules are evaluated in one set of numpy calls on their common window, which costs about
        as much as a single capsule (the calls, not the pixels, dominate at these sizes).
        """
        rows = []
        for (ax, ay), (bx, by), r in segments:
            dx, dy = bx - ax, by - ay
            denom = dx * dx + dy * dy
            rows.append((ax, ay, dx, dy, 1.0 / denom if denom > 1e-9 else 0.0, denom, r))
        win = self._window(min(min(q[0], q[0] + q[2]) - q[6] for q in rows),
                           min(min(q[1], q[1] + q[3]) - q[6] for q in rows),
                           max(max(q[0], q[0] + q[2]) + q[6] for q in rows),
                           max(max(q[1], q[1] + q[3]) + q[6] for q in rows))
        if win is None:
            return None
        prm = np.array(rows, dtype=np.float32)[:, :, None, None]
        ax, ay, dx, dy, inv, denom, rad = (prm[:, i] for i in range(7))
        xs, ys = self._axes(win)
        px = xs - ax  # (K, 1, w)
        py = ys[:, None] - ay  # (K, h, 1)
        sq = py * py + px * px
        # |p - a - t (b - a)|^2 with t the clipped projection: |pa|^2 - t (2 proj - t denom).
        proj = py * dy + px * dx
        t = proj * inv
        np.maximum(t, np.float32(0.0), out=t)
        np.minimum(t, np.float32(1.0), out=t)
        proj *= np.float32(2.0)
        proj -= t * denom
        sq -= t * proj
        np.maximum(sq, np.float32(0.0), out=sq)
        dist = np.sqrt(sq, out=sq)
        dist -= rad
        dist = dist[0] if len(rows) == 1 else dist.min(axis=0)
        return Region(win[0], win[1], win[2], win[3], _coverage(dist))

    def capsule(self, p0: tuple[float, float], p1: tuple[float, float], radius: float) -> Region | None:
        """A segment from ``p0`` to ``p1`` (pixel ``(x, y)``) thickened by ``radius``."""
        return self.capsules([(p0, p1, radius)])

    def ellipses(self, shapes: list[tuple[float, float, float, float]]) -> Region | None:
        """The union of axis-aligned ellipses ``(cx, cy, rx, ry)`` (approximate signed distance)."""
        win = self._window(min(e[0] - e[2] for e in shapes), min(e[1] - e[3] for e in shapes),
                           max(e[0] + e[2] for e in shapes), max(e[1] + e[3] for e in shapes))
        if win is None:
            return None
        prm = np.array([(cx, cy, 1.0 / rx, 1.0 / ry, min(rx, ry)) for cx, cy, rx, ry in shapes],
                       dtype=np.float32)[:, :, None, None]
        cx, cy, irx, iry, rmin = (prm[:, i] for i in range(5))
        xs, ys = self._axes(win)
        ex = ((xs - cx) * irx) ** 2
        ey = ((ys[:, None] - cy) * iry) ** 2
        dist = np.sqrt(ey + ex)
        dist -= np.float32(1.0)
        dist *= rmin
        dist = dist[0] if len(shapes) == 1 else dist.min(axis=0)
        return Region(win[0], win[1], win[2], win[3], _coverage(dist))

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> Region | None:
        """An axis-aligned ellipse (approximate signed distance, exact on the axes)."""
        return self.ellipses([(cx, cy, rx, ry)])

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> Region | None:
        """An axis-aligned rectangle; corners may be given in any order."""
        x0, x1 = min(x0, x1), max(x0, x1)
        y0, y1 = min(y0, y1), max(y0, y1)
        win = self._window(x0, y0, x1, y1)
        if win is None:
            return None
        xs, ys = self._axes(win)
        dist = np.maximum.outer(np.maximum(np.float32(y0) - ys, ys - np.float32(y1)),
                                np.maximum(np.float32(x0) - xs, xs - np.float32(x1)))
        return Region(win[0], win[1], win[2], win[3], _coverage(dist))

    def polygon(self, points: list[tuple[float, float]]) -> Region | None:
        """A convex polygon, as the intersection of the half-planes of its edges (either winding)."""
        px = [p[0] for p in points]
        py = [p[1] for p in points]
        win = self._window(min(px), min(py), max(px), max(py))
        if win is None:
            return None
        n = len(points)
        area2 = sum(px[i] * py[(i + 1) % n] - px[(i + 1) % n] * py[i] for i in range(n))
        orient = 1.0 if area2 > 0 else -1.0
        xs, ys = self._axes(win)
        dist = None
        for i in range(n):
            ax, ay = px[i], py[i]
            ex, ey = px[(i + 1) % n] - ax, py[(i + 1) % n] - ay
            norm = math.hypot(ex, ey)
            if norm < 1e-9:
                continue
            nx, ny = orient * ey / norm, -orient * ex / norm  # outward normal
            d = np.add.outer(ys * np.float32(ny), xs * np.float32(nx) - np.float32(ax * nx + ay * ny))
            dist = d if dist is None else np.maximum(dist, d, out=dist)
        if dist is None:
            return None
        return Region(win[0], win[1], win[2], win[3], _coverage(dist))

    # ------------------------------------------------------------------ composition
    def clip(self, region: Region | None, *, above: float | None = None, left: float | None = None,
             right: float | None = None) -> Region | None:
        """Keep the part of ``region`` with ``y < above``, ``x > left``, ``x < right``."""
        if region is None:
            return None
        alpha = region.alpha
        xs, ys = self._axes((region.y0, region.y1, region.x0, region.x1))
        if above is not None:
            alpha = alpha * np.clip(0.5 - (ys - above), 0.0, 1.0).astype(np.float32)[:, None]
        if left is not None:
            alpha = alpha * np.clip(0.5 + (xs - left), 0.0, 1.0).astype(np.float32)[None, :]
        if right is not None:
            alpha = alpha * np.clip(0.5 - (xs - right), 0.0, 1.0).astype(np.float32)[None, :]
        return Region(region.y0, region.y1, region.x0, region.x1, alpha)

    def stripes(self, region: Region | None, period: float, phase: float, duty: float) -> Region | None:
        """Horizontal bands of ``region``: rows where ``((y - phase) / period) mod 1 < duty``."""
        if region is None:
            return None
        frac = np.mod((self._ys[region.y0:region.y1] - phase) / period, 1.0)
        band = np.clip(np.minimum(frac, duty - frac) * period + 0.5, 0.0, 1.0).astype(np.float32)
        return Region(region.y0, region.y1, region.x0, region.x1, region.alpha * band[:, None])

    def paint(self, region: Region | None, color: Color, tags: np.unsignedinteger | None = None,
              present: bool = True, would_be: np.unsignedinteger | None = None) -> None:
        """Blend ``color`` over ``region`` and update the masks (see the module docstring).

        Args:
            region: Coverage to paint; ``None`` paints nothing.
            color: ``(3,1,1)`` colour or a ``(3,h,w)`` texture of the region's window size.
            tags: Bits of the masks the shape depends on (existence, geometry or colour).
            present: ``False`` for a shape absent in this render: nothing is painted, and only the
                ``would_be`` masks get its footprint.
            would_be: Bits of the attribute whose single flip would make the shape present.
        """
        if region is None:
            return
        ys, xs = slice(region.y0, region.y1), slice(region.x0, region.x1)
        alpha = region.alpha
        if present:
            win = self.image[:, ys, xs]
            # Not `win += (color - win) * alpha`: with alpha == 1 that differs from `color` in the last
            # bit, and a counterfactual would then change pixels hidden under an opaque shape.
            win *= np.float32(1.0) - alpha
            win += color * alpha
        if self.bits is None:
            return
        bits = self.bits[ys, xs]
        if not present:
            if would_be:
                np.bitwise_or(bits, would_be, out=bits, where=alpha > 0)
            return
        np.copyto(bits, 0, where=alpha >= 1.0)
        if tags:
            np.bitwise_or(bits, tags, out=bits, where=alpha > 0)
