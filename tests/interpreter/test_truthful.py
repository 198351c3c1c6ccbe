"""AMD+ (issue 8): model-aware prior, probe and entropy terms; the paper path is unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reidexplain.explainer import Explainer
from reidexplain.interpreter import AMDPlus, Components, PaperAMD, pair_losses
from reidexplain.interpreter.losses import attribute_prior_loss
from reidexplain.interpreter.model_aware import (
    AttributeProbes,
    attribute_usage,
    map_entropy_loss,
    model_aware_prior_loss,
    probe_loss,
)
from reidexplain.interpreter.recipes import DEFAULT_RECIPE


def _shares(p: int, m: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shares = torch.rand(p, m, generator=g)
    return shares / shares.sum(1, keepdim=True), torch.rand(p, m, generator=g) < 0.3


def test_usage_one_equals_paper_prior() -> None:
    shares, exclusive = _shares(50, 10)
    paper = attribute_prior_loss(shares, exclusive)
    assert torch.allclose(model_aware_prior_loss(shares, exclusive, torch.ones(10)), paper, atol=1e-6)


def test_binary_usage_equals_paper_prior_on_used_attributes() -> None:
    shares, exclusive = _shares(40, 8, seed=1)
    usage = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.float32)
    expected = attribute_prior_loss(shares, exclusive & usage.bool())
    assert torch.allclose(model_aware_prior_loss(shares, exclusive, usage), expected, atol=1e-6)


def test_model_aware_prior_zero_when_satisfied_and_rejects_bad_usage() -> None:
    shares = torch.tensor([[0.7, 0.02, 0.14, 0.14]])
    exclusive = torch.tensor([[True, True, False, False]])
    assert float(model_aware_prior_loss(shares, exclusive, torch.tensor([1.0, 0.0, 1.0, 1.0]))) == pytest.approx(0.0, abs=1e-7)
    assert float(attribute_prior_loss(shares, exclusive)) > 0.1  # the paper forces a floor on attribute 1
    with pytest.raises(ValueError, match="usage"):
        model_aware_prior_loss(shares, exclusive, torch.ones(3))
    with pytest.raises(ValueError, match="usage"):
        model_aware_prior_loss(shares, exclusive, torch.full((4,), 2.0))


def test_attribute_usage_separates_used_from_co_occurring() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 2, (80, 4), generator=g).float()
    a[:, 3] = a[:, 0]  # co-occurs with a used attribute on most images, but the model ignores it
    a[:8, 3] = 1 - a[:8, 3]
    emb = torch.cat([3 * a[:, :1], a[:, 1:2], torch.zeros(80, 2)], dim=1)
    w = attribute_usage(emb, a)
    assert w.shape == (4,) and float(w.min()) >= 0 and float(w.max()) == pytest.approx(1.0)
    assert float(w[0]) == pytest.approx(1.0) and 0.2 < float(w[1]) < 0.5
    assert float(w[2]) < 0.05 and float(w[3]) < 0.05
    pids = torch.arange(80) // 2
    assert torch.allclose(attribute_usage(emb, a, pids=pids)[0], torch.tensor(1.0))
    with pytest.raises(ValueError, match="embeddings"):
        attribute_usage(emb[:5], a)


def test_attribute_usage_all_ones_when_nothing_adds_distance() -> None:
    assert torch.equal(attribute_usage(torch.zeros(6, 3), torch.eye(6)[:, :3]), torch.ones(3))


def test_probe_loss_limits_and_shapes() -> None:
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    assert float(probe_loss(30 * (2 * y - 1), y)) < 1e-6
    zero = probe_loss(torch.zeros(3, 3), y)
    # Balanced: attributes 0 and 1 weigh log 2 in all, attribute 2 (positives only) half of it.
    assert float(zero) == pytest.approx((2 * 0.6931 + 0.3466) / 3, abs=1e-3)
    assert AttributeProbes(3, 5)(torch.rand(4, 3, 5)).shape == (4, 3)


def test_map_entropy_limits() -> None:
    assert float(map_entropy_loss(torch.ones(2, 3, 4, 2))) == pytest.approx(1.0)
    peak = torch.zeros(2, 3, 4, 2)
    peak[..., 1, 1] = 5.0
    assert float(map_entropy_loss(peak)) < 1e-6


def test_pair_losses_paper_path_unchanged() -> None:
    g = torch.Generator().manual_seed(3)
    emb = torch.rand(5, 6, generator=g)
    comps = emb[:, None] + 0.1 * torch.rand(5, 4, 6, generator=g)
    attrs = torch.randint(0, 2, (5, 4), generator=g)
    maps = torch.ones(5, 4, 1, 1)
    out = pair_losses(Components(emb, comps, maps), attrs, "euclidean", 5.0, 1.0)
    i, j = torch.triu_indices(5, 5, offset=1)
    dk = torch.linalg.vector_norm(comps[i] - comps[j], dim=-1)
    ap = attribute_prior_loss(dk / dk.sum(1, keepdim=True), attrs[i] != attrs[j])
    assert torch.allclose(out["prior"], ap, atol=1e-5)
    same = pair_losses(Components(emb, comps, maps), attrs, "euclidean", 5.0, 1.0, torch.ones(4))
    assert torch.allclose(same["prior"], ap, atol=1e-5)
    other = pair_losses(Components(emb, comps, maps), attrs, "euclidean", 5.0, 1.0,
                        torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert not torch.allclose(other["prior"], ap)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_explainer_recipes() -> None:
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(8, 3, 16, 8, generator=g), "attributes": torch.randint(0, 2, (8, 3), generator=g),
             "pid": torch.arange(8) // 2}]
    assert Explainer(_net()).recipe.name == DEFAULT_RECIPE == "amd-subspace"
    paper = Explainer(_net(), recipe="amd").fit(data, epochs=2, progress=False)
    assert isinstance(paper.recipe, PaperAMD) and paper.amd.prepared == {}
    plus = Explainer(_net(), recipe="amd+").fit(data, epochs=2, progress=False)
    usage = plus.amd.prepared["usage_weights"]
    assert isinstance(plus.recipe, AMDPlus) and len(usage) == 3 and plus.recipe.probe_weight == 1.0
    assert all(0.0 <= w <= 1.0 for w in usage)
    att = plus.explain((data[0]["image"][0], data[0]["image"][2]))
    assert att.method == "amd+" and att.extras["recipe"] == "amd+"
    assert torch.allclose(att.contributions.sum(1), att.reconstructed, atol=1e-5)
    given = Explainer(_net(), recipe="amd+").fit(data, epochs=1, progress=False, probe_weight=0.0,
                                                  usage_weights=(1.0, 0.5, 0.0))
    assert given.amd.prepared["usage_weights"] == [1.0, 0.5, 0.0] and given.recipe.probe_weight == 0.0
    with pytest.raises(ValueError, match="recipe 'truthy'"):
        Explainer(_net(), recipe="truthy")
    with pytest.warns(DeprecationWarning, match="recipe"):
        assert Explainer(_net(), method="amd+").recipe.name == "amd+"
    with pytest.raises(TypeError, match="unknown options"):
        Explainer(_net()).fit(data, epochs=1, progress=False, probe_weight=1.0)  # not a paper option


def test_recipe_options_round_trip() -> None:
    recipe = AMDPlus(usage_weights=(0.5, 1.0), probe_weight=2.0, entropy_weight=0.1)
    assert AMDPlus(**recipe.options()) == recipe
    assert recipe.replace(probe_weight=0.0).probe_weight == 0.0 and recipe.probe_weight == 2.0
    with pytest.raises(TypeError, match="unknown options"):
        recipe.replace(flip=False)


# ---------------------------------------------------------------- shared, gated maps (AMD+)
def test_region_slots_share_one_region_per_one_hot_group() -> None:
    from reidexplain.attributes import get_schema
    from reidexplain.interpreter import region_slots

    schema = get_schema("market1501")
    slots = region_slots(schema)
    for group in schema.one_hot_groups:
        assert len({slots[schema.names.index(n)] for n in schema.groups[group]}) == 1
    grouped = {n for g in schema.one_hot_groups for n in schema.groups[g]}
    alone = [slots[k] for k, n in enumerate(schema.names) if n not in grouped]
    assert len(set(alone)) == len(alone)
    assert sorted(set(slots)) == list(range(max(slots) + 1))
    assert len(set(region_slots(get_schema("shared")))) == 18  # no one-hot group there


def test_shared_head_starts_at_one_and_rejects_bad_slots() -> None:
    from reidexplain.interpreter import AttributeDecomposition

    head = AttributeDecomposition(4, 3, hidden=8, slots=[0, 0, 1])
    feats, images = torch.rand(2, 4, 6, 3), torch.rand(2, 3, 24, 12)
    z, recognised = head.decompose(feats, images)
    assert torch.equal(z, torch.zeros(2, 3, 6, 3)) and recognised.shape == (2, 2, 3)
    with pytest.raises(ValueError, match="images"):
        head.decompose(feats)
    with pytest.raises(ValueError, match="slots"):
        AttributeDecomposition(4, 3, slots=[0, 2, 2])  # region 1 missing
    with pytest.raises(ValueError, match="slots"):
        AttributeDecomposition(4, 3, slots=[0, 1])


def test_shared_maps_have_one_shape_per_region() -> None:
    from reidexplain.interpreter import AttributeDecomposition

    torch.manual_seed(0)
    head = AttributeDecomposition(4, 3, hidden=8, slots=[0, 0, 1])
    with torch.no_grad():
        nn.init.normal_(head.classifier.weight)
        nn.init.normal_(head.gate_weight, std=0.1)
        head.gate_bias.copy_(torch.tensor([-3.0, -5.0, -4.0]))  # z < 0 everywhere: the exp branch
    maps = head(torch.rand(2, 4, 6, 3), torch.rand(2, 3, 24, 12))
    # Attributes 0 and 1 share region 0: their maps differ by a per-image factor only.
    ratio = (maps[:, 0] / maps[:, 1]).flatten(1)
    assert not torch.allclose(maps[:, 0], maps[:, 1])
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)
    assert not torch.allclose(maps[:, 0] / maps[:, 0].amax((1, 2), keepdim=True),
                              maps[:, 2] / maps[:, 2].amax((1, 2), keepdim=True))


def test_recognition_reads_only_its_own_cell() -> None:
    from reidexplain.interpreter import AttributeDecomposition

    torch.manual_seed(0)
    head = AttributeDecomposition(4, 2, hidden=8, slots=[0, 1])
    with torch.no_grad():
        for p in head.parameters():
            nn.init.normal_(p)
    images = torch.rand(1, 3, 24, 12)
    changed = images.clone()
    changed[..., 4:8, 0:4] = 1.0  # exactly cell (1, 0) of the 6x3 grid
    with torch.no_grad():
        diff = (head.local_features(images, (6, 3)) - head.local_features(changed, (6, 3))).abs().sum(1)[0]
    assert diff[1, 0] > 0 and float(diff.sum() - diff[1, 0]) == pytest.approx(0.0, abs=1e-6)



def test_recognition_loss_limits() -> None:
    from reidexplain.interpreter.model_aware import recognition_loss

    y = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    groups = [[0, 1, 2]]
    assert float(recognition_loss(40 * (2 * y - 1), y, groups)) < 1e-6
    assert float(recognition_loss(-40 * (2 * y - 1), y, groups)) > 10
    broken = y.clone()
    broken[0, 1] = 1.0  # two colours: that image skips the group
    assert torch.isfinite(recognition_loss(torch.zeros(3, 4), broken, groups))
    assert float(recognition_loss(torch.zeros(3, 4), y, groups)) > 0


def test_amd_plus_uses_shared_maps_and_round_trips(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.rand(8, 3, 16, 8, generator=g),
             "attributes": torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0]] * 2),
             "pid": torch.arange(8) // 2}]
    from reidexplain.attributes import AttributeSchema

    schema = AttributeSchema("toy", ("red", "blue", "green", "hat"), ("red", "blue", "green", "hat"),
                             (0.3, 0.3, 0.4, 0.5), groups={"color": ("red", "blue", "green")},
                             one_hot_groups=("color",))
    plus = Explainer(_net(), attributes=schema, recipe="amd+").fit(data, epochs=3, progress=False)
    assert plus.recipe.shared_maps and plus.amd.prepared["one_hot_groups"] == [[0, 1, 2]]
    assert plus.network.decomposition.shared
    pair = (data[0]["image"][0], data[0]["image"][2])
    before = plus.explain(pair)
    plus.save(tmp_path / "plus.pt")
    again = Explainer.load(tmp_path / "plus.pt", _net())
    assert again.network.decomposition.shared and again.recipe == plus.recipe
    assert torch.allclose(again.explain(pair).contributions, before.contributions, atol=1e-6)
    paper = Explainer(_net(), attributes=schema, recipe="amd").fit(data, epochs=1, progress=False)
    assert not paper.network.decomposition.shared


def test_sharpness_sets_breadth_not_peak() -> None:
    from reidexplain.interpreter import AttributeDecomposition

    torch.manual_seed(1)
    head = AttributeDecomposition(4, 2, hidden=8, slots=[0, 0])
    with torch.no_grad():
        nn.init.normal_(head.classifier.weight, std=3.0)
        start = head(torch.rand(3, 4, 6, 3), torch.rand(3, 3, 24, 12))
        head.sharpness.copy_(torch.tensor([5.0, -5.0]))  # attribute 0 sharp, attribute 1 broad
        maps = head(torch.rand(3, 4, 6, 3), torch.rand(3, 3, 24, 12))
    # Nearly flat at the start (d_hat starts close to d), whatever the region's logits.
    assert float((start.amin((2, 3)) / start.amax((2, 3))).min()) > 0.5
    assert torch.equal(maps[:, 0].flatten(1).argmax(1), maps[:, 1].flatten(1).argmax(1))
    spread = maps.amin((2, 3)) / maps.amax((2, 3))
    assert bool((spread[:, 0] < spread[:, 1]).all())


def test_probe_and_recognition_losses_leave_unknown_labels_out() -> None:
    from reidexplain.interpreter.model_aware import probe_loss, recognition_loss

    g = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 4, generator=g)
    y = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]).float()
    known = torch.ones(6, 4, dtype=torch.bool)
    torch.testing.assert_close(probe_loss(logits, y, known), probe_loss(logits, y))
    torch.testing.assert_close(recognition_loss(logits, y, [[0, 1, 2]], known), recognition_loss(logits, y, [[0, 1, 2]]))
    known[0, 3] = False
    flipped = y.clone()
    flipped[0, 3] = 0.0  # an unknown label's value must not matter
    torch.testing.assert_close(probe_loss(logits, y, known), probe_loss(logits, flipped, known))
    known[1, 0] = False  # image 1 skips the colour group
    flipped[1] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    torch.testing.assert_close(recognition_loss(logits, y, [[0, 1, 2]], known),
                               recognition_loss(logits, flipped, [[0, 1, 2]], known))


def test_attribute_usage_leaves_unknown_labels_out() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 2, (60, 3), generator=g).float()
    emb = torch.cat([4 * a[:, :1], a[:, 1:2], torch.zeros(60, 1)], dim=1)
    plain = attribute_usage(emb, a)
    known = torch.ones(60, 3, dtype=torch.bool)
    torch.testing.assert_close(attribute_usage(emb, a, known=known), plain)
    known[:10, 0] = False
    scrambled = a.clone()
    scrambled[:10, 0] = 1 - scrambled[:10, 0]  # unknown labels are wrong: they must not matter much
    usage = attribute_usage(emb, scrambled, known=known)
    assert float(usage[0]) == pytest.approx(1.0, abs=0.05) and float(usage[2]) < 0.1



def _spread_over_sharpness(head, feats, images) -> torch.Tensor:
    """Per image and attribute: the range of a map's logits over positions, divided by its sharpness."""
    with torch.no_grad():
        z, _ = head.decompose(feats, images)
        spread = z.flatten(2).amax(2) - z.flatten(2).amin(2)
        return spread / torch.nn.functional.softplus(head.sharpness)


def test_logit_cap_bounds_how_sharply_a_region_can_look() -> None:
    from reidexplain.interpreter import AttributeDecomposition

    feats, images = torch.rand(2, 4, 6, 3), torch.rand(2, 3, 24, 12)
    spreads = {}
    for cap in (None, 2.0):
        torch.manual_seed(0)
        head = AttributeDecomposition(4, 3, hidden=8, slots=[0, 0, 1], logit_cap=cap)
        with torch.no_grad():
            nn.init.normal_(head.classifier.weight, std=50.0)  # spatial logits far beyond the cap
        spreads[cap] = _spread_over_sharpness(head, feats, images)
    assert float(spreads[2.0].amax()) <= 4.0 + 1e-4  # a region's logits lie within (-cap, cap)
    assert float(spreads[None].amin()) > 4.0
    with pytest.raises(ValueError, match="logit_cap"):
        AttributeDecomposition(4, 3, slots=[0, 0, 1], logit_cap=0.0)
    with pytest.raises(ValueError, match="slots"):
        AttributeDecomposition(4, 3, logit_cap=5.0)
    with pytest.raises(ValueError, match="slots"):
        AttributeDecomposition(4, 3, fixed_pooling=True)
    with pytest.raises(ValueError, match="slots"):
        AttributeDecomposition(4, 3, cell_norm=True)
    with pytest.raises(ValueError, match="slots"):
        AttributeDecomposition(4, 3, sharpness=1.0)
    with pytest.raises(ValueError, match="sharpness"):
        AttributeDecomposition(4, 3, slots=[0, 0, 1], sharpness=-1.0)


def test_cell_norm_makes_where_a_region_looks_blind_to_the_size_of_activations() -> None:
    from reidexplain.interpreter import AttributeDecomposition

    torch.manual_seed(0)
    feats, images = torch.rand(2, 4, 6, 3), torch.rand(2, 3, 24, 12)
    louder = feats * 50.0  # the same features, 50 times larger (the hidden convolution has no bias)
    for cell_norm in (False, True):
        torch.manual_seed(0)
        head = AttributeDecomposition(4, 3, hidden=8, slots=[0, 0, 1], cell_norm=cell_norm)
        with torch.no_grad():
            nn.init.normal_(head.classifier.weight)
            z, _ = head.decompose(feats, images)
            z_loud, _ = head.decompose(louder, images)
        if cell_norm:  # every cell's direction is unchanged, so is every logit
            torch.testing.assert_close(z_loud, z, rtol=1e-4, atol=1e-4)
        else:
            assert float((z_loud - z).abs().amax()) > 0.1  # 0.1 is two logits apart at sharpness 0.05


@pytest.mark.parametrize("fixed", [False, True])
def test_fixed_pooling_keeps_the_read_out_from_moving_the_maps(fixed: bool) -> None:
    from reidexplain.interpreter import AttributeDecomposition

    torch.manual_seed(0)
    head = AttributeDecomposition(4, 3, hidden=8, slots=[0, 0, 1], fixed_pooling=fixed)
    with torch.no_grad():
        for p in head.parameters():
            nn.init.normal_(p, std=0.5)
    _, recognised = head.decompose(torch.rand(2, 4, 6, 3), torch.rand(2, 3, 24, 12))
    evidence, read_out = (torch.autograd.grad(recognised[:, i].sum(), head.classifier.weight, retain_graph=True)[0]
                          for i in (0, 1))
    assert float(evidence.abs().sum()) > 1e-4  # the per-cell evidence moves where a region looks
    if fixed:
        assert float(read_out.abs().sum()) == pytest.approx(0.0, abs=1e-12)
    else:
        assert float(read_out.abs().sum()) > 1e-4


def test_the_defaults_map_options_are_those_of_both_modes() -> None:
    from helpers import AMDLinearHeadNet

    from reidexplain.adapters import adapt_model
    from reidexplain.interpreter import SubspaceAMD

    net = AMDLinearHeadNet().eval()
    probe = torch.rand(2, 3, 32, 16)
    gray, black = adapt_model(net, probe), adapt_model(net, probe, feature_layer=None)
    assert gray.gray_box and not black.gray_box
    _, h, w = gray.grid_shape
    assert SubspaceAMD().map_options(gray) == {"logit_cap": 5.0, "fixed_pooling": False, "cell_norm": True,
                                               "sharpness": 1.0, "positions": (h, w)}
    # A black box's grid is its own trunk's: the same options, without the region prior.
    assert SubspaceAMD().map_options(black) == {**SubspaceAMD().map_options(gray), "positions": None}
    assert SubspaceAMD(map_position=False).map_options(gray)["positions"] is None
    assert SubspaceAMD(fixed_pooling=True, map_logit_cap=None, cell_norm=False,
                       map_sharpness=0.05, map_position=False).map_options(gray) == {
        "logit_cap": None, "fixed_pooling": True, "cell_norm": False, "sharpness": 0.05, "positions": None}
    with pytest.raises(ValueError, match="map_logit_cap"):
        SubspaceAMD(map_logit_cap=-1.0)
    with pytest.raises(ValueError, match="map_sharpness"):
        SubspaceAMD(map_sharpness=0.0)


def test_region_positions_start_neutral_move_where_a_region_looks_and_follow_the_grid() -> None:
    from reidexplain.interpreter import AttributeDecomposition

    torch.manual_seed(0)
    feats, images = torch.rand(2, 4, 6, 3), torch.rand(2, 3, 24, 12)
    torch.manual_seed(1)
    plain = AttributeDecomposition(4, 3, hidden=8, slots=[0, 0, 1], cell_norm=True)
    torch.manual_seed(1)
    placed = AttributeDecomposition(4, 3, hidden=8, slots=[0, 0, 1], cell_norm=True, positions=(6, 3))
    assert placed.position.shape == (2, 6, 3)
    with torch.no_grad():
        z0, _ = plain.decompose(feats, images)
        z1, _ = placed.decompose(feats, images)
        torch.testing.assert_close(z1, z0)  # zero at the start: the prior changes nothing yet
        placed.position[0, -1, :] = 4.0  # region 0 is told to lie in the bottom row
        z2, _ = placed.decompose(feats, images)
    bottom = z2[:, 0].flatten(1).argmax(1) // 3
    assert bottom.tolist() == [5, 5]
    torch.testing.assert_close(z2[:, 2], z0[:, 2])
    with torch.no_grad():  # another grid: the prior is resized, not refused
        z3, _ = placed.decompose(torch.rand(2, 4, 12, 6), torch.rand(2, 3, 48, 24))
    assert z3.shape == (2, 3, 12, 6)


def test_region_positions_need_shared_maps_and_a_grid() -> None:
    from reidexplain.interpreter import AttributeDecomposition

    with pytest.raises(ValueError, match="positions"):
        AttributeDecomposition(4, 3, hidden=8, positions=(6, 3))
    with pytest.raises(ValueError, match="positions"):
        AttributeDecomposition(4, 3, hidden=8, slots=[0, 0, 1], positions=(0, 3))
