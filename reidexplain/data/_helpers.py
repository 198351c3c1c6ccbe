"""Argument checks and the query/gallery choice of the synthetic datasets."""

from __future__ import annotations

import numpy as np


def check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}`: expected an int >= {minimum}, got {type(value).__name__}")
    if int(value) < minimum:
        raise ValueError(f"`{name}`: expected an int >= {minimum}, got {value}")
    return int(value)


def check_size(image_size: object) -> tuple[int, int]:
    if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
            or not all(isinstance(v, (int, np.integer)) for v in image_size)):
        raise TypeError(f"`image_size`: expected a tuple (height, width) of ints, got {image_size!r}")
    h, w = int(image_size[0]), int(image_size[1])
    if h < 32 or w < 16:
        raise ValueError(f"`image_size`: expected height >= 32 and width >= 16, got {(h, w)}")
    return h, w


def query_images(cams: list[int]) -> list[int]:
    """Market-style queries of one identity: one image per camera, each keeping a cross-camera match."""
    counts = {c: cams.count(c) for c in cams}
    multi = [c for c in dict.fromkeys(cams) if counts[c] >= 2]
    if len(multi) >= 2:
        chosen = list(dict.fromkeys(cams))
    elif len(multi) == 1:
        chosen = [c for c in dict.fromkeys(cams) if c != multi[0]]
    else:
        return [0]
    return [cams.index(c) for c in chosen]
