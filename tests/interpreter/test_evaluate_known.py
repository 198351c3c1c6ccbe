"""Query x gallery scoring leaves labels unknown in either image out of the X-mAPs."""

from __future__ import annotations

import math

import torch

from reidexplain.interpreter._evaluate import score_query_gallery
from reidexplain.metrics.explanation import x_map_exclusive


def _side(n: int, m: int, seed: int, known: torch.Tensor | None) -> dict:
    gen = torch.Generator().manual_seed(seed)
    out = {"embeddings": torch.randn(n, 4, generator=gen), "components": torch.randn(n, m, 4, generator=gen),
           "attributes": torch.rand(n, m, generator=gen) < 0.5, "fingerprints": torch.randn(n, 2, generator=gen)}
    if known is not None:
        out["known"] = known
    return out


def test_all_known_mask_changes_nothing_and_unknowns_change_the_scores():
    m = 6
    plain_scores, d, _ = score_query_gallery(_side(3, m, 0, None), _side(4, m, 1, None), "euclidean")
    ones_scores, _, _ = score_query_gallery(_side(3, m, 0, torch.ones(3, m, dtype=torch.bool)),
                                            _side(4, m, 1, torch.ones(4, m, dtype=torch.bool)), "euclidean")
    assert ones_scores == plain_scores
    known_q = torch.ones(3, m, dtype=torch.bool)
    known_q[:, :3] = False
    query, gallery = _side(3, m, 0, known_q), _side(4, m, 1, torch.ones(4, m, dtype=torch.bool))
    scores, _, _ = score_query_gallery(query, gallery, "euclidean")
    # The same score computed by hand: attributes 3.. only.
    from reidexplain.interpreter._evaluate import component_distance_matrices

    _, dk = component_distance_matrices(query["embeddings"], query["components"], gallery["embeddings"],
                                        gallery["components"], "euclidean")
    shares = dk / dk.sum(-1, keepdim=True)
    exclusive = query["attributes"][:, None] != gallery["attributes"][None]
    expected = x_map_exclusive(shares[..., 3:], exclusive[..., 3:])
    assert math.isclose(scores["x_map_e"], float(expected), rel_tol=1e-5, abs_tol=1e-5)
    assert d.shape == (3, 4)
