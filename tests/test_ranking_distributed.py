"""Galleries sharded across processes (torchrun's setting): 2 gloo processes, each holding half a gallery,
merge their top-k into exactly the ranking one process gives on the whole gallery."""

from __future__ import annotations

import dataclasses
import datetime
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import amd_batches, amd_linear_head_net, amd_sequential_net  # noqa: E402

from reidexplain import GalleryIndex  # noqa: E402
from reidexplain.explainer import Explainer  # noqa: E402
from reidexplain.ranking import explain_topk, explain_topk_sharded, merge_candidates, shard_bounds  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is missing")

WORLD = 2
M = 4


def _run(worker: Any, tmp_path: Path, *args: Any) -> list[dict]:
    """Run ``worker(rank, world, init, out, *args)`` in 2 gloo processes; their saved results, by rank."""
    out = str(tmp_path / "rank")
    mp.start_processes(_entry, args=(worker, str(tmp_path / "init"), out, args), nprocs=WORLD, start_method="fork")
    return [torch.load(f"{out}.{rank}", weights_only=False) for rank in range(WORLD)]


def _entry(rank: int, worker: Any, init: str, out: str, args: tuple) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=WORLD,
                                         timeout=datetime.timedelta(seconds=120))
    try:
        torch.save(worker(rank, out, *args), f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------------------------- tensors
def _tensor_gallery() -> tuple[GalleryIndex, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A gallery of 11 (shards of 5 and 6) with exact duplicates across the halves, and 4 queries."""
    gen = torch.Generator().manual_seed(5)
    emb = torch.randn(11, 3, generator=gen)
    comps = torch.randn(11, M, 2, generator=gen)
    emb[7], comps[7] = emb[2], comps[2]  # the same image in both halves: a tie broken by gallery index
    emb[9], comps[9] = emb[1], comps[1]
    ids = torch.tensor([0, 0, 1, 0, 2, 0, 1, 1, 0, 2, 0])
    camids = torch.tensor([0, 0, 1, 0, 1, 0, 0, 1, 0, 0, 1])
    maps = torch.rand(11, M, 2, 1, generator=gen)
    index = GalleryIndex(emb, comps, maps, ids, camids, tuple("abcd"), "euclidean", "f00", (8, 4))
    queries = torch.cat([emb[[2, 1]] + 1e-3 * torch.randn(2, 3, generator=gen), torch.randn(2, 3, generator=gen)])
    q_comps = torch.randn(4, M, 2, generator=gen)
    # Query 2 is identity 0 seen by camera 0: 6 of the 11 entries are excluded, fewer than top_k are left.
    return index, queries, q_comps, torch.tensor([1, 2, 0, 3]), torch.tensor([0, 1, 0, 1])


def _tensor_worker(rank: int, out: str, top_k: int, exclude: bool) -> dict:
    index, queries, q_comps, q_ids, q_cams = _tensor_gallery()
    part = index.shard()  # rank and world from the process group
    idx, parts, ids = explain_topk_sharded(queries, q_comps, part, top_k, query_ids=q_ids, query_camids=q_cams,
                                           exclude_same_camera=exclude, max_memory_mb=1e-5)
    return {"shard": (part.offset, len(part), part.total), "indices": idx, "distance": parts.distance,
            "component_distances": parts.component_distances, "contributions": parts.contributions,
            "ids": ids}


@pytest.mark.parametrize(("top_k", "exclude"), [(1, False), (3, False), (8, True), (11, False)])
def test_two_processes_merge_tensor_shards_into_the_single_process_top_k(tmp_path, top_k, exclude):
    index, queries, q_comps, q_ids, q_cams = _tensor_gallery()
    idx, parts = explain_topk(queries, q_comps, index, top_k, query_ids=q_ids, query_camids=q_cams,
                              exclude_same_camera=exclude)
    if exclude:
        assert bool((idx[2] < 0).any()) and bool((idx[2] >= 0).any())  # fewer than top_k left
    if not exclude:  # the duplicates 7 and 9 tie with 2 and 1: the lower index comes first (or alone)
        assert idx[0, 0] == 2 and idx[1, 0] == 1
        if top_k > 1:
            assert idx[0, 1] == 7 and idx[1, 1] == 9
    expected_ids = torch.where(idx >= 0, index.ids[idx.clamp_min(0)], -1)
    results = _run(_tensor_worker, tmp_path, top_k, exclude)
    assert [r["shard"] for r in results] == [(0, 5, 11), (5, 6, 11)]
    for got in results:
        assert torch.equal(got["indices"], idx)
        assert torch.equal(got["ids"], expected_ids)
        assert torch.equal(torch.isinf(got["distance"]), torch.isinf(parts.distance))
        torch.testing.assert_close(got["distance"], parts.distance, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["component_distances"], parts.component_distances, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["contributions"], parts.contributions, rtol=1e-6, atol=1e-6)


def _linear_tensor_gallery() -> tuple[GalleryIndex, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                       torch.Tensor]:
    """:func:`_tensor_gallery` with the parts of a linear decomposition: ``(G,M,D)`` components and a rest."""
    index, queries, _, q_ids, q_cams = _tensor_gallery()
    gen = torch.Generator().manual_seed(6)
    comps, rest = torch.randn(11, M, 3, generator=gen), torch.randn(11, 3, generator=gen)
    comps[7], rest[7] = comps[2], rest[2]  # the duplicates stay duplicates
    comps[9], rest[9] = comps[1], rest[1]
    index = dataclasses.replace(index, components=comps, rest=rest)
    q_comps, q_rest = torch.randn(4, M, 3, generator=gen), torch.randn(4, 3, generator=gen)
    return index, queries, q_comps, q_rest, q_ids, q_cams


def _linear_tensor_worker(rank: int, out: str, top_k: int, exclude: bool) -> dict:
    index, queries, q_comps, q_rest, q_ids, q_cams = _linear_tensor_gallery()
    part = index.shard()
    idx, parts, _ = explain_topk_sharded(queries, q_comps, part, top_k, query_rest=q_rest, query_ids=q_ids,
                                         query_camids=q_cams, exclude_same_camera=exclude, max_memory_mb=1e-5)
    return {"has_rest": part.rest is not None, "indices": idx, "parts": parts}


@pytest.mark.parametrize(("top_k", "exclude"), [(3, False), (8, True)])
def test_two_processes_merge_the_linear_rule_as_one_process(tmp_path, top_k, exclude):
    index, queries, q_comps, q_rest, q_ids, q_cams = _linear_tensor_gallery()
    idx, parts = explain_topk(queries, q_comps, index, top_k, query_rest=q_rest, query_ids=q_ids,
                              query_camids=q_cams, exclude_same_camera=exclude)
    for got in _run(_linear_tensor_worker, tmp_path, top_k, exclude):
        assert got["has_rest"] and torch.equal(got["indices"], idx)
        merged = got["parts"]
        assert merged.component_distances is None and merged.rest is not None
        valid = idx >= 0
        assert torch.equal(torch.isinf(merged.distance), ~valid)
        for name in ("distance", "contributions", "rest", "offset", "reconstructed"):
            torch.testing.assert_close(getattr(merged, name), getattr(parts, name), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(merged.unexplained[valid], parts.unexplained[valid], rtol=1e-6, atol=1e-6)


def _refusing_linear_worker(rank: int, out: str) -> dict:
    index, queries, q_comps, q_rest, _, _ = _linear_tensor_gallery()
    errors = {}
    part = index.shard()
    for name, shard, rest in (("mixed", part if rank == 0 else dataclasses.replace(part, rest=None), q_rest),
                              ("no query rest", part, None)):
        try:
            explain_topk_sharded(queries, q_comps, shard, 3, query_rest=rest)
        except ValueError as err:
            errors[name] = str(err)
    return errors


def test_linear_shards_without_their_rest_are_refused_on_every_process(tmp_path):
    for errors in _run(_refusing_linear_worker, tmp_path):
        assert "rest-of-image parts" in errors["mixed"] and "some shards" in errors["mixed"]
        assert "pass the queries'" in errors["no query rest"]


def _refusing_worker(rank: int, out: str) -> dict:
    index, queries, q_comps, _, _ = _tensor_gallery()
    errors = {}
    # Both processes holding the first half: not contiguous parts of one gallery.
    for name, part, k in (("overlap", index.shard(0, WORLD), 3), ("top_k", index.shard(), 12)):
        try:
            explain_topk_sharded(queries, q_comps, part, k)
        except ValueError as err:
            errors[name] = str(err)
    return errors


def test_shards_that_do_not_fit_are_refused_on_every_process(tmp_path):
    for errors in _run(_refusing_worker, tmp_path):
        assert "contiguous" in errors["overlap"]
        assert "top_k" in errors["top_k"]


def test_a_shard_alone_and_the_helpers():
    index = _tensor_gallery()[0]
    with pytest.raises(ValueError, match="other processes"):
        explain_topk_sharded(torch.zeros(1, 3), torch.zeros(1, M, 2), index.shard(1, 2), 2)
    with pytest.raises(ValueError, match="already a shard"):
        index.shard(1, 2).shard(0, 2)
    with pytest.raises(ValueError, match="non-empty"):
        index.shard(0, 12)
    assert [shard_bounds(11, r, 2) for r in (0, 1)] == [(0, 5), (5, 11)]
    inf = float("inf")
    pos = merge_candidates(torch.tensor([[0.3, inf, 0.1, 0.3]]), torch.tensor([[6, -1, 9, 2]]), 4)
    assert pos.tolist() == [[2, 3, 0, 1]]


def test_a_shard_round_trips_through_a_file(tmp_path):
    part = _tensor_gallery()[0].shard(1, 2)
    part.save(tmp_path / "gallery.1.pt")
    again = GalleryIndex.load(tmp_path / "gallery.1.pt")
    assert (again.offset, again.total, again.is_shard) == (5, 11, True)
    assert torch.equal(again.embeddings, part.embeddings) and torch.equal(again.ids, part.ids)
    assert torch.load(tmp_path / "gallery.1.pt", weights_only=True)["format_version"] == 2


# ---------------------------------------------------------------------------------------- a fitted explainer
@pytest.fixture(scope="module")
def fitted() -> Explainer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Explainer(amd_sequential_net()).fit(amd_batches(), epochs=2, lr=1e-3, progress=False)


def _gallery() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batches = amd_batches(num_ids=4, per_id=4)
    return (torch.cat([b["image"] for b in batches]), torch.cat([torch.as_tensor(b["pid"]) for b in batches]),
            torch.cat([torch.as_tensor(b["camid"]) for b in batches]))


def _rank(explainer: Explainer, gallery: Any, top_k: int, **kwargs: Any) -> Any:
    images, pids, camids = _gallery()
    if isinstance(gallery, torch.Tensor):  # an index brings its own ids and cameras
        kwargs.update(gallery_ids=pids, gallery_camids=camids)
    return explainer.explain_ranking(images[:5], gallery, top_k, query_ids=pids[:5], query_camids=camids[:5],
                                     progress=False, **kwargs)


def _summary(ranking: Any) -> dict:
    top, q_maps, g_maps = ranking.maps(0) if ranking.has_maps else (None, None, None)
    return {"indices": ranking.indices, "distance": ranking.distance, "contributions": ranking.contributions,
            "gallery_ids": ranking.gallery_ids, "correct": ranking.correct, "match_maps": g_maps,
            "shard": ranking.extras.get("shard")}


def _explainer_worker(rank: int, out: str, explainer: Explainer, top_k: int) -> dict:
    images, pids, camids = _gallery()
    index = explainer.index_gallery(images, ids=pids, camids=camids, shard=True, progress=False)
    no_maps = explainer.index_gallery(amd_batches(num_ids=4, per_id=4), store_maps=False, shard=True,
                                      progress=False)  # 2 batches of 8: one each, pid/camid from the batches
    ranking = _rank(explainer, index, top_k)
    written = ranking.save_json(Path(out).parent / "ranking.json")
    return {"index": (index.offset, len(index), index.total), "batches": (no_maps.offset, len(no_maps)),
            "written": written, "from_index": _summary(ranking),
            "from_images": _summary(_rank(explainer, images, top_k, shard=True)),
            "maps_from_images": _summary(_rank(explainer, no_maps, top_k, gallery_images=images))}


@pytest.mark.parametrize("top_k", [4, 15])
def test_two_processes_rank_a_sharded_gallery_as_one_process(fitted, tmp_path, top_k):
    images, pids, camids = _gallery()
    expected = _summary(_rank(fitted, images, top_k))
    if top_k == 15:  # 14 entries are left after the exclusion: one empty slot per query
        assert bool((expected["indices"][:, -1] < 0).all()) and bool((expected["indices"][:, :-1] >= 0).all())
    results = _run(_explainer_worker, tmp_path, fitted, top_k)
    assert [r["index"] for r in results] == [(0, 8, 16), (8, 8, 16)]
    assert [r["batches"] for r in results] == [(0, 8), (8, 8)]
    assert [r["written"] for r in results] == [True, False]
    saved = json.loads((tmp_path / "ranking.json").read_text())
    assert [m["gallery_index"] for m in saved["queries"][0]["matches"]] == \
        [i for i in expected["indices"][0].tolist() if i >= 0]
    for rank, got in enumerate(results):
        for key in ("from_index", "from_images", "maps_from_images"):
            run = got[key]
            assert run["shard"] == {"rank": rank, "world": 2, "offset": 8 * rank, "size": 8, "total": 16}
            assert torch.equal(run["indices"], expected["indices"]), key
            assert torch.equal(run["gallery_ids"], expected["gallery_ids"]) and torch.equal(run["correct"],
                                                                                          expected["correct"])
            assert torch.equal(torch.isinf(run["distance"]), torch.isinf(expected["distance"]))
            torch.testing.assert_close(run["distance"], expected["distance"], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(run["contributions"], expected["contributions"], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(run["match_maps"], expected["match_maps"], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def linear() -> Explainer:
    images = _gallery()[0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        explainer = Explainer(amd_linear_head_net(centre_on=images), recipe="amd-linear")
        explainer.fit(amd_batches(), epochs=1, progress=False)
    with torch.no_grad():  # maps far from uniform
        explainer.network.decomposition.classifier.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return explainer


def _linear_worker(rank: int, out: str, explainer: Explainer, top_k: int) -> dict:
    images, pids, camids = _gallery()
    index = explainer.index_gallery(images, ids=pids, camids=camids, store_maps=False, shard=True, progress=False)
    ranking = _rank(explainer, index, top_k)
    return {"index": (index.offset, len(index), index.rest is not None), "unexplained": ranking.unexplained,
            **_summary(ranking)}


@pytest.mark.parametrize("top_k", [4, 15])
def test_two_processes_rank_a_sharded_gallery_with_the_linear_rule(linear, tmp_path, top_k):
    expected = _rank(linear, _gallery()[0], top_k)
    assert expected.unexplained is not None
    for got in _run(_linear_worker, tmp_path, linear, top_k):
        assert got["index"][2] and got["index"][:2] in ((0, 8), (8, 8))
        assert torch.equal(got["indices"], expected.indices) and torch.equal(got["correct"], expected.correct)
        assert torch.equal(torch.isinf(got["distance"]), torch.isinf(expected.distance))
        torch.testing.assert_close(got["distance"], expected.distance, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got["contributions"], expected.contributions, rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(got["unexplained"], expected.unexplained, rtol=1e-3, atol=1e-5)
