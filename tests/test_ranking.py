"""Ranked lists: the block-wise arithmetic against brute force, GalleryIndex files, RankingExplanation."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import amd_batches, amd_linear_head_net, amd_sequential_net  # noqa: E402

from reidexplain import GalleryIndex, RankingExplanation  # noqa: E402
from reidexplain.decomposition import matrix_decomposition  # noqa: E402
from reidexplain.distance import distance_matrix  # noqa: E402
from reidexplain.explainer import Explainer, NotFittedError  # noqa: E402
from reidexplain.ranking import (  # noqa: E402
    INDEX_FORMAT_VERSION,
    LINEAR_FORMAT_VERSIONS,
    chunk_rows,
    explain_topk,
    model_fingerprint,
    pair_component_distances,
    topk_linear_decomposition,
    topk_matches,
)
from reidexplain.ranking import _topk as topk_module  # noqa: E402

M = 5


def _brute_topk(q, g, k, metric, exclude=None):
    d = distance_matrix(q, g, metric)
    if exclude is not None:
        d = d.masked_fill(exclude, math.inf)
    values, indices = torch.sort(d, dim=1, stable=True)
    return values[:, :k], indices[:, :k]


@settings(max_examples=40, deadline=None)
@given(q=st.integers(1, 9), g=st.integers(1, 40), d=st.integers(1, 6), k=st.integers(1, 40),
       metric=st.sampled_from(["euclidean", "cosine"]), memory=st.sampled_from([1e-4, 1e-3, 1.0, None]),
       seed=st.integers(0, 2**16))
def test_topk_matches_equals_brute_force(q, g, d, k, metric, memory, seed):
    k = min(k, g)
    gen = torch.Generator().manual_seed(seed)
    qe, ge = torch.randn(q, d, generator=gen), torch.randn(g, d, generator=gen)
    values, indices = topk_matches(qe, ge, k, metric, max_memory_mb=memory)
    expected_v, expected_i = _brute_topk(qe, ge, k, metric)
    torch.testing.assert_close(values, expected_v, rtol=1e-4, atol=1e-4)
    assert indices.shape == (q, k)
    # Same sets wherever the k-th and (k+1)-th distances are not (near) tied.
    full = torch.sort(distance_matrix(qe, ge, metric), dim=1).values
    for row in range(q):
        if k < g and float(full[row, k] - full[row, k - 1]) < 1e-4:
            continue
        assert set(indices[row].tolist()) == set(expected_i[row].tolist())
    assert bool((values[:, 1:] >= values[:, :-1]).all())


@settings(max_examples=30, deadline=None)
@given(q=st.integers(1, 6), g=st.integers(2, 30), k=st.integers(1, 30), seed=st.integers(0, 2**16),
       memory=st.sampled_from([1e-4, 1.0]))
def test_topk_matches_market_exclusion_against_brute_force(q, g, k, seed, memory):
    k = min(k, g)
    gen = torch.Generator().manual_seed(seed)
    qe, ge = torch.randn(q, 3, generator=gen), torch.randn(g, 3, generator=gen)
    qid, gid = torch.randint(0, 3, (q,), generator=gen), torch.randint(0, 3, (g,), generator=gen)
    qcam, gcam = torch.randint(0, 2, (q,), generator=gen), torch.randint(0, 2, (g,), generator=gen)
    exclude = (qid[:, None] == gid[None]) & (qcam[:, None] == gcam[None])
    values, indices = topk_matches(qe, ge, k, query_ids=qid, query_camids=qcam, gallery_ids=gid,
                                   gallery_camids=gcam, max_memory_mb=memory)
    expected_v, _ = _brute_topk(qe, ge, k, "euclidean", exclude)
    empty = indices < 0
    assert torch.equal(empty, torch.isinf(expected_v))
    assert torch.equal(torch.isinf(values), empty)
    torch.testing.assert_close(values[~empty], expected_v[~empty], rtol=1e-4, atol=1e-4)
    rows, cols = torch.nonzero(~empty, as_tuple=True)
    assert not exclude[rows, indices[rows, cols]].any()  # no excluded entry is returned


@settings(max_examples=30, deadline=None)
@given(q=st.integers(1, 5), g=st.integers(1, 12), m=st.integers(1, 4), d=st.integers(1, 5),
       metric=st.sampled_from(["euclidean", "cosine"]), memory=st.sampled_from([1e-5, 1.0]),
       seed=st.integers(0, 2**16))
def test_pair_component_distances_equal_the_matrix_decomposition(q, g, m, d, metric, memory, seed):
    gen = torch.Generator().manual_seed(seed)
    qe, ge = torch.randn(q, d, generator=gen), torch.randn(g, d, generator=gen)
    qc, gc = torch.randn(q, m, d, generator=gen), torch.randn(g, m, d, generator=gen)
    k = min(3, g)
    indices = torch.randint(0, g, (q, k), generator=gen)
    indices[0, -1] = -1
    out = pair_component_distances(qc, gc, indices, metric, max_memory_mb=memory)
    full = matrix_decomposition(qe, qc, ge, gc, metric).component_distances  # (Q,G,M)
    expected = full.gather(1, indices.clamp_min(0)[:, :, None].expand(-1, -1, m))
    expected[0, -1] = 0.0
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)


def test_explain_topk_matches_the_full_matrix_on_its_top_k():
    gen = torch.Generator().manual_seed(3)
    qe, ge = torch.randn(4, 6, generator=gen), torch.randn(20, 6, generator=gen)
    qc, gc = torch.randn(4, M, 6, generator=gen), torch.randn(20, M, 6, generator=gen)
    index = GalleryIndex(ge, gc, None, None, None, tuple("abcde"), "euclidean", "x", (8, 4))
    idx, parts = explain_topk(qe, qc, index, 5, max_memory_mb=1e-4)
    full = matrix_decomposition(qe, qc, ge, gc, "euclidean")
    torch.testing.assert_close(parts.contributions, full.contributions.gather(
        1, idx[:, :, None].expand(-1, -1, M)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts.reconstructed, full.reconstructed.gather(1, idx), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts.contributions.sum(-1), parts.reconstructed, rtol=1e-5, atol=1e-6)


def test_chunk_rows_respects_the_bound():
    assert chunk_rows(2**20, max_memory_mb=8) == 8
    assert chunk_rows(2**20, max_memory_mb=8, total=3) == 3
    assert chunk_rows(2**30, max_memory_mb=1) == 1
    with pytest.raises(ValueError, match="max_memory_mb"):
        chunk_rows(10, max_memory_mb=0)


def test_topk_matches_errors():
    with pytest.raises(ValueError, match="top_k"):
        topk_matches(torch.rand(2, 3), torch.rand(4, 3), 5)
    with pytest.raises(ValueError, match="embeddings"):
        topk_matches(torch.rand(2, 3), torch.rand(4, 2), 1)
    with pytest.raises(ValueError, match="metric"):
        topk_matches(torch.rand(2, 3), torch.rand(4, 3), 1, "manhattan")


# ---------------------------------------------------------------------------------------- explainer
@pytest.fixture(scope="module")
def fitted() -> Explainer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Explainer(amd_sequential_net(), recipe="amd").fit(amd_batches(), epochs=2, lr=1e-3, progress=False)


@pytest.fixture(scope="module")
def data():
    batches = amd_batches(num_ids=4, per_id=4)
    images = torch.cat([b["image"] for b in batches])
    pids = torch.cat([torch.as_tensor(b["pid"]) for b in batches])
    camids = torch.cat([torch.as_tensor(b["camid"]) for b in batches])
    return images, pids, camids


def test_explain_ranking_agrees_with_explain_matrix_and_explain(fitted, data):
    images, pids, camids = data
    query, gallery = images[:4], images[4:]
    ranking = fitted.explain_ranking(query, gallery, top_k=5, progress=False)
    matrix = fitted.explain_matrix(query, gallery)
    order = torch.sort(matrix.distance, dim=1, stable=True)
    # The matrix's distances come from matrix products (cancellation near 0); the ranking's are pair-wise.
    torch.testing.assert_close(ranking.distance, order.values[:, :5], rtol=1e-4, atol=1e-4)
    picked = ranking.indices
    torch.testing.assert_close(ranking.contributions,
                               matrix.contributions.gather(1, picked[:, :, None].expand(-1, -1, M)),
                               rtol=1e-4, atol=1e-4)
    assert ranking.query_maps.shape[:2] == (4, M) and ranking.has_maps
    # A match's maps are explain's maps of the same pair.
    pair = fitted.explain((query[1:2], gallery[int(picked[1, 2])][None]))
    top, q_maps, g_maps = ranking.maps(1, n=2)
    assert q_maps.shape == (5, 2, 32, 16)
    torch.testing.assert_close(g_maps[2], pair.maps[1][0, top[2]], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(q_maps[2], pair.maps[0][0, top[2]], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ranking.contributions[1, 2], pair.contributions[0], rtol=1e-4, atol=1e-5)


def test_explain_ranking_ids_mark_matches_and_exclude_same_camera(fitted, data):
    images, pids, camids = data
    ranking = fitted.explain_ranking(images[:4], images, top_k=6, query_ids=pids[:4], gallery_ids=pids,
                                     query_camids=camids[:4], gallery_camids=camids, progress=False)
    for qi in range(4):
        for r in range(6):
            gi = int(ranking.indices[qi, r])
            assert not (pids[gi] == pids[qi] and camids[gi] == camids[qi])  # the query itself is excluded
            assert bool(ranking.correct[qi, r]) == bool(pids[gi] == pids[qi])
            assert int(ranking.gallery_ids[qi, r]) == int(pids[gi])
    kept = fitted.explain_ranking(images[:4], images, top_k=1, query_ids=pids[:4], gallery_ids=pids,
                                  query_camids=camids[:4], gallery_camids=camids, exclude_same_camera=False,
                                  progress=False)
    assert kept.indices[:, 0].tolist() == [0, 1, 2, 3]  # each query finds itself


def test_why_is_the_difference_of_contributions(fitted, data):
    images, _, _ = data
    ranking = fitted.explain_ranking(images[:2], images[2:], top_k=4, progress=False)
    why = ranking.why(0, 3, query_index=1)
    torch.testing.assert_close(why.differences, ranking.contributions[1, 3] - ranking.contributions[1, 0])
    assert why.reconstructed_gap == pytest.approx(float(why.differences.sum()), abs=1e-5)
    values = [v for _, v in why.ranked()]
    assert values == sorted(values, reverse=True) and len(values) == M
    assert why.distance_i <= why.distance_j
    assert json.loads(json.dumps(why.to_dict()))["attributes"][0]["difference"] == pytest.approx(values[0])
    assert "above match 3" in str(why)
    with pytest.raises(IndexError):
        ranking.why(0, 4)


def test_to_dict_is_json_and_complete(fitted, data, tmp_path):
    images, pids, _ = data
    ranking = fitted.explain_ranking(images[:3], images[3:], top_k=4, query_ids=pids[:3], gallery_ids=pids[3:],
                                     n_attributes=2, progress=False)
    path = tmp_path / "ranking.json"
    ranking.save_json(path)
    out = json.loads(path.read_text())
    assert out["top_k"] == 4 and len(out["queries"]) == 3 and out["maps"] == "stored"
    match = out["queries"][2]["matches"][1]
    assert match["rank"] == 2 and match["gallery_index"] == int(ranking.indices[2, 1])
    assert match["distance"] == pytest.approx(float(ranking.distance[2, 1]))
    assert match["correct"] == bool(ranking.correct[2, 1]) and len(match["top_attributes"]) == 2
    top = match["top_attributes"][0]
    assert (top["label"], top["contribution"], top["share"]) == pytest.approx(ranking.top_attributes(2, 1)[0])
    # AMD's rule has no unexplained part: none is reported, and the shares of d_hat sum to 1.
    assert ranking.unexplained is None and ranking.unexplained_share is None and "unexplained" not in match
    assert "unexplained" not in ranking.summary(2, 1) and ranking.why(2, 0, 1).unexplained_gap is None
    torch.testing.assert_close(ranking.shares.sum(-1), torch.ones(3, 4))


def test_gallery_index_round_trip_and_ranking_without_images(fitted, data, tmp_path):
    images, pids, camids = data
    index = fitted.index_gallery(images, ids=pids, camids=camids, store_maps=False, progress=False)
    assert not index.has_maps and index.nbytes > 0
    path = tmp_path / "gallery.pt"
    index.save(path)
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == INDEX_FORMAT_VERSION
    again = GalleryIndex.load(path, fitted)
    torch.testing.assert_close(again.components, index.components)
    assert torch.equal(again.ids, pids)
    assert index.rest is None and again.rest is None and raw["rest"] is None  # AMD's rule needs no rest
    # A file written before indexes had a rest still loads, for AMD's rule.
    del raw["rest"]
    torch.save(raw, tmp_path / "old.pt")
    assert GalleryIndex.load(tmp_path / "old.pt", fitted).rest is None
    direct = fitted.explain_ranking(images[:4], images, top_k=3, query_ids=pids[:4], query_camids=camids[:4],
                                    gallery_ids=pids, gallery_camids=camids, progress=False)
    reloaded = fitted.explain_ranking(images[:4], again, top_k=3, query_ids=pids[:4], query_camids=camids[:4],
                                      progress=False)
    assert torch.equal(reloaded.indices, direct.indices)
    torch.testing.assert_close(reloaded.contributions, direct.contributions, rtol=1e-5, atol=1e-6)
    assert torch.equal(reloaded.correct, direct.correct)
    assert not reloaded.has_maps and reloaded.to_dict()["maps"] == "not stored"
    with pytest.raises(ValueError, match="no maps"):
        reloaded.maps(0)
    with pytest.raises(ValueError, match="no images"):
        reloaded.plot(0)
    # Maps of the top-k only, recomputed from the images.
    with_maps = fitted.explain_ranking(images[:4], again, top_k=3, query_ids=pids[:4], query_camids=camids[:4],
                                       gallery_images=images, progress=False)
    assert with_maps.match_maps.shape[0] == torch.unique(with_maps.indices).numel()
    torch.testing.assert_close(with_maps.maps(2)[2], direct.maps(2)[2], rtol=1e-4, atol=1e-5)


def test_gallery_index_from_batches_equals_from_a_tensor(fitted, data):
    images, pids, camids = data
    batches = [{"image": images[i:i + 5], "pid": pids[i:i + 5], "camid": camids[i:i + 5]} for i in range(0, 16, 5)]
    streamed = fitted.index_gallery(batches, progress=False, batch_size=3)
    whole = fitted.index_gallery(images, ids=pids, camids=camids, progress=False)
    torch.testing.assert_close(streamed.components, whole.components, rtol=1e-5, atol=1e-6)
    assert torch.equal(streamed.ids, pids) and torch.equal(streamed.camids, camids)
    assert streamed.image_size == (32, 16)


def test_gallery_index_refuses_another_model_or_schema_or_file(fitted, data, tmp_path):
    images, _, _ = data
    index = fitted.index_gallery(images[:4], progress=False)
    assert index.fingerprint == model_fingerprint(fitted.amd)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        other = Explainer(amd_sequential_net(seed=1), recipe="amd").fit(amd_batches(), epochs=1, progress=False)
    with pytest.raises(ValueError, match="fingerprint"):
        other.explain_ranking(images[:1], index, top_k=2, progress=False)
    path = tmp_path / "gallery.pt"
    index.save(path)
    with pytest.raises(ValueError, match="fingerprint"):
        GalleryIndex.load(path, other)
    renamed = GalleryIndex(index.embeddings, index.components, None, None, None, tuple("vwxyz"), index.metric,
                           index.fingerprint, index.image_size)
    with pytest.raises(ValueError, match="schema"):
        renamed.check_compatible(fitted)
    data_file = torch.load(path, weights_only=True)
    data_file["format_version"] = 99
    torch.save(data_file, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="version 99"):
        GalleryIndex.load(tmp_path / "future.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a gallery index"):
        GalleryIndex.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        GalleryIndex.load(tmp_path / "missing.pt")
    with pytest.raises(NotFittedError):
        Explainer(amd_sequential_net()).explain_ranking(images[:1], images, top_k=1)


def test_plot_marks_correct_and_wrong(fitted, data):
    images, pids, _ = data
    ranking = fitted.explain_ranking(images[:2], images[2:], top_k=4, query_ids=pids[:2], gallery_ids=pids[2:],
                                     progress=False)
    fig, axes = ranking.plot(query_index=1)
    assert axes.shape == (5,) and axes[0].get_title().startswith("query")
    for r in range(4):
        colour = axes[r + 1].spines["left"].get_edgecolor()
        expected = (0.172, 0.627, 0.172) if bool(ranking.correct[1, r]) else (0.839, 0.153, 0.157)
        assert colour[:3] == pytest.approx(expected, abs=0.01)
        label, _, share = ranking.top_attributes(1, r, 1)[0]
        assert label in axes[r + 1].get_title() and f"{100 * share:.0f}%" in axes[r + 1].get_title()
    with pytest.raises(IndexError):
        ranking.plot(query_index=2)


def test_ranking_explanation_validates_shapes():
    with pytest.raises(ValueError, match="contributions"):
        RankingExplanation(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 2), torch.zeros(1, 2),
                           torch.zeros(1, 2, 3), ("a", "b"))


def test_queries_without_enough_matches_get_empty_slots(fitted, data):
    images, pids, camids = data
    ids, cams = torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    ids[3], cams[:] = 1, 0  # gallery: three images of the query's identity and camera, one other
    ranking = fitted.explain_ranking(images[:1], images[4:8], top_k=3, query_ids=[0], query_camids=[0],
                                     gallery_ids=ids, gallery_camids=cams, progress=False)
    assert ranking.indices.tolist() == [[3, -1, -1]] and ranking.valid.tolist() == [[True, False, False]]
    assert torch.isinf(ranking.distance[0, 1:]).all() and (ranking.contributions[0, 1:] == 0).all()
    assert ranking.correct.tolist() == [[False, False, False]]
    assert len(ranking.to_dict()["queries"][0]["matches"]) == 1
    _, _, g_maps = ranking.maps(0)
    assert (g_maps[1:] == 0).all()
    fig, axes = ranking.plot(0)
    assert not axes[2].axison
    with pytest.raises(ValueError, match="no match"):
        ranking.why(0, 1)


@pytest.mark.parametrize("memory", [1e-6, 1e-5, 1e-3, None])
def test_topk_matches_keeps_the_lowest_gallery_index_of_tied_entries(memory):
    # Four copies of one embedding, three places: the three lowest indices survive whatever the blocks.
    g = torch.tensor([[3.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    values, indices = topk_matches(torch.tensor([[1.0, 0.1], [0.9, 0.0]]), g, k=3, max_memory_mb=memory)
    assert indices.tolist() == [[1, 2, 4], [1, 2, 4]]
    torch.testing.assert_close(values[:, 0], values[:, 2])


# ---------------------------------------------------------------------------------------- the linear rule
@pytest.fixture(scope="module", params=["euclidean", "cosine"])
def linear(request, data) -> Explainer:
    """An ``amd-linear`` explainer of a head that pools linearly, with maps far from uniform."""
    images = data[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        explainer = Explainer(amd_linear_head_net(centre_on=images), metric=request.param, recipe="amd-linear")
        explainer.fit(amd_batches(), epochs=1, progress=False)
    with torch.no_grad():  # distinct contributions, so that a wrong pairing or rule shows
        explainer.network.decomposition.classifier.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return explainer


def _assert_matches_explain(explainer: Explainer, ranking: RankingExplanation, query: torch.Tensor,
                            gallery: torch.Tensor) -> None:
    """Every match's distance, contributions and unexplained part are explain()'s of (query, match).

    The parts u_k are forward differences of the head (step 1e-2), which turn the float error of
    embedding the images in other batches into relative errors of ~1e-4 in the contributions.
    """
    q, k = ranking.indices.shape
    assert bool(ranking.valid.all())
    pair = explainer.explain((query.repeat_interleave(k, dim=0), gallery[ranking.indices.reshape(-1)]))
    assert pair.unexplained is not None and ranking.unexplained is not None
    torch.testing.assert_close(ranking.distance.reshape(-1), pair.distance, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ranking.contributions.reshape(-1, M), pair.contributions, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(ranking.unexplained.reshape(-1), pair.unexplained, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(ranking.reconstructed.reshape(-1), pair.reconstructed, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(ranking.shares.reshape(-1, M), pair.shares, rtol=1e-3, atol=1e-4)
    # Signed shares of d, summing to 1 with the unexplained share.
    torch.testing.assert_close(ranking.shares.sum(-1) + ranking.unexplained_share, torch.ones(q, k),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("how", ["images", "index", "no maps", "saved", "blocks"])
def test_linear_ranking_equals_explain_of_each_match(linear, data, tmp_path, monkeypatch, how):
    images, pids, camids = data
    query, gallery = images[:4], images[4:]
    index = linear.index_gallery(gallery, store_maps=how != "no maps", progress=False)
    assert index.rest is not None and index.rest.shape == index.embeddings.shape
    assert index.nbytes == sum(t.numel() * t.element_size() for t in (index.embeddings, index.components,
                                                                      index.maps, index.rest) if t is not None)
    if how == "saved":
        index.save(tmp_path / "gallery.pt")
        index = GalleryIndex.load(tmp_path / "gallery.pt", linear)
        assert index.rest is not None
    blocks = []
    if how == "blocks":  # a bound of ~100 bytes: one pair per block of the linear decomposition
        rule = topk_module.linear_pair_decomposition
        monkeypatch.setattr(topk_module, "linear_pair_decomposition",
                            lambda *args: blocks.append(args[0].shape[0]) or rule(*args))
    ranking = linear.explain_ranking(query, gallery if how in ("images", "blocks") else index, top_k=5,
                                     max_memory_mb=1e-4 if how == "blocks" else None, progress=False)
    if how == "blocks":
        assert len(blocks) > 1 and sum(blocks) == 4 * 5
    assert ranking.has_maps == (how != "no maps")
    _assert_matches_explain(linear, ranking, query, gallery)
    # Sorted by the target's distance, as with AMD's rule.
    assert bool((ranking.distance[:, 1:] >= ranking.distance[:, :-1]).all())


def test_linear_ranking_shows_the_unexplained_part(linear, data, tmp_path):
    images, pids, _ = data
    ranking = linear.explain_ranking(images[:2], images[2:], top_k=4, query_ids=pids[:2], gallery_ids=pids[2:],
                                     progress=False)
    share = float(ranking.unexplained_share[1, 2])
    assert ranking.summary(1, 2).endswith(f"; {100 * share:.0f} % unexplained")
    assert ranking.summary(1, 2).startswith(("mostly", "no attribute"))
    path = tmp_path / "ranking.json"
    ranking.save_json(path)
    match = json.loads(path.read_text())["queries"][1]["matches"][2]
    assert match["unexplained"] == pytest.approx(float(ranking.unexplained[1, 2]), rel=1e-6)
    assert match["unexplained_share"] == pytest.approx(share, rel=1e-6)
    top = match["top_attributes"][0]
    assert top["share"] == pytest.approx(float(top["contribution"]) / match["distance"], rel=1e-5)
    # why(): the attributes' differences and the unexplained gap make up the distance gap.
    why = ranking.why(0, 3, query_index=1)
    assert why.unexplained_gap == pytest.approx(float(ranking.unexplained[1, 3] - ranking.unexplained[1, 0]))
    assert float(why.differences.sum()) + why.unexplained_gap == pytest.approx(
        why.distance_j - why.distance_i, rel=1e-4, abs=1e-6)
    assert "unexplained gap" in str(why) and "unexplained_gap" in why.to_dict()
    fig, axes = ranking.plot(query_index=1)
    assert f"{100 * share:.0f}% unexplained" in axes[3].get_title()


def test_linear_ranking_empty_slots_have_nothing_unexplained(linear, data):
    images, _, _ = data
    ids, cams = torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    ids[3] = 1  # gallery: three images of the query's identity and camera, one other
    ranking = linear.explain_ranking(images[:1], images[4:8], top_k=3, query_ids=[0], query_camids=[0],
                                     gallery_ids=ids, gallery_camids=cams, progress=False)
    assert ranking.indices.tolist() == [[3, -1, -1]]
    assert (ranking.unexplained[0, 1:] == 0).all() and (ranking.unexplained_share[0, 1:] == 0).all()
    assert (ranking.contributions[0, 1:] == 0).all() and (ranking.reconstructed[0, 1:] == 0).all()
    assert ranking.summary(0, 1) == "no match" and len(ranking.to_dict()["queries"][0]["matches"]) == 1
    pair = linear.explain((images[:1], images[7:8]))  # the one match left
    torch.testing.assert_close(ranking.contributions[0, :1], pair.contributions, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(ranking.unexplained[0, :1], pair.unexplained, rtol=1e-3, atol=1e-5)


def test_linear_rule_needs_the_rest_on_both_sides(linear, fitted, data, tmp_path):
    images, _, _ = data
    index = linear.index_gallery(images[4:], progress=False)
    q = linear.embed(images[:2])
    without = dataclasses.replace(index, rest=None)
    with pytest.raises(ValueError, match="gallery index has none"):
        explain_topk(q.embeddings, q.components, without, 3, query_rest=q.rest)
    with pytest.raises(ValueError, match="pass the queries'"):
        explain_topk(q.embeddings, q.components, index, 3)
    with pytest.raises(ValueError, match="no rest-of-image parts"):
        linear.explain_ranking(images[:2], without, top_k=3, progress=False)
    # An index with a rest is refused for an explainer of AMD's rule.
    amd_index = fitted.index_gallery(images[4:], progress=False)
    with pytest.raises(ValueError, match="AMD's rule"):
        dataclasses.replace(amd_index, rest=torch.zeros_like(amd_index.embeddings)).check_compatible(fitted)
    # An amd-linear index written before indexes had a rest loads, and is refused for ranking.
    index.save(tmp_path / "gallery.pt")
    raw = torch.load(tmp_path / "gallery.pt", weights_only=True)
    assert raw["format_version"] == LINEAR_FORMAT_VERSIONS[0]  # a reader without the rest refuses it
    del raw["rest"]
    torch.save(raw, tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match="damaged: format version 3 needs"):
        GalleryIndex.load(tmp_path / "damaged.pt")
    raw["format_version"] = INDEX_FORMAT_VERSION  # as written before there was a rest
    torch.save(raw, tmp_path / "old.pt")
    assert GalleryIndex.load(tmp_path / "old.pt").rest is None
    with pytest.raises(ValueError, match="rebuild it"):
        GalleryIndex.load(tmp_path / "old.pt", linear)
    # A shard of a linear index has its own version, and loads as a shard with its rest.
    index.shard(1, 2).save(tmp_path / "shard.pt")
    assert torch.load(tmp_path / "shard.pt", weights_only=True)["format_version"] == LINEAR_FORMAT_VERSIONS[1]
    shard = GalleryIndex.load(tmp_path / "shard.pt")
    assert shard.is_shard and torch.equal(shard.rest, index.rest[6:])
    # The rest travels with the index's other tensors, and must fit them.
    part = index.shard(1, 2)
    assert torch.equal(part.rest, index.rest[6:]) and torch.equal(index.to("cpu").rest, index.rest)
    with pytest.raises(ValueError, match="rest of shape"):
        dataclasses.replace(index, rest=index.rest[:3])


@settings(max_examples=20, deadline=None)
@given(q=st.integers(1, 4), g=st.integers(1, 10), m=st.integers(1, 4), d=st.integers(1, 5),
       metric=st.sampled_from(["euclidean", "cosine"]), memory=st.sampled_from([1e-5, 1.0]),
       seed=st.integers(0, 2**16))
def test_topk_linear_decomposition_equals_the_pair_rule(q, g, m, d, metric, memory, seed):
    from reidexplain.decomposition import linear_pair_decomposition

    gen = torch.Generator().manual_seed(seed)
    qc, gc = torch.randn(q, m, d, generator=gen), torch.randn(g, m, d, generator=gen)
    qr, gr = torch.randn(q, d, generator=gen), torch.randn(g, d, generator=gen)
    qe = qc.sum(1) + qr + torch.randn(q, d, generator=gen)  # any head: an offset
    ge = gc.sum(1) + gr + torch.randn(g, d, generator=gen)
    k = min(3, g)
    indices = torch.randint(0, g, (q, k), generator=gen)
    indices[0, -1] = -1
    out = topk_linear_decomposition(qe, qc, qr, ge, gc, gr, indices, metric, max_memory_mb=memory)
    rows = torch.arange(q).repeat_interleave(k)
    flat = indices.reshape(-1).clamp_min(0)
    expected = linear_pair_decomposition(qe[rows], qc[rows], qr[rows], ge[flat], gc[flat], gr[flat], metric)
    valid = (indices >= 0).reshape(-1)
    torch.testing.assert_close(out.contributions.reshape(-1, m)[valid], expected.contributions[valid])
    torch.testing.assert_close(out.rest.reshape(-1)[valid], expected.rest[valid])
    torch.testing.assert_close(out.offset.reshape(-1)[valid], expected.offset[valid])
    torch.testing.assert_close(out.distance.reshape(-1)[valid], expected.distance[valid])
    assert math.isinf(float(out.distance[0, -1])) and (out.contributions[0, -1] == 0).all()
    assert float(out.rest[0, -1]) == 0.0 and float(out.offset[0, -1]) == 0.0
