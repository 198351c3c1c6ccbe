"""Camera backgrounds, occluders, light and noise: everything of a photo that is not the person.

Each camera owns a textured background bank twice as wide as the image, generated once (cached) from
the domain and camera id; an image is a crop of it at the nuisance's offset. Light, saturation and noise
are per-pixel operations applied after the person is drawn, so they leave unchanged pixels unchanged in
a counterfactual render.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

from reidexplain.data._canvas import fast_clip
from reidexplain.data._domains import CameraLook, DomainSpec, camera_look, get_domain
from reidexplain.data._identity import Nuisance


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    coarse = rng.standard_normal((h // cell + 2, w // cell + 2))
    fine = ndimage.zoom(coarse, cell, order=1)
    return fine[:h, :w].astype(np.float32)


def _wall(kind: str, look: CameraLook, rng: np.random.Generator, h: int, w: int, unit: float) -> np.ndarray:
    base = np.asarray(look.wall_rgb, dtype=np.float32)[:, None, None] * np.ones((1, h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "brick":
        bh, bw = max(2.0, 0.05 * unit), max(4.0, 0.12 * unit)
        row = np.floor(ys / bh)
        shifted = xs + (row % 2) * bw / 2
        brick_id = row * 997 + np.floor(shifted / bw)
        shade = 1.0 + 0.12 * np.sin(brick_id * 12.9898) * np.cos(brick_id * 4.1414)
        mortar = ((ys % bh) < 1.0) | ((shifted % bw) < 1.0)
        base = base * shade[None] * np.where(mortar, 1.25, 1.0)[None]
    elif kind == "windows":
        cw, ch = max(6.0, 0.2 * unit), max(8.0, 0.22 * unit)
        fx, fy = (xs % cw) / cw, (ys % ch) / ch
        glass = (fx > 0.18) & (fx < 0.82) & (fy > 0.15) & (fy < 0.8)
        tone = np.array([0.25, 0.32, 0.40], np.float32)[:, None, None] * (1.0 + 0.6 * fy[None])
        base = np.where(glass[None], tone, base)
    elif kind in ("foliage", "trees"):
        leaves = _smooth_noise(rng, h, w, max(2, int(0.06 * unit)))
        leafy = np.array([0.20, 0.42, 0.16] if kind == "foliage" else [0.22, 0.20, 0.17], np.float32)
        mix = np.clip(0.5 + 0.9 * leaves, 0.0, 1.0)[None]
        base = base * (1 - mix) + leafy[:, None, None] * mix * (0.7 + 0.3 * mix)
        for x in rng.uniform(0, w, size=max(2, w // 40)):  # trunks
            trunk = np.abs(xs - x) < max(1.0, 0.025 * unit)
            base = np.where(trunk[None], np.array([0.25, 0.17, 0.10], np.float32)[:, None, None], base)
    elif kind == "panels":
        edges = np.cumsum(rng.uniform(0.15, 0.5, size=64) * unit)
        idx = np.searchsorted(edges, xs[0])
        colors = rng.uniform(0.2, 0.9, size=(65, 3)).astype(np.float32)
        panel = colors[idx].T[:, None, :] * np.ones((1, h, 1), np.float32)
        base = 0.5 * base + 0.5 * panel
        sign_row = (ys > 0.1 * h) & (ys < 0.1 * h + max(3.0, 0.06 * unit))
        base = np.where(sign_row[None], base * 0.5, base)
    return base


def _ground(kind: str, look: CameraLook, rng: np.random.Generator, h: int, w: int, unit: float) -> np.ndarray:
    base = np.asarray(look.ground_rgb, dtype=np.float32)[:, None, None] * np.ones((1, h, w), np.float32)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "tiles":
        size = max(4.0, 0.16 * unit)
        joint = ((xs + 0.5 * ys) % size < 1.0) | (ys % (0.5 * size) < 1.0)
        base = base * np.where(joint, 0.8, 1.0)[None]
    elif kind == "asphalt":
        grain = rng.standard_normal((h, w)).astype(np.float32)
        base = base * (1.0 + 0.06 * grain)[None]
        lane = (np.abs(ys - 0.6 * h) < max(1.0, 0.02 * unit)) & (xs % (0.5 * unit) < 0.3 * unit)
        base = np.where(lane[None], np.array([0.85, 0.8, 0.6], np.float32)[:, None, None], base)
    elif kind == "grass":
        blades = _smooth_noise(rng, h, w, 2)
        base = base * (1.0 + 0.15 * blades)[None]
    elif kind == "snow":
        drift = _smooth_noise(rng, h, w, max(2, int(0.1 * unit)))
        base = base * (1.0 - 0.08 * np.abs(drift))[None]
    return base


def background_bank(spec: DomainSpec, camid: int, height: int, width: int) -> np.ndarray:
    """The camera's background texture ``(3, height, 2 * width)``, read-only and cached."""
    return _bank(spec.name, int(camid), int(height), int(width))


@lru_cache(maxsize=128)
def _bank(domain: str, camid: int, height: int, width: int) -> np.ndarray:
    spec = get_domain(domain)
    look = camera_look(spec, camid)
    rng = np.random.default_rng([spec.code, int(camid), 104729, height, width])
    w2, unit = 2 * width, float(height)
    horizon = int(look.horizon * height)
    img = np.empty((3, height, w2), np.float32)
    img[:, :horizon] = _wall(look.wall, look, rng, horizon, w2, unit)
    img[:, horizon:] = _ground(look.ground, look, rng, height - horizon, w2, unit)
    for x in rng.uniform(0, w2, size=int(rng.integers(1, 4))):  # poles and lamp posts
        half = max(0.6, rng.uniform(0.01, 0.025) * unit)
        top = int(rng.uniform(0.0, 0.4) * height)
        bottom = int(min(height, horizon + rng.uniform(0.02, 0.15) * height))
        cols = slice(max(0, int(x - half)), min(w2, int(np.ceil(x + half))))
        img[:, top:bottom, cols] = rng.uniform(0.1, 0.5, size=(3, 1, 1)).astype(np.float32)
    for _ in range(int(rng.integers(1, 4))):  # bushes, bins, bikes near the horizon
        cx, cy = rng.uniform(0, w2), horizon + rng.uniform(-0.08, 0.05) * height
        rx, ry = rng.uniform(0.08, 0.25) * unit, rng.uniform(0.04, 0.1) * unit
        ys, xs = np.mgrid[0:height, 0:w2].astype(np.float32)
        blob = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 < 1.0
        img = np.where(blob[None], rng.uniform(0.1, 0.6, size=(3, 1, 1)).astype(np.float32), img)
    light = 1.0 + 0.12 * _smooth_noise(rng, height, w2, max(2, height // 6))
    img = img * light[None] + rng.normal(0.0, 0.012, size=img.shape).astype(np.float32)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    img.setflags(write=False)
    return img


def paint_background(image: np.ndarray, bank: np.ndarray, offset: float) -> None:
    """Copy the crop of ``bank`` at relative ``offset`` into ``image`` (both ``(3, H, *)``)."""
    width = image.shape[2]
    x0 = int(round(offset * (bank.shape[2] - width)))
    image[...] = bank[:, :, x0:x0 + width]


def paint_occluder(image: np.ndarray, bank: np.ndarray, nuisance: Nuisance) -> None:
    """Paste a darkened patch of background clutter over the occluder box, if any."""
    if nuisance.occluder is None:
        return
    _, h, w = image.shape
    bx0, by0, bx1, by1 = nuisance.occluder
    x0, x1 = int(round(bx0 * w)), int(round(bx1 * w))
    y0, y1 = int(round(by0 * h)), int(round(by1 * h))
    if x1 <= x0 or y1 <= y0:
        return
    src = int(round(nuisance.occluder_offset * (bank.shape[2] - (x1 - x0))))
    # Mirror the clutter vertically so that the ground of the bank ends up at the top of the box:
    # the patch reads as a foreground object rather than as a window onto the background.
    patch = bank[:, ::-1, src:src + (x1 - x0)][:, : y1 - y0]
    image[:, y0:y1, x0:x1] = patch * np.float32(nuisance.occluder_shade)


@lru_cache(maxsize=16)
def _noise_bank(height: int, width: int) -> np.ndarray:
    bank = np.random.default_rng([height, width, 31337]).standard_normal(
        (3, 2 * height, 2 * width), dtype=np.float32)
    bank.setflags(write=False)
    return bank


def _noise_crop(height: int, width: int, seed: int) -> tuple[np.ndarray, float]:
    """The read-only crop of the noise bank for ``seed`` and its sign (see :func:`camera_noise`)."""
    bank = _noise_bank(height, width)
    x0 = seed % (width + 1)
    y0 = (seed // (width + 1)) % (height + 1)
    noise = bank[:, y0:y0 + height, x0:x0 + width]
    # Reversing or flipping the crop multiplies the distinct noise fields by 8 at no cost.
    variant = (seed // ((width + 1) * (height + 1))) % 8
    if variant & 1:
        noise = noise[:, ::-1]
    if variant & 2:
        noise = noise[:, :, ::-1]
    return noise, -1.0 if variant & 4 else 1.0


def camera_noise(height: int, width: int, seed: int) -> np.ndarray:
    """Unit Gaussian noise ``(3, H, W)`` for ``seed``: a seeded crop of a cached bank (cheap)."""
    noise, sign = _noise_crop(height, width, seed)
    return -noise if sign < 0 else noise


@lru_cache(maxsize=64)
def _ramp_base(height: int) -> np.ndarray:
    """Row position in [-0.5, 0.5] (float32): the shape of the vertical light gradient."""
    base = np.arange(height, dtype=np.float32) / max(height - 1, 1) - 0.5
    base.setflags(write=False)
    return base


def apply_camera(image: np.ndarray, nuisance: Nuisance) -> np.ndarray:
    """Light (gain, colour cast, vertical gradient), saturation, Gaussian noise; clipped to [0, 1]."""
    _, h, w = image.shape
    ramp = 1.0 + nuisance.gradient * _ramp_base(h)
    gain = np.asarray(nuisance.cast, np.float32)[:, None] * np.float32(nuisance.gain)
    out = image * (gain * ramp[None, :]).astype(np.float32)[:, :, None]
    if nuisance.saturation != 1.0:
        # out.mean(axis=0, keepdims=True), without its Python overhead: the same sum and division.
        gray = np.add.reduce(out, axis=0, keepdims=True)
        np.true_divide(gray, np.intp(out.shape[0]), out=gray, casting="unsafe")
        out -= gray
        out *= np.float32(nuisance.saturation)
        out += gray
    fast_clip(out, 0.0, 1.0, out=out)
    if nuisance.noise_std > 0:
        # -noise * std == noise * -std exactly: the sign goes into the scale, not into a copy.
        noise, sign = _noise_crop(h, w, nuisance.noise_seed)
        out += noise * np.float32(sign * nuisance.noise_std)
        fast_clip(out, 0.0, 1.0, out=out)
    return out
