"""Attribute subspaces (recipe ``amd-subspace``): the target's distance split exactly in its embedding space."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import AMDLinearHeadNet, InterruptingLoader, amd_batches  # noqa: E402

from reidexplain import Explainer  # noqa: E402
from reidexplain.decomposition import linear_pair_decomposition  # noqa: E402
from reidexplain.interpreter import (  # noqa: E402
    AttributeSubspaces,
    SubspaceAMD,
    attribute_directions,
    direction_usage,
    fit_subspaces,
)


def _random_spaces(dim: int, m: int, rank: int, seed: int) -> AttributeSubspaces:
    g = torch.Generator().manual_seed(seed)
    spaces = AttributeSubspaces(dim, m, rank)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0][:rank]
    spaces.basis.copy_(basis)
    spaces.assignment.copy_(torch.rand(rank, m + 1, generator=g).softmax(dim=-1))
    return spaces


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 8), st.integers(1, 5), st.integers(1, 8), st.sampled_from(["euclidean", "cosine"]),
       st.integers(0, 2**16))
def test_any_basis_and_assignment_split_the_distance_exactly_into_non_negative_parts(
        dim: int, m: int, rank: int, metric: str, seed: int) -> None:
    rank = min(rank, dim)
    spaces = _random_spaces(dim, m, rank, seed)
    g = torch.Generator().manual_seed(seed + 1)
    e_a, e_b = torch.randn(4, dim, generator=g), torch.randn(4, dim, generator=g)
    pa, ra = spaces(e_a)
    pb, rb = spaces(e_b)
    torch.testing.assert_close(pa.sum(1) + ra, e_a, rtol=1e-5, atol=1e-5)
    out = linear_pair_decomposition(e_a, pa, ra, e_b, pb, rb, metric)
    total = out.contributions.sum(-1) + out.rest
    torch.testing.assert_close(total, out.distance, rtol=1e-4, atol=1e-5)
    assert float(out.offset.abs().max()) < 1e-4 * (1 + float(out.distance.max()))
    # Every part is a squared length along some directions: never negative.
    assert float(out.contributions.min()) > -1e-5 and float(out.rest.min()) > -1e-5
    # And it is the quadratic form delta^T P_k delta / d (euclidean).
    if metric == "euclidean":
        shares = spaces.shares(e_a - e_b)
        torch.testing.assert_close(shares[:, :m] * out.distance[:, None], out.contributions, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("init", ["regression", "principal"])
def test_the_fit_puts_each_attribute_where_it_moves_the_embeddings(init: str) -> None:
    # Attribute k moves the embedding along direction k; the other directions are noise (pose, light).
    g = torch.Generator().manual_seed(0)
    n, m, dim = 240, 3, 8
    labels = (torch.rand(n // 4, m, generator=g) < 0.5).float().repeat_interleave(4, dim=0)
    pids = torch.arange(n // 4).repeat_interleave(4)
    emb = torch.zeros(n, dim)
    emb[:, :m] = 3.0 * labels
    emb[:, m:] = 0.5 * torch.randn(n, dim - m, generator=g)
    spaces = AttributeSubspaces(dim, m)
    fit_subspaces(spaces, emb, labels, pids=pids, steps=300, seed=0, init=init)
    test = torch.Generator().manual_seed(1)
    la = (torch.rand(200, m, generator=test) < 0.5).float()
    lb = (torch.rand(200, m, generator=test) < 0.5).float()
    ea = torch.cat([3.0 * la, 0.5 * torch.randn(200, dim - m, generator=test)], dim=1)
    eb = torch.cat([3.0 * lb, 0.5 * torch.randn(200, dim - m, generator=test)], dim=1)
    shares = spaces.shares(ea - eb)[:, :m]
    differs = la != lb
    some = differs.any(-1)
    part = ((shares * differs).sum(-1) / shares.sum(-1).clamp_min(1e-12))[some]
    assert float(part.mean()) > 0.8  # before the fit: 1/3 on average
    assert float(shares[differs].mean()) > 3 * float(shares[~differs].mean())
    # On pairs whose labels agree (only noise differs), the rest carries most of the distance.
    rest = spaces.shares(ea - eb)[:, -1]
    assert float(rest[~some].mean()) > 0.5 > float(rest[some].mean())


def _planted(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Labels, pids and embeddings in which attribute k moves the embedding along a planted direction."""
    g = torch.Generator().manual_seed(seed)
    m, dim = 3, 6
    directions = torch.linalg.qr(torch.randn(dim, dim, generator=g))[0][:m] * torch.tensor([[4.0], [2.0], [1.0]])
    labels = (torch.rand(n // 4, m, generator=g) < 0.5).float().repeat_interleave(4, dim=0)
    pids = torch.arange(n // 4).repeat_interleave(4)
    emb = labels @ directions + 0.3 * torch.randn(n, dim, generator=g)
    return labels, pids, emb, directions


def test_attribute_directions_are_orthonormal_and_follow_the_labels() -> None:
    labels, pids, emb, planted = _planted(400, seed=0)
    for ids in (None, pids):
        found = attribute_directions(emb, labels, ids)
        torch.testing.assert_close(found @ found.T, torch.eye(3), rtol=0, atol=1e-5)
        cosines = (found * torch.nn.functional.normalize(planted, dim=1)).sum(1).abs()
        assert float(cosines.min()) > 0.95
    # An unknown label counts as the mean: hiding half of attribute 2's labels leaves its direction.
    known = torch.ones_like(labels, dtype=torch.bool)
    known[::2, 2] = False
    hidden = attribute_directions(emb, labels.where(known, torch.zeros_like(labels)), pids, known)
    assert float((hidden[2] * torch.nn.functional.normalize(planted[2], dim=0)).sum().abs()) > 0.9
    with pytest.raises(ValueError, match="dimensions"):
        attribute_directions(torch.rand(10, 2), torch.ones(10, 3))


def test_direction_usage_ranks_attributes_by_how_far_they_move_the_embedding() -> None:
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(200, 3, generator=g) < 0.5).float().repeat_interleave(4, dim=0)
    pids = torch.arange(200).repeat_interleave(4)
    # Attribute 0 moves the embedding by 4, attribute 1 by 1, attribute 2 not at all.
    emb = labels @ torch.tensor([[4.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 0, 0]]) + 0.3 * torch.randn(800, 4, generator=g)
    usage = direction_usage(emb, labels, pids)
    assert usage.shape == (3,)
    assert float(usage[0]) == pytest.approx(1.0)
    assert float(usage[1]) == pytest.approx(0.25, abs=0.05)
    assert float(usage[2]) < 0.05
    # Scaling the embeddings changes nothing: the weights are relative to the largest.
    torch.testing.assert_close(direction_usage(3 * emb, labels, pids), usage, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="dimensions"):
        direction_usage(torch.rand(10, 2), torch.ones(10, 3))


def test_the_recipe_measures_usage_from_the_directions() -> None:
    recipe = SubspaceAMD(subspace_steps=20, model_aware_prior=True, usage_measure="directions")
    explainer = Explainer(AMDLinearHeadNet().eval(), recipe=recipe)
    explainer.fit(amd_batches(), epochs=1, progress=False)
    usage = explainer.amd.prepared["usage_weights"]
    assert len(usage) == 5 and max(usage) == pytest.approx(1.0, abs=1e-3) and min(usage) >= 0.0


def test_the_regression_start_reaches_attributes_the_principal_start_misses() -> None:
    # Three attributes move the embedding along axes 0-2, less than pose and light move it along 3-6:
    # the leading principal directions are the noise's, but the regression on the labels finds the
    # attributes' (a basis of rank 4 has room for the attributes' or the noise's).
    def planted(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        labels = (torch.rand(100, 3, generator=g) < 0.5).float().repeat_interleave(4, dim=0)
        emb = torch.cat([labels, torch.randn(400, 4, generator=g)], dim=1)
        return labels, torch.arange(100).repeat_interleave(4), emb

    labels, pids, emb = planted(0)
    test_labels, _, test_emb = planted(1)
    one = (test_labels[:, None] != test_labels[None]).sum(-1) == 1  # pairs differing in one attribute
    i, j = one.nonzero(as_tuple=True)
    which = (test_labels[i] != test_labels[j]).float().argmax(-1)
    top = {}
    for init in ("regression", "principal"):
        spaces = AttributeSubspaces(7, 3, rank=4)
        fit_subspaces(spaces, emb, labels, pids=pids, steps=150, seed=0, init=init)
        shares = spaces.shares(test_emb[i] - test_emb[j])[:, :3]
        top[init] = float((shares.argmax(-1) == which).float().mean())
    assert top["regression"] > 0.8
    assert top["principal"] < 0.6


def test_fit_subspaces_refuses_mismatched_inputs() -> None:
    spaces = AttributeSubspaces(4, 2)
    with pytest.raises(ValueError, match="init"):
        fit_subspaces(spaces, torch.rand(5, 4), torch.ones(5, 2), init="random")
    with pytest.raises(ValueError, match="at least 2"):
        fit_subspaces(spaces, torch.rand(1, 4), torch.ones(1, 2))
    with pytest.raises(ValueError, match="expected"):
        fit_subspaces(spaces, torch.rand(5, 3), torch.ones(5, 2))


@pytest.mark.parametrize("feature_layer", ["auto", None])
def test_the_recipe_explains_exactly_gray_or_black_box(feature_layer: str | None, tmp_path: Path) -> None:
    explainer = Explainer(AMDLinearHeadNet().eval(), recipe=SubspaceAMD(subspace_steps=50),
                          feature_layer=feature_layer)
    explainer.fit(amd_batches(), epochs=1, progress=False)
    assert set(explainer.amd.prepared["subspace_fit"]) == {"loss", "prior", "concentration", "same"}
    images = amd_batches()[0]["image"]
    att = explainer.explain((images[:4], images[4:8]))
    torch.testing.assert_close(att.contributions.sum(1) + att.unexplained, att.distance, rtol=1e-4, atol=1e-6)
    assert float(att.contributions.min()) > -1e-6 and float(att.unexplained.min()) > -1e-6
    assert att.maps[0].shape == (4, 5, *images.shape[-2:])
    # The matrix and the ranked list give the same contributions.
    matrix = explainer.explain_matrix(images[:4], images[4:8])
    torch.testing.assert_close(torch.diagonal(matrix.contributions).T, att.contributions, rtol=1e-3, atol=1e-5)
    ranking = explainer.explain_ranking(images[:2], images[4:], top_k=3, progress=False)
    pair = explainer.explain((images[:2], images[4:][ranking.indices[:, 0]]))
    torch.testing.assert_close(ranking.contributions[:, 0], pair.contributions, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(ranking.unexplained[:, 0], pair.unexplained, rtol=1e-3, atol=1e-5)
    explainer.save(tmp_path / "subspace.pt")
    loaded = Explainer.load(tmp_path / "subspace.pt", explainer.model)
    torch.testing.assert_close(loaded.explain((images[:4], images[4:8])).contributions, att.contributions)


def test_the_maps_learn_from_recognition() -> None:
    explainer = Explainer(AMDLinearHeadNet().eval(), recipe=SubspaceAMD(subspace_steps=10, recognition_warmup=0))
    explainer.fit(amd_batches(), epochs=8, lr=1e-3, progress=False)
    # The maps carry no part of the distance: no loss reaches their sharpness, which stays as set.
    sharpness = torch.nn.functional.softplus(explainer.network.decomposition.sharpness.detach())
    torch.testing.assert_close(sharpness, torch.ones_like(sharpness))
    # The loss is the recognition loss alone (the split has nothing to learn in the main loop).
    assert explainer.history[-1]["loss"] < 0.9 * explainer.history[0]["loss"]
    assert abs(explainer.history[-1]["prior"]) < 1e-12
    head = explainer.network.decomposition
    assert head.shared and not head.partition


def test_the_recipe_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="recognition"):
        SubspaceAMD(recognition_weight=0.0)
    with pytest.raises(ValueError, match="concentration"):
        SubspaceAMD(concentration=2.0)
    assert "one process" in SubspaceAMD().not_distributable()
    with pytest.raises(ValueError, match="distils nothing"):
        SubspaceAMD(distillation_weight=5.0)
    with pytest.raises(ValueError, match="subspace_init"):
        SubspaceAMD(subspace_init="random")
    with pytest.raises(ValueError, match="usage_measure"):
        SubspaceAMD(usage_measure="sensitivity")


def test_an_interrupted_default_fit_resumes_where_it_stopped(tmp_path: Path) -> None:
    def fitted(loader, **options) -> Explainer:
        explainer = Explainer(AMDLinearHeadNet().eval(), recipe=SubspaceAMD(subspace_steps=30, recognition_warmup=2))
        return explainer.fit(loader, epochs=4, lr=1e-3, progress=False, seed=1, **options)

    whole = fitted(amd_batches())
    state = tmp_path / "fit.state"
    with pytest.raises(RuntimeError, match="disk went away"):
        fitted(InterruptingLoader(amd_batches(), after=8), checkpoint=state, checkpoint_every=1)
    assert state.is_file()
    resumed = fitted(amd_batches(), checkpoint=state, checkpoint_every=1)
    assert [h["steps"] for h in resumed.history] == [h["steps"] for h in whole.history]
    for key, value in whole.network.state_dict().items():
        torch.testing.assert_close(resumed.network.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_a_file_saved_before_the_maps_options_loads_as_it_was_fitted(tmp_path: Path) -> None:
    explainer = Explainer(AMDLinearHeadNet().eval(), recipe=SubspaceAMD(subspace_steps=10, recognition_warmup=0))
    explainer.fit(amd_batches(), epochs=1, progress=False)
    assert explainer.network.decomposition.cell_norm
    position = explainer.network.decomposition.position  # the default's region prior, learned in the fit
    assert position is not None and float(position.abs().amax()) > 0
    explainer.save(tmp_path / "now.pt")
    ckpt = torch.load(tmp_path / "now.pt", weights_only=False)
    for name in SubspaceAMD.saved_before:  # as the file was written before these options existed
        del ckpt["recipe"]["options"][name]
    del ckpt["network"]["decomposition.position"]  # nor had such a file the region prior's weights
    torch.save(ckpt, tmp_path / "before.pt")
    loaded = Explainer.load(tmp_path / "before.pt", explainer.model)
    recipe = loaded.recipe
    assert (recipe.map_logit_cap, recipe.fixed_pooling, recipe.cell_norm, recipe.map_sharpness) == (
        None, False, False, 0.05)
    assert recipe.subspace_init == "principal"
    head = loaded.network.decomposition
    assert head.logit_cap is None and not head.cell_norm and not head.fixed_pooling and head.position is None
    assert Explainer.load(tmp_path / "now.pt", explainer.model).network.decomposition.cell_norm
