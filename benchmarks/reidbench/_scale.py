"""Scale: explaining every query x gallery pair with the matrix API, as the gallery grows."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from reidexplain.explainer import Explainer, MatrixExplanation

__all__ = ["time_matrix"]


def time_matrix(explainer: Explainer, query_images: torch.Tensor, gallery_images: torch.Tensor,
                fractions: Sequence[float], single_pair_seconds: float,
                seed: int = 0) -> tuple[list[dict[str, Any]], MatrixExplanation | None]:
    """Time :meth:`Explainer.explain_matrix` on all queries against growing fractions of the gallery.

    Each fraction takes the first ``ceil(f * G)`` images of one seeded permutation of the gallery, so a
    larger gallery contains the smaller ones. The per-pair time is compared with ``single_pair_seconds``
    (one pair per :meth:`Explainer.explain` call, measured on the benchmark's pairs).

    Args:
        explainer: A fitted explainer.
        query_images: ``(Q,3,H,W)``.
        gallery_images: ``(G,3,H,W)``.
        fractions: Gallery fractions in ``(0, 1]``.
        single_pair_seconds: Wall-clock seconds of one single-pair explanation.
        seed: Seed of the gallery permutation.

    Returns:
        ``(rows, full)``: one row per fraction (``gallery``, ``pairs``, ``seconds``, ``cpu_seconds``, ``ms_per_pair``,
        ``speedup_vs_single_pair``), and the :class:`MatrixExplanation` of the whole gallery in the
        original order if fraction 1 was timed (else ``None``).
    """
    total = gallery_images.shape[0]
    order = torch.from_numpy(np.random.default_rng(seed).permutation(total))
    rows, full = [], None
    for fraction in sorted(fractions):
        g = max(1, math.ceil(fraction * total))
        subset = order[:g] if g < total else torch.arange(total)
        images = gallery_images[subset]
        start, start_cpu = time.perf_counter(), time.process_time()
        matrix = explainer.explain_matrix(query_images, images)
        seconds, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        pairs = query_images.shape[0] * g
        per_pair = seconds / pairs
        rows.append({"gallery_fraction": float(fraction), "queries": int(query_images.shape[0]),
                     "gallery": g, "pairs": pairs, "seconds": seconds, "cpu_seconds": cpu,
                     "ms_per_pair": 1e3 * per_pair,
                     "speedup_vs_single_pair": single_pair_seconds / per_pair if per_pair > 0 else float("inf")})
        if g == total:
            full = matrix
    return rows, full
