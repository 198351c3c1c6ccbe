"""Query x gallery scoring leaves labels unknown in either image out of the X-mAPs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from reidexplain.decomposition import matrix_decomposition
from reidexplain.interpreter._evaluate import score_query_gallery
from reidexplain.interpreter.model import Components
from reidexplain.metrics.explanation import x_map_exclusive

# score_query_gallery only needs the model's decomposition rule.
MODEL = SimpleNamespace(decompose_matrix=lambda q, g: matrix_decomposition(
    q.embeddings, q.components, g.embeddings, g.components, "euclidean"))


def _side(n: int, m: int, seed: int, known: torch.Tensor | None) -> dict:
    gen = torch.Generator().manual_seed(seed)
    comps = Components(torch.randn(n, 4, generator=gen), torch.randn(n, m, 4, generator=gen), torch.ones(n, m, 1, 1))
    out = {"components": comps, "attributes": torch.rand(n, m, generator=gen) < 0.5,
           "fingerprints": torch.randn(n, 2, generator=gen)}
    if known is not None:
        out["known"] = known
    return out


def test_all_known_mask_changes_nothing_and_unknowns_change_the_scores():
    m = 6
    plain_scores, d, _ = score_query_gallery(MODEL, _side(3, m, 0, None), _side(4, m, 1, None))
    ones_scores, _, _ = score_query_gallery(MODEL, _side(3, m, 0, torch.ones(3, m, dtype=torch.bool)),
                                            _side(4, m, 1, torch.ones(4, m, dtype=torch.bool)))
    assert ones_scores.keys() == plain_scores.keys()
    for key, value in plain_scores.items():
        assert math.isclose(ones_scores[key], value, rel_tol=1e-9, abs_tol=1e-9)
    known_q = torch.ones(3, m, dtype=torch.bool)
    known_q[:, :3] = False
    query, gallery = _side(3, m, 0, known_q), _side(4, m, 1, torch.ones(4, m, dtype=torch.bool))
    scores, _, _ = score_query_gallery(MODEL, query, gallery)
    # The same score computed by hand: attributes 3.. only.
    parts = MODEL.decompose_matrix(query["components"], gallery["components"])
    exclusive = query["attributes"][:, None] != gallery["attributes"][None]
    expected = x_map_exclusive(parts.shares[..., 3:], exclusive[..., 3:])
    assert math.isclose(scores["x_map_e"], float(expected), rel_tol=1e-5, abs_tol=1e-5)
    assert d.shape == (3, 4)
