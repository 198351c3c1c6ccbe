"""The deferred, batched canvas draws exactly what drawing shape by shape (the reference below) draws."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reidexplain.data._canvas import Canvas

H, W = 48, 32
F32 = np.float32


# ------------------------------------------------------------------ reference: one shape at a time
def _window(x0, y0, x1, y1):
    ix0, iy0 = max(math.floor(x0) - 1, 0), max(math.floor(y0) - 1, 0)
    ix1, iy1 = min(math.ceil(x1) + 1, W), min(math.ceil(y1) + 1, H)
    return None if ix0 >= ix1 or iy0 >= iy1 else (iy0, iy1, ix0, ix1)


def _axes(win):
    return np.arange(win[2], win[3], dtype=F32) + F32(0.5), np.arange(win[0], win[1], dtype=F32) + F32(0.5)


def _coverage(dist):
    return np.minimum(np.maximum(F32(0.5) - dist, F32(0.0)), F32(1.0))


def ref_capsules(segments):
    rows = []
    for (ax, ay), (bx, by), r in segments:
        dx, dy = bx - ax, by - ay
        denom = dx * dx + dy * dy
        rows.append((ax, ay, dx, dy, 1.0 / denom if denom > 1e-9 else 0.0, denom, r))
    win = _window(min(min(q[0], q[0] + q[2]) - q[6] for q in rows), min(min(q[1], q[1] + q[3]) - q[6] for q in rows),
                  max(max(q[0], q[0] + q[2]) + q[6] for q in rows), max(max(q[1], q[1] + q[3]) + q[6] for q in rows))
    if win is None:
        return None
    xs, ys = _axes(win)
    dists = []
    for row in rows:
        ax, ay, dx, dy, inv, denom, rad = (F32(v) for v in row)
        px, py = xs - ax, ys[:, None] - ay
        proj = py * dy + px * dx
        t = np.minimum(np.maximum(proj * inv, F32(0.0)), F32(1.0))
        sq = (py * py + px * px) - t * (proj * F32(2.0) - t * denom)
        dists.append(np.sqrt(np.maximum(sq, F32(0.0))) - rad)
    return win, _coverage(np.minimum.reduce(dists))


def ref_ellipses(shapes):
    win = _window(min(e[0] - e[2] for e in shapes), min(e[1] - e[3] for e in shapes),
                  max(e[0] + e[2] for e in shapes), max(e[1] + e[3] for e in shapes))
    if win is None:
        return None
    xs, ys = _axes(win)
    dists = []
    for cx, cy, rx, ry in shapes:
        cx, cy, irx, iry, rmin = (F32(v) for v in (cx, cy, 1.0 / rx, 1.0 / ry, min(rx, ry)))
        dists.append((np.sqrt(((ys[:, None] - cy) * iry) ** 2 + ((xs - cx) * irx) ** 2) - F32(1.0)) * rmin)
    return win, _coverage(np.minimum.reduce(dists))


def ref_rect(x0, y0, x1, y1):
    x0, x1, y0, y1 = min(x0, x1), max(x0, x1), min(y0, y1), max(y0, y1)
    win = _window(x0, y0, x1, y1)
    if win is None:
        return None
    xs, ys = _axes(win)
    dist = np.maximum.outer(np.maximum(F32(y0) - ys, ys - F32(y1)), np.maximum(F32(x0) - xs, xs - F32(x1)))
    return win, _coverage(dist)


def ref_polygon(points):
    px, py = [p[0] for p in points], [p[1] for p in points]
    win = _window(min(px), min(py), max(px), max(py))
    if win is None:
        return None
    n = len(points)
    orient = 1.0 if sum(px[i] * py[(i + 1) % n] - px[(i + 1) % n] * py[i] for i in range(n)) > 0 else -1.0
    xs, ys = _axes(win)
    dist = None
    for i in range(n):
        ex, ey = px[(i + 1) % n] - px[i], py[(i + 1) % n] - py[i]
        norm = math.hypot(ex, ey)
        if norm < 1e-9:
            continue
        nx, ny = orient * ey / norm, -orient * ex / norm
        d = np.add.outer(ys * F32(ny), xs * F32(nx) - F32(px[i] * nx + py[i] * ny))
        dist = d if dist is None else np.maximum(dist, d)
    return None if dist is None else (win, _coverage(dist))


def ref_clip(region, above):
    if region is None:
        return None
    win, alpha = region
    ys = _axes(win)[1]
    return win, alpha * np.clip(0.5 - (ys - above), 0.0, 1.0).astype(F32)[:, None]


def ref_paint(image, bits, region, color, tags, present, would_be):
    if region is None:
        return
    (y0, y1, x0, x1), alpha = region
    if present:
        win = image[:, y0:y1, x0:x1]
        win *= F32(1.0) - alpha
        win += np.asarray(color, F32).reshape(3, 1, 1) * alpha
    b = bits[y0:y1, x0:x1]
    if not present:
        if would_be:
            np.bitwise_or(b, would_be, out=b, where=alpha > 0)
        return
    np.copyto(b, 0, where=alpha >= 1.0)
    if tags:
        np.bitwise_or(b, tags, out=b, where=alpha > 0)


# ------------------------------------------------------------------ random scenes
def _point(rng):
    return float(rng.uniform(-6, W + 6)), float(rng.uniform(-6, H + 6))


def _scene(rng, num_masks):
    """A list of (kind, args, clip above or None, colour, tags, present, would_be)."""
    layers = []
    for _ in range(int(rng.integers(5, 40))):
        kind = str(rng.choice(["capsules", "ellipses", "rect", "polygon"]))
        k = int(rng.integers(1, 5))
        if kind == "capsules":
            args = ([(_point(rng), _point(rng) if rng.random() < 0.9 else None, float(rng.uniform(0.3, 6)))
                     for _ in range(k)],)
            args = ([(a, b if b is not None else a, r) for a, b, r in args[0]],)  # some points, not segments
        elif kind == "ellipses":
            args = ([(*_point(rng), float(rng.uniform(0.4, 9)), float(rng.uniform(0.4, 9))) for _ in range(k)],)
        elif kind == "rect":
            args = (*_point(rng), *_point(rng))
        else:
            c, r = _point(rng), rng.uniform(1, 12)
            angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 9))))[:: 1 if rng.random() < 0.5 else -1]
            args = ([(c[0] + r * math.cos(a), c[1] + r * math.sin(a)) for a in angles],)
        above = float(rng.uniform(0, H)) if rng.random() < 0.15 else None
        tags = int(rng.integers(0, 1 << num_masks)) if rng.random() < 0.7 else 0
        present = bool(rng.random() < 0.7)
        would_be = 1 << int(rng.integers(num_masks)) if rng.random() < 0.8 else 0
        layers.append((kind, args, above, tuple(rng.uniform(0, 1, 3)), tags, present, would_be))
    return layers


REFERENCE = {"capsules": ref_capsules, "ellipses": ref_ellipses, "rect": ref_rect, "polygon": ref_polygon}


@pytest.mark.parametrize("num_masks", [5, 40])
@pytest.mark.parametrize("seed", range(12))
def test_batched_canvas_matches_shape_by_shape_drawing(seed, num_masks):
    rng = np.random.default_rng(seed)
    background = rng.uniform(0, 1, (3, H, W)).astype(F32)
    canvas = Canvas(H, W, num_masks)
    canvas.image[...] = background
    image = background.copy()
    bits = np.zeros((H, W), np.uint32 if num_masks <= 32 else np.uint64)
    shapes = []
    for kind, args, above, color, tags, present, would_be in _scene(rng, num_masks):
        shape = getattr(canvas, kind)(*args)
        region = REFERENCE[kind](*args)
        if above is not None:
            shape, region = canvas.clip(shape, above=above), ref_clip(region, above)
        assert (shape is None) == (region is None)
        canvas.paint(shape, color, tags, present, would_be)
        ref_paint(image, bits, region, color, tags, present, would_be)
        shapes.append(shape)
        if shape is not None and rng.random() < 0.1:  # the same shape painted again
            canvas.paint(shape, color[::-1], tags, True)
            ref_paint(image, bits, region, color[::-1], tags, True, 0)
    masks = canvas.masks()  # flushes
    np.testing.assert_array_equal(canvas.image, image)
    powers = (np.uint64(1) << np.arange(num_masks, dtype=np.uint64))[:, None, None]
    np.testing.assert_array_equal(masks, (bits[None].astype(np.uint64) & powers) != 0)


def test_flush_twice_and_empty_canvas():
    canvas = Canvas(H, W, 3)
    canvas.flush()  # nothing recorded
    canvas.paint(canvas.rect(2, 2, 10, 12), (1.0, 0.0, 0.0), 0b101)
    canvas.flush()
    first = canvas.image.copy()
    canvas.flush()  # nothing new
    np.testing.assert_array_equal(canvas.image, first)
    assert canvas.masks()[[0, 2], 5, 5].all() and not canvas.masks()[1].any()
    canvas.paint(canvas.ellipse(20, 30, 4, 6), (0.0, 1.0, 0.0), 0b010)
    canvas.flush()
    assert float(canvas.image[1, 30, 20]) == pytest.approx(1.0) and canvas.masks()[1, 30, 20]
    assert Canvas(H, W, 3, with_masks=False).masks() is None


def test_flush_all_matches_flushing_each_canvas():
    from reidexplain.data._canvas import flush_all

    rng = np.random.default_rng(7)
    scenes = [(_scene(rng, m), m, masked) for m, masked in ((5, True), (5, False), (40, True), (5, True))]

    def record(layers, num_masks, masked):
        canvas = Canvas(H, W, num_masks, with_masks=masked)
        canvas.image[...] = 0.25
        for kind, args, above, color, tags, present, would_be in layers:
            shape = getattr(canvas, kind)(*args)
            if above is not None:
                shape = canvas.clip(shape, above=above)
            canvas.paint(shape, color, tags, present, would_be)
        return canvas

    together = [record(*scene) for scene in scenes]
    flush_all(together)
    for canvas, scene in zip(together, scenes, strict=True):
        alone = record(*scene)
        alone.flush()
        np.testing.assert_array_equal(canvas.image, alone.image)
        if scene[2]:
            np.testing.assert_array_equal(canvas.masks(), alone.masks())
