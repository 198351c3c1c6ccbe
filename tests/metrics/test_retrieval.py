"""Retrieval evaluation against a brute-force reference, and feature extraction."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from reidexplain.metrics import evaluate_retrieval, extract_features


def brute_force_retrieval(dist, qpids, gpids, qcams, gcams, ranks):
    """Independent reference: pure Python loops, Python's (stable) sort."""
    hits = {k: 0 for k in ranks}
    aps = []
    for i in range(len(qpids)):
        order = sorted(range(len(gpids)), key=lambda j: dist[i][j])
        kept = [j for j in order if not (gpids[j] == qpids[i] and gcams[j] == qcams[i])]
        relevant = [gpids[j] == qpids[i] for j in kept]
        if not any(relevant):
            continue
        first = relevant.index(True)
        for k in ranks:
            hits[k] += first < k
        found, precisions = 0, []
        for position, is_match in enumerate(relevant):
            if is_match:
                found += 1
                precisions.append(found / (position + 1))
        aps.append(sum(precisions) / len(precisions))
    if not aps:
        return None
    out = {f"rank{k}": 100.0 * hits[k] / len(aps) for k in ranks}
    out["mAP"] = 100.0 * sum(aps) / len(aps)
    return out


@st.composite
def retrieval_problems(draw):
    q = draw(st.integers(1, 6))
    g = draw(st.integers(1, 12))
    # Few distinct distance values so that ties are frequent.
    values = st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 1.5])
    dist = [[draw(values) for _ in range(g)] for _ in range(q)]
    pid, cam = st.integers(0, 3), st.integers(0, 2)
    qpids = [draw(pid) for _ in range(q)]
    gpids = [draw(pid) for _ in range(g)]
    qcams = [draw(cam) for _ in range(q)]
    gcams = [draw(cam) for _ in range(g)]
    return dist, qpids, gpids, qcams, gcams


@settings(max_examples=300, deadline=None, derandomize=True)
@given(retrieval_problems())
def test_matches_brute_force_reference(problem):
    dist, qpids, gpids, qcams, gcams = problem
    ranks = (1, 2, 5)
    expected = brute_force_retrieval(dist, qpids, gpids, qcams, gcams, ranks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = evaluate_retrieval(torch.tensor(dist), qpids, gpids, qcams, gcams, ranks=ranks)
    assert set(got) == {"rank1", "rank2", "rank5", "mAP"}
    if expected is None:
        assert all(math.isnan(v) for v in got.values())
    else:
        for key, value in expected.items():
            assert got[key] == pytest.approx(value, abs=1e-9), key


def test_known_values_by_hand():
    # Query 0 (pid 1, cam 0): gallery sorted = [g1 (pid 2), g0 (pid 1, cam 1), g3 (pid 1, cam 0: ignored),
    # g2 (pid 1, cam 2)] -> valid matches at ranks 2 and 3: AP = (1/2 + 2/3) / 2.
    # Query 1 (pid 2, cam 1): gallery sorted = [g1 (pid 2, cam 1: ignored), ...]: no valid match, skipped.
    dist = np.array([[0.2, 0.1, 0.9, 0.3], [0.5, 0.0, 0.6, 0.7]])
    got = evaluate_retrieval(dist, [1, 2], [1, 2, 1, 1], [0, 1], [1, 1, 2, 0], ranks=(1, 2))
    assert got["rank1"] == pytest.approx(0.0, abs=1e-9)
    assert got["rank2"] == pytest.approx(100.0)
    assert got["mAP"] == pytest.approx(100.0 * (0.5 + 2 / 3) / 2)


def test_ties_keep_gallery_order():
    # Equal distances: the stable sort ranks gallery entry 0 (a non-match) first.
    got = evaluate_retrieval(np.zeros((1, 2)), [1], [0, 1], [0], [1, 1], ranks=(1,))
    assert got == {"rank1": 0.0, "mAP": 50.0}


def test_chunked_rows_match_single_pass(monkeypatch):
    rng = np.random.default_rng(0)
    dist = rng.random((23, 17))
    qp, gp = rng.integers(0, 5, 23), rng.integers(0, 5, 17)
    qc, gc = rng.integers(0, 3, 23), rng.integers(0, 3, 17)
    whole = evaluate_retrieval(dist, qp, gp, qc, gc)
    import reidexplain.metrics.retrieval as retrieval

    monkeypatch.setattr(retrieval, "_CELLS_PER_CHUNK", 40)  # 2 rows per chunk
    assert evaluate_retrieval(dist, qp, gp, qc, gc) == pytest.approx(whole)
    assert whole == pytest.approx(brute_force_retrieval(dist, qp, gp, qc, gc, (1, 5, 10)))


def test_all_queries_without_match_warn_and_return_nan():
    with pytest.warns(UserWarning, match="no query has a valid match"):
        got = evaluate_retrieval(torch.rand(2, 3), [0, 0], [0, 1, 2], [1, 1], [1, 0, 0])
    # Query pid 0 is only in the gallery with the same camera -> ignored; pids 1, 2 never match.
    assert set(got) == {"rank1", "rank5", "rank10", "mAP"}
    assert all(math.isnan(v) for v in got.values())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"distmat": np.zeros(3)}, ValueError, r"`distmat`: expected 2-D"),
        ({"query_pids": [0]}, ValueError, r"`query_pids`: expected 2 entries .* got 1"),
        ({"gallery_camids": [0, 0]}, ValueError, r"`gallery_camids`: expected 3 entries"),
        ({"gallery_pids": [0.5, 1, 2]}, ValueError, r"`gallery_pids`: expected integer ids"),
        ({"distmat": np.full((2, 3), np.nan)}, ValueError, r"NaN"),
        ({"ranks": (0,)}, ValueError, r"`ranks`"),
        ({"ranks": ()}, ValueError, r"`ranks`"),
        ({"query_pids": object()}, ValueError, r"`query_pids`"),
    ],
)
def test_input_errors(kwargs, error, match):
    args = {
        "distmat": np.zeros((2, 3)),
        "query_pids": [0, 1],
        "gallery_pids": [0, 1, 2],
        "query_camids": [0, 0],
        "gallery_camids": [1, 1, 1],
    }
    args.update(kwargs)
    with pytest.raises(error, match=match):
        evaluate_retrieval(**args)


class _Items(torch.utils.data.Dataset):
    """Dict items with masks, as the synthetic data returns them."""

    def __init__(self, n: int = 10) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 3, 8, 4, generator=g)
        self.pids = [i // 2 for i in range(n)]
        self.camids = [i % 2 for i in range(n)]

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, i: int) -> dict:
        return {
            "image": self.images[i],
            "pid": self.pids[i],
            "camid": self.camids[i],
            "masks": torch.zeros(2, 8, 4, dtype=torch.bool),
        }


def _toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(96, 6), nn.BatchNorm1d(6))


def test_extract_features_dataset_matches_direct_forward_and_restores_mode():
    data, model = _Items(), _toy_model()
    model.train()
    feats, pids, camids = extract_features(model, data, batch_size=3)
    assert model.training  # restored
    model.eval()
    with torch.no_grad():
        expected = model(data.images)
    torch.testing.assert_close(feats, expected)
    assert pids.tolist() == data.pids and camids.tolist() == data.camids
    assert pids.dtype == torch.int64


def test_extract_features_loader_and_eval_mode_kept():
    data, model = _Items(), _toy_model().eval()
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    feats, pids, _ = extract_features(model, loader)
    assert not model.training
    assert feats.shape == (10, 6) and pids.tolist() == data.pids
    assert not feats.requires_grad


def test_extract_features_errors():
    with pytest.raises(ValueError, match="batch_size"):
        extract_features(_toy_model(), _Items(), batch_size=0)
    with pytest.raises(ValueError, match=r"\(B,D\)"):
        extract_features(nn.Identity(), _Items())
    with pytest.raises(TypeError, match="dict with 'image'"):
        extract_features(_toy_model(), [torch.rand(3, 8, 4)])


def test_end_to_end_perfect_embedding():
    # An embedding that is the identity itself retrieves perfectly across cameras.
    data = _Items(12)
    feats = torch.tensor(data.pids, dtype=torch.float).unsqueeze(1)
    dist = torch.cdist(feats, feats)
    got = evaluate_retrieval(dist, data.pids, data.pids, data.camids, data.camids)
    assert got == {"rank1": 100.0, "rank5": 100.0, "rank10": 100.0, "mAP": 100.0}
