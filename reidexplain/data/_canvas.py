"""Anti-aliased shapes on a float canvas, drawn in batches, with per-attribute mask bookkeeping.

Every shape is evaluated only inside its bounding window, from a signed distance (in pixels); its
coverage is ``clip(0.5 - distance, 0, 1)``, a one-pixel anti-aliased edge. There is no per-pixel Python
loop.

Drawing is deferred, because at these image sizes the number of numpy calls, not the number of pixels,
sets the cost. A shape method (``capsules``, ``ellipses``, ``rect``, ``polygon``) only records the shape
and its window and returns a :class:`Shape` handle; ``clip`` and ``stripes`` record an edit of a shape;
``paint`` records a layer. :meth:`Canvas.flush` then evaluates all shapes of one kind together: their
windows are flattened and concatenated, with every pixel's coordinates and shape parameters beside it,
so that each step of the distance is one contiguous numpy call for all of them. It prepares the
blending terms of all layers at once (``1 - alpha``, ``colour * alpha``, the mask bits to keep and to
add), and then blends the layers into the image in the order they were painted, four numpy calls per
layer. The arithmetic of every pixel is the same as drawing the shapes one at a time (the
``test_canvas.py`` reference), so the image does not depend on how the shapes are batched.

Masks follow one rule that makes counterfactual renders exact (see ``synthetic.py``): a shape drawn
with tags ``T`` (the attributes its existence, geometry or colour depend on) sets the masks of ``T``
wherever it covers a pixel and clears every other mask where it is fully opaque. A shape absent only
because one attribute has the other value adds its footprint to that attribute's mask (where it *would*
be seen) without painting. Masks are kept as one bit per attribute in an integer image, so that a
shape updates all of them with a handful of operations.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np

Color = np.ndarray  # (3, 1, 1) float32
MAX_MASKS = 64
# (x0, mirror, scale, y0): points (u, v) given in these units are at pixel (x0 + mirror * u * scale,
# y0 + v * scale) and lengths r are r * scale pixels (the mapping a caller would do, in the same order).
Frame = tuple[float, float, float, float]
_HALF, _ZERO, _ONE, _INF = np.float32(0.5), np.float32(0.0), np.float32(1.0), np.float32(np.inf)
_KINDS = ("capsule", "ellipse", "rect", "polygon")
# numpy's clip ufunc itself: np.clip wraps it in Python (about a microsecond a call); np.clip if absent.
fast_clip = getattr(getattr(getattr(np, "_core", None), "umath", None), "clip", np.clip)


def rgb(values: Sequence[float] | np.ndarray) -> Color:
    """A colour as a broadcastable ``(3, 1, 1)`` float32 array."""
    return np.asarray(values, dtype=np.float32).reshape(3, 1, 1)


@lru_cache(maxsize=64)
def _centres(n: int) -> np.ndarray:
    """Pixel centres ``0.5, 1.5, ...`` of ``n`` pixels (float32, read-only)."""
    centres = np.arange(n, dtype=np.float32) + _HALF
    centres.setflags(write=False)
    return centres


@lru_cache(maxsize=64)
def _powers(num_masks: int, dtype: type) -> np.ndarray:
    """The bit of each mask, ``(num_masks, 1, 1)`` (read-only)."""
    powers = (dtype(1) << np.arange(num_masks, dtype=dtype))[:, None, None]
    powers.setflags(write=False)
    return powers


_GRIDS: dict[tuple[int, int], np.ndarray] = {}
_GRID_BYTES = [0, 16 << 20]  # cached bytes, budget (the cache is emptied when it would exceed it)
_GRID_LOCK = threading.Lock()


def _grid(h: int, w: int) -> np.ndarray:
    """Pixel centres ``(2, h * w)`` (row, column; row-major) of an ``h`` by ``w`` window at the origin."""
    grid = _GRIDS.get((h, w))
    if grid is None:
        grid = np.empty((2, h, w), dtype=np.float32)
        grid[0] = (np.arange(h, dtype=np.float32) + _HALF)[:, None]
        grid[1] = np.arange(w, dtype=np.float32) + _HALF
        grid = grid.reshape(2, h * w)
        grid.setflags(write=False)
        with _GRID_LOCK:
            if _GRID_BYTES[0] + grid.nbytes > _GRID_BYTES[1]:
                _GRIDS.clear()
                _GRID_BYTES[0] = 0
            _GRIDS[h, w] = grid
            _GRID_BYTES[0] += grid.nbytes
    return grid


@lru_cache(maxsize=16)
def _plane_cached(h: int, w: int) -> np.ndarray:
    plane = np.empty((2, h, w), dtype=np.float32)
    plane[0] = (np.arange(h, dtype=np.float32) + _HALF)[:, None]
    plane[1] = np.arange(w, dtype=np.float32) + _HALF
    plane.setflags(write=False)
    return plane


def _plane(h: int, w: int) -> np.ndarray:
    """Pixel centres ``(2, >= h, >= w)`` (row, column) of the image plane, read-only."""
    return _plane_cached(-(-h // 64) * 64, -(-w // 64) * 64)


class Shape:
    """Handle of a recorded shape: its window ``[y0:y1, x0:x1]`` and, after ``flush``, its coverage.

    A base shape of ``kind`` has one parameter row per element (capsule, ellipse, polygon edge) in
    ``rows``; an edited shape (``kind`` None) applies ``edit`` to the coverage of ``base``.
    """

    __slots__ = ("kind", "rows", "y0", "y1", "x0", "x1", "h", "w", "n", "base", "edit", "alpha", "stacked",
                 "off", "color", "tags")

    def __init__(self, kind: int | None, rows: list[tuple[float, ...]], y0: int, y1: int, x0: int, x1: int,
                 base: Shape | None = None, edit: Callable[..., np.ndarray] | None = None) -> None:
        self.kind, self.rows = kind, rows
        self.y0, self.y1, self.x0, self.x1 = y0, y1, x0, x1
        self.h, self.w = h, w = y1 - y0, x1 - x0
        self.n = h * w
        self.base, self.edit = base, edit
        self.alpha: np.ndarray | None = None
        self.stacked = False  # its first layer is prepared with all the others (see ``flush``)
        self.off = 0  # offset of its coverage in the flat buffer of all coverages
        self.color: Sequence[float] | np.ndarray | None = None
        self.tags = 0


class Canvas:
    """An RGB float image ``(3, H, W)`` plus up to 64 boolean masks, drawn on with shapes.

    Shapes and layers are recorded and drawn by :meth:`flush`; read ``image`` or :meth:`masks` after it.
    """

    def __init__(self, height: int, width: int, num_masks: int, with_masks: bool = True) -> None:
        if num_masks > MAX_MASKS:
            raise ValueError(f"num_masks: at most {MAX_MASKS} attributes can be masked, got {num_masks}")
        self.height, self.width, self.num_masks = height, width, num_masks
        self.image = np.zeros((3, height, width), dtype=np.float32)
        # 32-bit words when they suffice: unpacking them into masks is then twice as fast.
        self._dtype = np.uint32 if num_masks <= 32 else np.uint64
        self.bits = np.zeros((height, width), dtype=self._dtype) if with_masks else None
        # Pixel centres at integer + 0.5, so that a shape and its mirror image cover mirrored pixels.
        self._xs, self._ys = _centres(width), _centres(height)
        self._shapes: list[list[Shape]] = [[] for _ in _KINDS]
        # (shape, colour, tags or would-be bits, present, blending terms prepared with the others)
        self._layers: list[tuple[Shape, Sequence[float] | np.ndarray, int, bool, bool]] = []

    @property
    def has_masks(self) -> bool:
        return self.bits is not None

    def masks(self) -> np.ndarray | None:
        """The ``(num_masks, H, W)`` boolean masks, unpacked from the bit image."""
        if self.bits is None:
            return None
        self.flush()
        return (self.bits[None] & _powers(self.num_masks, self._dtype)) != 0

    # ------------------------------------------------------------------ windows
    def _add(self, kind: int, rows: list[tuple[float, ...]], x0: float, y0: float, x1: float,
             y1: float) -> Shape | None:
        """Record a shape of ``kind`` on the window of its bounds (one pixel of margin), if not empty."""
        ix0, iy0 = math.floor(x0) - 1, math.floor(y0) - 1
        ix1, iy1 = math.ceil(x1) + 1, math.ceil(y1) + 1
        if ix0 < 0:
            ix0 = 0
        if iy0 < 0:
            iy0 = 0
        if ix1 > self.width:
            ix1 = self.width
        if iy1 > self.height:
            iy1 = self.height
        if ix0 >= ix1 or iy0 >= iy1:
            return None
        shape = Shape(kind, rows, iy0, iy1, ix0, ix1)
        self._shapes[kind].append(shape)
        return shape

    # ------------------------------------------------------------------ shapes (recorded)
    def capsules(self, segments: Sequence[tuple[tuple[float, float], tuple[float, float], float]],
                 frame: Frame | None = None) -> Shape | None:
        """The union of capsules ``(p0, p1, radius)``: segments (pixel ``(x, y)``) thickened by a radius.

        With ``frame``, the points and radii are in its units (see :data:`Frame`).
        """
        rows = []
        lo_x = lo_y = math.inf
        hi_x = hi_y = -math.inf
        if frame is not None:
            fx, fm, fs, ft = frame
        for (ax, ay), (bx, by), r in segments:
            if frame is not None:
                ax, ay, bx, by, r = fx + fm * ax * fs, ft + ay * fs, fx + fm * bx * fs, ft + by * fs, r * fs
            dx, dy = bx - ax, by - ay
            denom = dx * dx + dy * dy
            rows.append((ax, ay, dx, dy, 1.0 / denom if denom > 1e-9 else 0.0, denom, r))
            ex, ey = ax + dx, ay + dy  # the window is that of the segment as evaluated: a + (b - a)
            lo, hi = (ax - r, ex + r) if ax <= ex else (ex - r, ax + r)
            if lo < lo_x:
                lo_x = lo
            if hi > hi_x:
                hi_x = hi
            lo, hi = (ay - r, ey + r) if ay <= ey else (ey - r, ay + r)
            if lo < lo_y:
                lo_y = lo
            if hi > hi_y:
                hi_y = hi
        return self._add(0, rows, lo_x, lo_y, hi_x, hi_y)

    def capsule(self, p0: tuple[float, float], p1: tuple[float, float], radius: float) -> Shape | None:
        """A segment from ``p0`` to ``p1`` (pixel ``(x, y)``) thickened by ``radius``."""
        return self.capsules(((p0, p1, radius),))

    def ellipses(self, shapes: Sequence[tuple[float, float, float, float]],
                 frame: Frame | None = None) -> Shape | None:
        """The union of axis-aligned ellipses ``(cx, cy, rx, ry)`` (approximate signed distance).

        With ``frame``, the centres and radii are in its units (see :data:`Frame`).
        """
        rows = []
        lo_x = lo_y = math.inf
        hi_x = hi_y = -math.inf
        if frame is not None:
            fx, fm, fs, ft = frame
        for cx, cy, rx, ry in shapes:
            if frame is not None:
                cx, cy, rx, ry = fx + fm * cx * fs, ft + cy * fs, rx * fs, ry * fs
            rows.append((cx, cy, 1.0 / rx, 1.0 / ry, rx if rx < ry else ry))
            v = cx - rx
            if v < lo_x:
                lo_x = v
            v = cy - ry
            if v < lo_y:
                lo_y = v
            v = cx + rx
            if v > hi_x:
                hi_x = v
            v = cy + ry
            if v > hi_y:
                hi_y = v
        return self._add(1, rows, lo_x, lo_y, hi_x, hi_y)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float) -> Shape | None:
        """An axis-aligned ellipse (approximate signed distance, exact on the axes)."""
        return self.ellipses(((cx, cy, rx, ry),))

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> Shape | None:
        """An axis-aligned rectangle; corners may be given in any order."""
        if x1 < x0:
            x0, x1 = x1, x0
        if y1 < y0:
            y0, y1 = y1, y0
        return self._add(2, [(x0, y0, x1, y1)], x0, y0, x1, y1)

    def polygon(self, points: Sequence[tuple[float, float]], frame: Frame | None = None) -> Shape | None:
        """A convex polygon, as the intersection of the half-planes of its edges (either winding).

        With ``frame``, the points are in its units (see :data:`Frame`).
        """
        lo_x = lo_y = math.inf
        hi_x = hi_y = -math.inf
        area2 = 0.0
        ax, ay = points[-1]
        if frame is not None:
            fx, fm, fs, ft = frame
            ax, ay = fx + fm * ax * fs, ft + ay * fs
        edges = []
        for bx, by in points:  # edges (a, b), the closing one first; the area sums in point order
            if frame is not None:
                bx, by = fx + fm * bx * fs, ft + by * fs
            if bx < lo_x:
                lo_x = bx
            if bx > hi_x:
                hi_x = bx
            if by < lo_y:
                lo_y = by
            if by > hi_y:
                hi_y = by
            edges.append((ax, ay, bx, by))
            ax, ay = bx, by
        for ax, ay, bx, by in edges[1:]:
            area2 += ax * by - bx * ay
        ax, ay, bx, by = edges[0]
        area2 += ax * by - bx * ay
        orient = 1.0 if area2 > 0 else -1.0
        rows = []
        hypot = math.hypot
        for ax, ay, bx, by in edges[1:] + edges[:1]:
            ex, ey = bx - ax, by - ay
            norm = hypot(ex, ey)
            if norm >= 1e-9:
                nx, ny = orient * ey / norm, -orient * ex / norm  # outward normal
                rows.append((nx, ny, ax * nx + ay * ny))
        return self._add(3, rows, lo_x, lo_y, hi_x, hi_y) if rows else None

    # ------------------------------------------------------------------ edits (recorded)
    def _edited(self, shape: Shape, edit: Callable[..., np.ndarray]) -> Shape:
        return Shape(None, [], shape.y0, shape.y1, shape.x0, shape.x1, base=shape, edit=edit)

    def clip(self, shape: Shape | None, *, above: float | None = None, left: float | None = None,
             right: float | None = None) -> Shape | None:
        """Keep the part of ``shape`` with ``y < above``, ``x > left``, ``x < right``."""
        if shape is None:
            return None
        xs, ys = self._xs[shape.x0:shape.x1], self._ys[shape.y0:shape.y1]

        def edit(alpha: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            if above is not None:
                band = fast_clip(0.5 - (ys - above), 0.0, 1.0).astype(np.float32, copy=False)
                alpha = np.multiply(alpha, band[:, None], out=out)
            if left is not None:
                band = fast_clip(0.5 + (xs - left), 0.0, 1.0).astype(np.float32, copy=False)
                alpha = np.multiply(alpha, band[None, :], out=out)
            if right is not None:
                band = fast_clip(0.5 - (xs - right), 0.0, 1.0).astype(np.float32, copy=False)
                alpha = np.multiply(alpha, band[None, :], out=out)
            return alpha

        return self._edited(shape, edit)

    def stripes(self, shape: Shape | None, period: float, phase: float, duty: float) -> Shape | None:
        """Horizontal bands of ``shape``: rows where ``((y - phase) / period) mod 1 < duty``."""
        if shape is None:
            return None
        ys = self._ys[shape.y0:shape.y1]

        def edit(alpha: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
            frac = np.mod((ys - phase) / period, 1.0)
            band = fast_clip(np.minimum(frac, duty - frac) * period + 0.5, 0.0, 1.0).astype(np.float32, copy=False)
            return np.multiply(alpha, band[:, None], out=out)

        return self._edited(shape, edit)

    # ------------------------------------------------------------------ layers (recorded)
    def paint(self, shape: Shape | None, color: Sequence[float] | np.ndarray, tags: int | None = None,
              present: bool = True, would_be: int | None = None) -> None:
        """Record a layer: blend ``color`` over ``shape`` and update the masks (see the module docstring).

        Args:
            shape: Shape to paint; ``None`` paints nothing.
            color: RGB colour (three floats).
            tags: Bits of the masks the shape depends on (existence, geometry or colour).
            present: ``False`` for a shape absent in this render: nothing is painted, and only the
                ``would_be`` masks get its footprint.
            would_be: Bits of the attribute whose single flip would make the shape present.
        """
        if shape is None:
            return
        bits = (tags if present else would_be) or 0
        if not present and (not bits or self.bits is None):
            return
        if not shape.stacked:
            # The first layer of a shape is prepared with all the others, in a few numpy calls.
            shape.stacked, shape.tags = True, bits
            if present:
                shape.color = color
            self._layers.append((shape, color, bits, present, True))
        else:  # a shape painted again: that layer is prepared on its own
            self._layers.append((shape, color, bits, present, False))

    # ------------------------------------------------------------------ drawing
    @staticmethod
    def _evaluate(kind: int, shapes: list[Shape], out: np.ndarray) -> None:
        """Coverage of ``shapes`` (one kind, most elements first) into the flat buffer ``out``.

        Every element (capsule, ellipse, edge) is evaluated on its shape's window, all windows flattened
        and concatenated, so that every numpy call is one contiguous loop. The elements are ordered by
        their rank within their shape: rank 0 of every shape first (the layout of ``out``), then rank 1
        of the shapes having one (a prefix of them), and so on; a union is then one call per rank.
        """
        polygon = kind == 3
        if polygon:  # windows at their place: an edge multiplies the pixel centre, no corner to move
            plane = _plane(max(shape.y1 for shape in shapes), max(shape.x1 for shape in shapes))
            grids = [plane[:, shape.y0:shape.y1, shape.x0:shape.x1].reshape(2, shape.n) for shape in shapes]
        else:
            grids = [_grid(shape.h, shape.w) for shape in shapes]
        rows, sizes, levels, windows = [], [], [], []
        for j in range(len(shapes[0].rows)):
            size = 0
            for shape, grid in zip(shapes, grids, strict=True):
                if len(shape.rows) <= j:
                    break
                rows.append(shape.rows[j] if polygon else (shape.y0, shape.x0, *shape.rows[j]))
                sizes.append(shape.n)
                windows.append(grid)
                size += shape.n
            levels.append(size)
        n = sum(levels)
        table = np.array(rows, dtype=np.float32)
        grid = np.concatenate(windows, axis=1)  # pixel centres (relative to their window's corner)
        if not polygon:
            # Capsules, ellipses and rectangles only subtract a point from the pixel centre: that
            # point is moved to the window's corner instead, which is exact. The corner (y0, x0) is
            # an integer with 0 <= corner <= the point's float32 coordinate (or corner == 0), so the
            # float32 difference point - corner is representable, and then
            # (grid + corner) - point and grid - (point - corner) round the same real number.
            m = 2 if kind == 2 else 1  # points per row: (x, y) first, then the rectangle's (x1, y1)
            table[:, 2:2 + 2 * m:2] -= table[:, 1:2]
            table[:, 3:3 + 2 * m:2] -= table[:, 0:1]
            table = table[:, 2:]
        prm = np.repeat(table.T, sizes, axis=1)  # per pixel: its element's parameters (one call)
        ys, xs = grid[0], grid[1]
        tmp = np.empty((3, n), np.float32)  # scratch rows
        union = np.minimum
        if kind == 0:  # capsules: |p - a - t (b - a)| with t the clipped projection
            ax, ay, dx, dy, inv, denom, rad = prm
            px, py, t = tmp
            np.subtract(xs, ax, out=px)
            np.subtract(ys, ay, out=py)
            sq = np.multiply(py, py, out=ys)
            np.multiply(px, px, out=t)
            sq += t
            # |p - a - t (b - a)|^2 = |pa|^2 - t (2 proj - t denom).
            proj = np.multiply(py, dy, out=xs)
            np.multiply(px, dx, out=t)
            proj += t
            np.multiply(proj, inv, out=t)
            fast_clip(t, _ZERO, _ONE, out=t)  # one call, and faster than maximum and minimum with a scalar
            proj *= np.float32(2.0)
            proj -= np.multiply(t, denom, out=px)
            sq -= np.multiply(t, proj, out=px)
            fast_clip(sq, _ZERO, _INF, out=sq)
            dist = np.sqrt(sq, out=sq)
            dist -= rad
        elif kind == 1:  # ellipses
            cx, cy, irx, iry, rmin = prm
            ex = np.subtract(xs, cx, out=xs)
            ex *= irx
            ex *= ex
            dist = np.subtract(ys, cy, out=ys)
            dist *= iry
            dist *= dist
            dist += ex
            np.sqrt(dist, out=dist)
            dist -= _ONE
            dist *= rmin
        elif kind == 2:  # rectangles
            x0, y0, x1, y1 = prm
            a, b, c = tmp
            dist = np.maximum(np.subtract(y0, ys, out=a), np.subtract(ys, y1, out=b), out=a)
            np.maximum(np.subtract(x0, xs, out=b), np.subtract(xs, x1, out=c), out=b)
            np.maximum(dist, b, out=dist)
        else:  # convex polygons: the largest signed distance to the lines of their edges
            nx, ny, off = prm
            dist = np.multiply(xs, nx, out=xs)
            dist -= off
            dist += np.multiply(ys, ny, out=ys)
            union = np.maximum
        start = levels[0]
        for size in levels[1:]:
            union(dist[:size], dist[start:start + size], out=dist[:size])
            start += size
        np.subtract(_HALF, dist[:levels[0]], out=out)
        fast_clip(out, _ZERO, _ONE, out=out)

    @staticmethod
    def _alpha(shape: Shape, flat: np.ndarray) -> np.ndarray:
        """The coverage of ``shape`` (a view of ``flat`` for a base shape, computed for an edited one)."""
        if shape.alpha is None:
            if shape.kind is None:
                shape.alpha = shape.edit(Canvas._alpha(shape.base, flat))
            else:
                shape.alpha = flat[shape.off:shape.off + shape.n].reshape(shape.h, shape.w)
        return shape.alpha

    def flush(self) -> None:
        """Evaluate the recorded shapes and blend the recorded layers, in order, into ``image``/``bits``."""
        flush_all([self])

    def _blend(self, oma: np.ndarray, ca: np.ndarray, keep: np.ndarray | None, add: np.ndarray | None,
               flat: np.ndarray) -> None:
        """Blend the recorded layers with the terms :func:`flush_all` prepared, then forget them."""
        dtype, bits = self._dtype, self.bits
        image = self.image
        for shape, color, tag, present, shared in self._layers:
            ys, xs = slice(shape.y0, shape.y1), slice(shape.x0, shape.x1)
            if shared:  # prepared above
                h, w = shape.h, shape.w
                span = slice(shape.off, shape.off + shape.n)
                if present:
                    win = image[:, ys, xs]
                    # Not `win += (color - win) * alpha`: with alpha == 1 that differs from `color` in
                    # the last bit, and a counterfactual would then change pixels hidden under an
                    # opaque shape.
                    win *= oma[span].reshape(h, w)
                    win += ca[:, span].reshape(3, h, w)
                    if bits is not None:
                        b = bits[ys, xs]
                        b &= keep[span].reshape(h, w)
                        if tag:
                            b |= add[span].reshape(h, w)
                elif bits is not None:
                    b = bits[ys, xs]
                    b |= add[span].reshape(h, w)
                continue
            alpha = self._alpha(shape, flat)
            if present:
                win = image[:, ys, xs]
                win *= _ONE - alpha
                win += rgb(color) * alpha
            if bits is None:
                continue
            b = bits[ys, xs]
            if present:
                np.copyto(b, 0, where=alpha >= _ONE)
            if tag:
                np.bitwise_or(b, dtype(tag), out=b, where=alpha > _ZERO)
        self._shapes = [[] for _ in _KINDS]
        self._layers = []


def flush_all(canvases: Sequence[Canvas]) -> None:
    """:meth:`Canvas.flush` for several canvases at once: the shapes of all of them evaluated together.

    The shapes of one kind from every canvas share one flat batch, and the blending terms of all layers
    are prepared together; each canvas then blends its own layers. Canvases whose masks differ in word
    size are flushed in separate groups.
    """
    canvases = [c for c in canvases if c._layers]
    dtypes = {c._dtype for c in canvases}
    if len(dtypes) > 1:
        for dtype in dtypes:
            flush_all([c for c in canvases if c._dtype is dtype])
        return
    if not canvases:
        return
    groups, total = [], 0
    for kind in range(len(_KINDS)):
        shapes = [shape for c in canvases for shape in c._shapes[kind]]
        if shapes:
            shapes.sort(key=lambda s: len(s.rows), reverse=True)
            groups.append((kind, shapes, total))
            for shape in shapes:
                shape.off = total
                total += shape.n
    base_total = total
    edited = [layer[0] for c in canvases for layer in c._layers if layer[0].kind is None and layer[4]]
    for shape in edited:
        shape.off = total
        total += shape.n
    flat = np.empty(total, np.float32)
    for kind, shapes, start in groups:
        end = shapes[-1].off + shapes[-1].n
        Canvas._evaluate(kind, shapes, flat[start:end])
    for shape in edited:  # after the shapes they edit; their coverage joins the flat buffer
        dst = flat[shape.off:shape.off + shape.n].reshape(shape.h, shape.w)
        if shape.alpha is None:  # its last edit writes there
            shape.alpha = shape.edit(Canvas._alpha(shape.base, flat[:base_total]), dst)
        else:
            dst[...] = shape.alpha
    ordered = [shape for _, shapes, _ in groups for shape in shapes] + edited
    sizes = [s.n for s in ordered]
    # Blending terms of every layer at once: 1 - alpha and colour * alpha; bits kept (not opaque)
    # and bits added (covered: the tags of a present layer, the would-be bits of an absent one).
    oma = _ONE - flat
    colors = np.array([(0.0, 0.0, 0.0) if s.color is None else s.color for s in ordered], np.float32)
    ca = np.repeat(colors.T, sizes, axis=1)
    ca *= flat
    keep = add = None
    if any(c.bits is not None for c in canvases):
        dtype = canvases[0]._dtype
        keep = np.negative(flat < _ONE, dtype=dtype)  # not opaque -> all bits set
        add = np.repeat(np.array([s.tags for s in ordered], dtype=dtype), sizes)
        add *= flat > _ZERO
    for canvas in canvases:
        canvas._blend(oma, ca, keep, add, flat)
