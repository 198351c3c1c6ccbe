"""The linear decomposition (AMD-SPEC section 11): exact for heads that pool linearly."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import AMDLinearHeadNet, amd_batches  # noqa: E402

from reidexplain import Explainer  # noqa: E402
from reidexplain.decomposition import linear_matrix_decomposition, linear_pair_decomposition  # noqa: E402
from reidexplain.zoo import create_model  # noqa: E402

LinearHeadNet = AMDLinearHeadNet  # a CNN whose head is affine after the grid (tests/helpers.py)


def _randomise_maps(explainer: Explainer) -> None:
    with torch.no_grad():
        explainer.network.decomposition.classifier.weight.normal_(0, 0.5)


def _fitted_batch() -> tuple[Explainer, object, torch.Tensor]:
    """An amd-linear explainer with maps far from uniform, its components of the first batch and their labels."""
    explainer = Explainer(LinearHeadNet().eval(), recipe="amd-linear").fit(amd_batches(), epochs=1, progress=False)
    _randomise_maps(explainer)
    batch = amd_batches()[0]
    return explainer, explainer.amd(batch["image"]), batch["attributes"]


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_exact_for_a_linear_head(metric: str) -> None:
    explainer = Explainer(LinearHeadNet().eval(), metric=metric, recipe="amd-linear")
    explainer.fit(amd_batches(), epochs=1, progress=False)
    _randomise_maps(explainer)  # far from uniform maps: the split must still be exact
    images = amd_batches()[0]["image"]
    images = torch.cat([images[:4], 1.0 - images[4:8]])  # pairs far apart, for both metrics
    att = explainer.explain((images[:4], images[4:8]))
    total = att.contributions.sum(1) + att.unexplained
    torch.testing.assert_close(total, att.distance, rtol=1e-4, atol=1e-6)
    offset = att.extras["offset"]
    # A linear head: nothing is left unsplit, up to the float error of the forward difference, which
    # scales with the embeddings' size (not with the distance).
    scale = explainer.embed(images[:8]).embeddings.norm(dim=1).max()
    assert bool((offset.abs() <= 1e-4 * scale).all())
    torch.testing.assert_close(att.shares.sum(1) + att.unexplained_share, torch.ones(4), rtol=1e-4, atol=1e-5)
    # The matrix API gives the same numbers.
    matrix = explainer.explain_matrix(images[:4], images[4:8])
    torch.testing.assert_close(torch.diagonal(matrix.contributions).T, att.contributions, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(torch.diagonal(matrix.unexplained), att.unexplained, rtol=1e-3, atol=1e-4)


def test_gem_head_is_split_to_first_order() -> None:
    model = create_model("reidnet_small").eval()  # GeM pooling and a BNNeck: positively homogeneous
    images = torch.rand(4, 3, 64, 32, generator=torch.Generator().manual_seed(0))
    data = [{"image": images, "attributes": torch.randint(0, 2, (4, 5), generator=torch.Generator().manual_seed(1))}]
    explainer = Explainer(model, recipe="amd-linear").fit(data, epochs=1, progress=False)
    _randomise_maps(explainer)
    att = explainer.explain((images[:2], images[2:]))
    torch.testing.assert_close(att.contributions.sum(1) + att.unexplained, att.distance, rtol=1e-4, atol=1e-5)
    assert float((att.extras["offset"].abs() / att.distance).max()) < 0.05


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 6), st.sampled_from(["euclidean", "cosine"]),
       st.integers(0, 2**16))
def test_pair_and_matrix_rules_agree_and_add_up(q: int, m: int, d: int, metric: str, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    comps, rest = torch.randn(q, m, d, generator=g), torch.randn(q, d, generator=g)
    emb = comps.sum(1) + rest + torch.randn(q, d, generator=g)  # any head: the offset takes the rest
    other_c, other_r = torch.randn(q, m, d, generator=g), torch.randn(q, d, generator=g)
    other = other_c.sum(1) + other_r + torch.randn(q, d, generator=g)
    pair = linear_pair_decomposition(emb, comps, rest, other, other_c, other_r, metric)
    total = pair.contributions.sum(-1) + pair.rest + pair.offset
    torch.testing.assert_close(total, pair.distance, rtol=1e-4, atol=1e-4)
    matrix = linear_matrix_decomposition(emb, comps, rest, other, other_c, other_r, metric)
    # The matrix divides by distance_matrix's distances, which carry the rounding of |x|^2 + |y|^2 - 2xy.
    torch.testing.assert_close(torch.diagonal(matrix.contributions).T, pair.contributions, rtol=1e-2, atol=1e-2)


def test_the_summary_names_the_unexplained_part() -> None:
    explainer = Explainer(LinearHeadNet().eval(), recipe="amd-linear").fit(amd_batches(), epochs=1, progress=False)
    images = amd_batches()[0]["image"]
    att = explainer.explain((images[0], images[5]))
    assert "unexplained" in att.summary() and "unexplained" in att.to_dict()


def test_linear_recipe_needs_a_gray_box() -> None:
    with pytest.raises(ValueError, match="gray-box"):
        Explainer(LinearHeadNet().eval(), recipe="amd-linear", feature_layer=None).fit(
            amd_batches(), epochs=1, progress=False)


def test_rest_terms_only_add_when_asked() -> None:
    from reidexplain.interpreter import LinearAMD

    explainer, out, labels = _fitted_batch()
    plain = LinearAMD().losses(explainer.amd, out, labels, {})
    with_rest = LinearAMD(rest_weight=2.0).losses(explainer.amd, out, labels, {})
    assert "rest" not in plain and float(with_rest["rest"]) >= 0.0
    torch.testing.assert_close(with_rest["loss"], plain["loss"] + 2.0 * with_rest["rest"])


def test_the_absent_term_is_the_area_of_the_maps_of_attributes_an_image_lacks() -> None:
    from reidexplain.interpreter import LinearAMD

    explainer, out, labels = _fitted_batch()
    plain = LinearAMD().losses(explainer.amd, out, labels, {})
    got = LinearAMD(absent_weight=3.0).losses(explainer.amd, out, labels, {})
    area = out.maps.flatten(2).mean(dim=-1).detach()
    absent = labels == 0
    expected = float((area * absent).sum() / absent.sum())
    assert "absent" not in plain and abs(float(got["absent"]) - expected) < 1e-6
    torch.testing.assert_close(got["loss"], plain["loss"] + 3.0 * got["absent"])
    # Unknown labels are left out.
    known = torch.ones_like(absent)
    known[:, 0] = False
    masked = LinearAMD(absent_weight=1.0).losses(explainer.amd, out, labels, {}, known=known)
    kept = absent & known
    assert abs(float(masked["absent"]) - float((area * kept).sum() / kept.sum())) < 1e-6


def test_shared_maps_keep_the_split_exact_and_learn_from_recognition(tmp_path: Path) -> None:
    from reidexplain.interpreter import LinearAMD

    explainer = Explainer(LinearHeadNet().eval(), recipe=LinearAMD(shared_maps=True, recognition_warmup=2))
    explainer.fit(amd_batches(), epochs=1, progress=False)
    head = explainer.network.decomposition
    assert head.shared and head.partition
    with torch.no_grad():  # away from the uniform start: the split must hold for any maps
        head.classifier.weight.normal_(0, 0.5)
        head.gate_weight.normal_(0, 0.5)
    batch = amd_batches()[0]
    out = explainer.amd(batch["image"])
    assert out.maps.shape[1] == 5 and out.recognised is not None
    losses = LinearAMD(shared_maps=True).losses(explainer.amd, out, batch["attributes"], {})
    plain = LinearAMD(shared_maps=True, recognition_weight=0.0).losses(explainer.amd, out, batch["attributes"], {})
    assert "recognition" not in plain and float(losses["recognition"]) > 0.0
    torch.testing.assert_close(losses["loss"], plain["loss"] + losses["recognition"])
    images = batch["image"]
    att = explainer.explain((images[:4], images[4:8]))
    torch.testing.assert_close(att.contributions.sum(1) + att.unexplained, att.distance, rtol=1e-4, atol=1e-5)
    # The M + 1 maps (the rest's included) still sum to 1 at every cell.
    full = explainer.network.decompose(images, explainer.amd.adapter.to_grid(explainer.amd.adapter.embed(images)[0]))[0]
    torch.testing.assert_close(full.sum(1), torch.ones_like(full[:, 0]))
    explainer.save(tmp_path / "linear_shared.pt")
    loaded = Explainer.load(tmp_path / "linear_shared.pt", explainer.model)
    again = loaded.explain((images[:4], images[4:8]))
    torch.testing.assert_close(again.contributions, att.contributions)


def test_the_concentration_term_asks_the_differing_attributes_for_their_part() -> None:
    from reidexplain.interpreter import LinearAMD

    explainer, out, labels = _fitted_batch()
    plain = LinearAMD().losses(explainer.amd, out, labels, {})
    got = LinearAMD(concentration_weight=2.0, concentration=0.9).losses(explainer.amd, out, labels, {})
    torch.testing.assert_close(got["loss"], plain["loss"] + 2.0 * got["concentration"])
    # The same figure from the decomposition of each pair i < j.
    from reidexplain.decomposition import linear_pair_decomposition

    i, j = torch.triu_indices(8, 8, offset=1)
    parts = linear_pair_decomposition(out.embeddings[i], out.components[i], out.rest[i], out.embeddings[j],
                                      out.components[j], out.rest[j], "euclidean")
    p = (parts.contributions / parts.distance.unsqueeze(-1)).detach()
    differs = labels[i] != labels[j]
    some = differs.any(-1)
    short = torch.relu(0.9 * p.sum(-1) - (p * differs).sum(-1))
    assert abs(float(got["concentration"]) - float(short[some].mean())) < 1e-5
    # Asking for no part: only differing attributes that push the pair together (c_k < 0) cost.
    none = LinearAMD(concentration_weight=2.0, concentration=0.0).losses(explainer.amd, out, labels, {})
    assert abs(float(none["concentration"]) - float(torch.relu(-(p * differs).sum(-1))[some].mean())) < 1e-5
    with pytest.raises(ValueError, match="concentration"):
        LinearAMD(concentration=1.5)


def test_the_model_aware_prior_of_the_linear_recipe_uses_the_measured_usage() -> None:
    from reidexplain.interpreter import LinearAMD

    explainer = Explainer(LinearHeadNet().eval(), recipe=LinearAMD(model_aware_prior=True))
    explainer.fit(amd_batches(), epochs=1, progress=False)
    usage = explainer.amd.prepared["usage_weights"]
    assert len(usage) == 5 and all(0.0 <= w <= 1.0 for w in usage)
    _randomise_maps(explainer)
    batch = amd_batches()[0]
    out = explainer.amd(batch["image"])
    aware = LinearAMD(model_aware_prior=True).losses(explainer.amd, out, batch["attributes"], {})
    explainer.amd.prepared["usage_weights"] = [1.0] * 5  # every attribute fully used: the paper's prior
    full = LinearAMD(model_aware_prior=True).losses(explainer.amd, out, batch["attributes"], {})
    paper = LinearAMD().losses(explainer.amd, out, batch["attributes"], {})
    torch.testing.assert_close(full["prior"], paper["prior"], rtol=1e-5, atol=1e-6)
    assert float(aware["prior"]) >= 0.0
