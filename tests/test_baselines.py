"""Tests of reidexplain.baselines: Captum methods on pair distances."""

from __future__ import annotations

import pytest
import torch
from captum.attr import DeepLift, IntegratedGradients, LayerGradCam
from helpers import BaselineRegionNet, baseline_images, baseline_toy_net
from torch import nn

from reidexplain.adapters import find_feature_layer
from reidexplain.attribution import PairAttribution
from reidexplain.baselines import (
    BASELINES,
    CaptumPair,
    FeatureAblationPair,
    GradCAMPair,
    IntegratedGradientsPair,
    OcclusionPair,
    PairDistance,
    SaliencyPair,
    captum_pair_explainer,
    create_baseline,
    grid_segments,
    list_baselines,
    register_baseline,
    slic_segments,
)
from reidexplain.distance import pair_distance

# DeepLift and GuidedBackprop announce their temporary hooks; the hooks are checked below.
pytestmark = pytest.mark.filterwarnings("ignore:Setting .*hooks:UserWarning")

SMALL = {
    "integrated_gradients": {"n_steps": 8},
    "saliency": {},
    "occlusion": {"window": (3, 8, 8), "stride": (3, 8, 8)},
    "grad_cam": {},
    "feature_ablation": {"cell": 8},
    "input_x_gradient": {},
    "guided_backprop": {},
    "deep_lift": {},
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _pair(n: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    x = baseline_images(2 * n, seed=seed)
    return x[:n], x[n:]


def _grad_of_distance(model, a, b, metric="euclidean"):
    with torch.no_grad():
        partner = model(b)
    x = a.clone().requires_grad_(True)
    pair_distance(model(x), partner, metric).sum().backward()
    return x.grad


# ------------------------------------------------------------------------------------ PairDistance
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_pair_distance_module_equals_pair_distance_of_embeddings(metric):
    model = baseline_toy_net().eval()
    a, b = _pair(3)
    with torch.no_grad():
        expected = pair_distance(model(a), model(b), metric)
        got = PairDistance(model, metric)(a, model(b))
    torch.testing.assert_close(got, expected)
    assert got.shape == (3,) and float(got.min()) > 0


def test_pair_distance_rejects_bad_arguments():
    with pytest.raises(TypeError, match="model"):
        PairDistance(lambda x: x)
    with pytest.raises(ValueError, match="metric"):
        PairDistance(nn.Flatten(), metric="manhattan")
    model = baseline_toy_net().eval()
    with pytest.raises(ValueError, match="partner_embeddings"):
        PairDistance(model)(baseline_images(2), torch.zeros(2, 3))


# ------------------------------------------------------------------------------------ numbers
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_integrated_gradients_completeness(metric):
    model = baseline_toy_net().eval()
    a, b = _pair(2)
    # The toy net's ReLU kinks slow convergence: 64 steps leave ~0.6 %, 256 steps ~0.02 %.
    result = IntegratedGradientsPair(model, metric=metric, n_steps=256).explain((a, b))
    with torch.no_grad():
        ea, eb = model(a), model(b)
        black = model(torch.zeros_like(a))
        expected_a = pair_distance(ea, eb, metric) - pair_distance(black, eb, metric)
        expected_b = pair_distance(eb, ea, metric) - pair_distance(black, ea, metric)
    raw_a, raw_b = result.extras["raw"]
    # Cosine distances of a random toy net are small: the tolerance is relative.
    torch.testing.assert_close(raw_a.sum(dim=(1, 2, 3)), expected_a, rtol=2e-3, atol=1e-7)
    torch.testing.assert_close(raw_b.sum(dim=(1, 2, 3)), expected_b, rtol=2e-3, atol=1e-7)
    # The map is the channel sum of the raw attribution, so it keeps completeness.
    torch.testing.assert_close(result.maps[0].sum(dim=(1, 2, 3)), expected_a, rtol=2e-3, atol=1e-7)
    delta = result.extras["convergence_delta"][0]
    assert float((delta.abs() / expected_a.abs()).max()) < 2e-3
    assert float(expected_a.abs().min()) > 1e-3  # the checks above are not trivially 0 = 0


def test_integrated_gradients_custom_baseline_and_internal_batch():
    model = baseline_toy_net().eval()
    a, b = _pair(2)
    grey = torch.full((3, 32, 16), 0.5)
    full = IntegratedGradientsPair(model, n_steps=16, baseline=grey).explain((a, b))
    chunked = IntegratedGradientsPair(model, n_steps=16, baseline=grey, internal_batch_size=7).explain((a, b))
    torch.testing.assert_close(full.maps[0], chunked.maps[0], rtol=1e-4, atol=1e-6)
    with torch.no_grad():
        eb = model(b)
        expected = pair_distance(model(a), eb) - pair_distance(model(grey.expand_as(a)), eb)
    torch.testing.assert_close(full.maps[0].sum(dim=(1, 2, 3)), expected, rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_saliency_equals_autograd_gradient(metric):
    model = baseline_toy_net().eval()
    a, b = _pair(2)
    grad_a = _grad_of_distance(model, a, b, metric)
    grad_b = _grad_of_distance(model, b, a, metric)
    signed = SaliencyPair(model, metric=metric, abs=False).explain((a, b))
    torch.testing.assert_close(signed.extras["raw"][0], grad_a)
    torch.testing.assert_close(signed.maps[1], grad_b.sum(dim=1, keepdim=True))
    absolute = SaliencyPair(model, metric=metric).explain((a, b))
    torch.testing.assert_close(absolute.maps[0], grad_a.abs().sum(dim=1, keepdim=True))
    assert float(grad_a.abs().max()) > 0


def test_occlusion_is_zero_outside_the_region_the_model_sees():
    torch.manual_seed(1)
    model = BaselineRegionNet()
    a, b = _pair(2)
    result = OcclusionPair(model, window=(3, 8, 8), stride=(3, 8, 8)).explain((a, b))
    for maps in result.maps:
        outside = maps.clone()
        outside[:, :, :8, :8] = 0
        assert float(outside.abs().max()) == pytest.approx(0.0, abs=1e-6)
        assert float(maps[:, :, :8, :8].abs().min()) > 0  # the seen block does change the distance
    # One 8x8 window on the seen block: the attribution is d(a,b) - d(a with the block black, b) per pixel.
    with torch.no_grad():
        eb = model(b)
        occluded = a.clone()
        occluded[:, :, :8, :8] = 0
        delta = pair_distance(model(a), eb) - pair_distance(model(occluded), eb)
    torch.testing.assert_close(result.extras["raw"][0][:, 0, 0, 0], delta)


def test_feature_ablation_on_a_grid_equals_aligned_occlusion():
    model = baseline_toy_net().eval()
    pair = _pair(2)
    ablation = FeatureAblationPair(model, cell=8, perturbations_per_eval=3).explain(pair)
    occlusion = OcclusionPair(model, window=(3, 8, 8), stride=(3, 8, 8)).explain(pair)
    for x, y in zip(ablation.maps, occlusion.maps, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)
    assert ablation.extras["feature_mask"][0].unique().tolist() == list(range(8))


def test_feature_ablation_with_user_mask_and_slic():
    model = baseline_toy_net().eval()
    pair = _pair(1)
    halves = torch.zeros(32, 16, dtype=torch.long)
    halves[16:] = 1
    result = FeatureAblationPair(model, feature_mask=halves).explain(pair)
    top, bottom = result.maps[0][0, 0, 0, 0], result.maps[0][0, 0, -1, -1]
    # Constant over each half of the mask (up to rounding: 3.7e-9 was seen on another machine).
    for half, value in ((result.maps[0][0, 0, :16], top), (result.maps[0][0, 0, 16:], bottom)):
        torch.testing.assert_close(half, value.expand_as(half), rtol=1e-5, atol=1e-6)
    assert abs(float(top) - float(bottom)) > 1e-4
    slic = FeatureAblationPair(model, segments="slic", n_segments=6).explain(pair)
    mask_a = slic.extras["feature_mask"][0]
    assert mask_a.shape == (1, 1, 32, 16)
    # Every segment has one value in the map.
    for seg in mask_a.unique():
        assert float(slic.maps[0][mask_a == seg].std(unbiased=False)) < 1e-6


def test_grid_and_slic_segments():
    assert grid_segments(32, 16, cell=(8, 8)).unique().numel() == 8
    assert grid_segments(5, 3, cell=2).max() == 5  # border cells are smaller
    img = torch.zeros(2, 3, 32, 16)
    img[0, 0, :, :8] = 1.0  # image 0: red left half
    img[1, 2, 20:] = 1.0  # image 1: blue bottom
    seg = slic_segments(img, n_segments=4)
    assert seg.shape == (2, 1, 32, 16)
    for i in range(2):
        ids = seg[i].unique()
        assert ids.tolist() == list(range(ids.numel()))
    # No segment straddles a colour edge.
    assert set(seg[0, 0, :, :8].unique().tolist()).isdisjoint(seg[0, 0, :, 8:].unique().tolist())
    assert set(seg[1, 0, :20].unique().tolist()).isdisjoint(seg[1, 0, 20:].unique().tolist())
    with pytest.raises(ValueError, match="cell"):
        grid_segments(4, 4, cell=0)


def test_grad_cam_shapes_and_auto_layer():
    model = baseline_toy_net().eval()
    assert find_feature_layer(model, baseline_images(1)).name == "features"
    explainer = GradCAMPair(model)
    result = explainer.explain(_pair(3))
    assert explainer.layer_name == "features" and explainer.adapter.kind == "fx"
    assert result.maps[0].shape == (3, 1, 32, 16) and result.maps[1].shape == (3, 1, 32, 16)
    assert result.extras["raw"][0].shape == (3, 1, 16, 8)  # the layer's own resolution
    assert result.extras["layer"] == "features"
    assert float(result.maps[0].min()) < 0 < float(result.maps[0].max())  # signed
    by_module = GradCAMPair(model, layer=model.features[2]).explain(_pair(3))
    assert by_module.extras["raw"][0].shape == (3, 1, 32, 16)
    relu = GradCAMPair(model, layer="features.0", relu_attributions=True).explain(_pair(3))
    assert float(relu.maps[0].min()) >= 0


def test_grad_cam_equals_captum_layer_grad_cam_via_generic_wrapper():
    model = baseline_toy_net().eval()
    pair = _pair(2)
    ours = GradCAMPair(model, layer="features.3").explain(pair)
    generic = captum_pair_explainer(LayerGradCam, model, layer=model.features[3]).explain(pair)
    assert generic.method == "layer_grad_cam"
    torch.testing.assert_close(ours.extras["raw"][0], generic.extras["raw"][0])
    # The generic wrapper upsamples layer maps the same way (bilinear).
    torch.testing.assert_close(ours.maps[1], generic.maps[1])


def test_identical_images_give_finite_maps():
    model = baseline_toy_net().eval()
    a = baseline_images(2)
    for name in ("saliency", "integrated_gradients", "grad_cam", "input_x_gradient"):
        result = create_baseline(name, model, **SMALL[name]).explain((a, a.clone()))
        assert float(result.distance.max()) < 1e-5
        for maps in result.maps:
            assert torch.isfinite(maps).all(), name
    saliency = SaliencyPair(model, abs=False).explain((a, a.clone()))
    # d is at its minimum: zero gradient
    assert float(saliency.maps[0].abs().max()) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_batch_equals_looping_single_pairs(name):
    model = baseline_toy_net().train()  # batch statistics would break this if explain did not use eval
    a, b = _pair(3)
    explainer = create_baseline(name, model, **SMALL[name])
    batch = explainer.explain((a, b))
    for i in range(3):
        single = explainer.explain((a[i], b[i]))
        assert isinstance(single, PairAttribution) and len(single) == 1
        assert single.method == name
        for x, y in zip(batch.maps, single.maps, strict=True):
            torch.testing.assert_close(x[i : i + 1], y, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(batch.distance[i : i + 1], single.distance)
    chunked = explainer.explain((a, b), batch_size=2)
    torch.testing.assert_close(chunked.maps[1], batch.maps[1], rtol=1e-4, atol=1e-6)
    assert set(chunked.extras) == set(batch.extras)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_model_is_left_exactly_as_the_user_left_it(name):
    model = baseline_toy_net()
    model.train()
    model.features[1].eval()  # a mixed state must come back as it was
    model.head.weight.requires_grad_(False)
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    requires = [p.requires_grad for p in model.parameters()]
    hooks = [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()
    ]
    result = create_baseline(name, model, **SMALL[name]).explain(_pair(2))
    assert torch.isfinite(result.maps[0]).all()
    for key, value in model.state_dict().items():
        assert torch.equal(value, before_state[key]), key
    assert [m.training for m in model.modules()] == flags
    assert [p.requires_grad for p in model.parameters()] == requires
    assert all(p.grad is None for p in model.parameters())
    assert [
        (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()
    ] == hooks


def test_distance_and_result_fields():
    model = baseline_toy_net().eval()
    a, b = _pair(2)
    result = SaliencyPair(model).explain((a, b))
    with torch.no_grad():
        torch.testing.assert_close(result.distance, pair_distance(model(a), model(b)))
    assert result.contributions is None and result.reconstructed is None and result.attribute_names is None
    assert not result.has_contributions
    torch.testing.assert_close(result.images[0], a)
    assert not result.maps[0].requires_grad and not result.images[0].requires_grad


# ------------------------------------------------------------------------------------ generic, registry
def test_captum_pair_explainer_by_class_and_name():
    model = baseline_toy_net().eval()
    pair = _pair(2)
    ig = captum_pair_explainer(IntegratedGradients, model, n_steps=8).explain(pair)
    ours = IntegratedGradientsPair(model, n_steps=8).explain(pair)
    assert ig.method == "integrated_gradients"
    torch.testing.assert_close(ig.maps[0], ours.maps[0])
    for name in ("DeepLift", "deep_lift"):
        explainer = captum_pair_explainer(name, model)
        assert isinstance(explainer, CaptumPair) and isinstance(explainer.algorithm, DeepLift)
    deeplift = captum_pair_explainer("DeepLift", model, multiply_by_inputs=True).explain(pair)
    assert deeplift.method == "deep_lift" and deeplift.maps[0].shape == (2, 1, 32, 16)


def test_registry():
    names = list_baselines()
    for name in ("integrated_gradients", "saliency", "occlusion", "grad_cam", "feature_ablation"):
        assert name in names
    assert list_baselines("*ablation") == ["feature_ablation"]
    model = baseline_toy_net()
    assert isinstance(create_baseline("occlusion", model), OcclusionPair)
    assert create_baseline("Lime", model).method == "lime"
    with pytest.raises(ValueError, match="name"):
        create_baseline("no_such_method", model)


def test_every_entry_carries_a_label_and_defaults_that_build_it():
    model = baseline_toy_net().eval()
    assert list_baselines() == BASELINES.names()
    for name in BASELINES:
        meta = BASELINES.entry(name).metadata
        assert isinstance(meta["label"], str) and meta["label"], name
        assert isinstance(meta["defaults"], dict), name
        explainer = create_baseline(name, model, **meta["defaults"])
        for key, value in meta["defaults"].items():
            assert getattr(explainer, key) == value or getattr(explainer, key) == (3, value, value), (name, key)
    assert BASELINES.entry("grad_cam").metadata["label"] == "Grad-CAM"
    assert BASELINES.entry("integrated_gradients").metadata["defaults"] == {"n_steps": 50}
    # The defaults are the benchmark's settings, not applied unless asked for.
    assert create_baseline("occlusion", model).perturbations_per_eval == 1


def test_register_baseline_with_label_and_defaults():
    def signed(model, **kw):
        return SaliencyPair(model, abs=False, **kw)

    assert "test_signed_saliency" not in BASELINES
    try:
        assert register_baseline("test_signed_saliency", signed, defaults={"metric": "cosine"}) is signed
        entry = BASELINES.entry("test_signed_saliency")
        assert entry.metadata == {"label": "Test Signed Saliency", "defaults": {"metric": "cosine"}}
        with pytest.raises(ValueError, match="already registered"):
            register_baseline("test_signed_saliency", lambda model, **kw: signed(model, **kw))
        register_baseline("test_signed_saliency", signed, label="Signed", override=True)
        assert BASELINES.entry("test_signed_saliency").metadata["label"] == "Signed"
        assert create_baseline("test_signed_saliency", baseline_toy_net()).abs is False
    finally:
        BASELINES.unregister("test_signed_saliency")
    assert "test_signed_saliency" not in list_baselines()

    @register_baseline("test_decorated", label="Decorated")
    def decorated(model, **kw):
        return SaliencyPair(model, **kw)

    try:
        assert BASELINES.get("test_decorated") is decorated
    finally:
        BASELINES.unregister("test_decorated")
    with pytest.raises(TypeError, match="label"):
        register_baseline("test_bad", signed, label=3)
    with pytest.raises(TypeError, match="defaults"):
        register_baseline("test_bad", signed, defaults=[("n_steps", 3)])
    assert "test_bad" not in BASELINES


def test_a_baseline_registered_for_a_block_leaves_nothing_behind():
    before = BASELINES.names()
    with BASELINES.registered("saliency", SaliencyPair, label="Replaced", defaults={}):
        assert BASELINES.entry("saliency").metadata["label"] == "Replaced"
    assert BASELINES.names() == before
    assert BASELINES.entry("saliency").metadata["label"] == "Saliency"


# ------------------------------------------------------------------------------------ errors
def test_bad_inputs_raise_clear_errors():
    model = baseline_toy_net()
    a, b = _pair(2)
    with pytest.raises(TypeError, match="pair"):
        SaliencyPair(model).explain(a)
    with pytest.raises(ValueError, match="same shape"):
        SaliencyPair(model).explain((a, b[:1]))
    with pytest.raises(ValueError, match="batch_size"):
        SaliencyPair(model).explain((a, b), batch_size=0)
    with pytest.raises(ValueError, match="window"):
        OcclusionPair(model).explain((a[:, :, :8, :8], b[:, :, :8, :8]))
    with pytest.raises(ValueError, match="n_steps"):
        IntegratedGradientsPair(model, n_steps=0)
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradientsPair(model, baseline=torch.zeros(1, 3)).explain((a, b))
    with pytest.raises(ValueError, match="segments"):
        FeatureAblationPair(model, segments="watershed")
    with pytest.raises(ValueError, match="feature_mask"):
        FeatureAblationPair(model, feature_mask=torch.zeros(4, 4, dtype=torch.long)).explain((a, b))
    with pytest.raises(ValueError, match="layer"):
        GradCAMPair(model, layer="no.such.layer")
    with pytest.raises(ValueError, match="layer"):
        GradCAMPair(model, layer=nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match="additional_forward_args"):
        captum_pair_explainer("Saliency", model, additional_forward_args=(1,))
    with pytest.raises(ValueError, match="algorithm"):
        captum_pair_explainer("NotAMethod", model)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 16, 4))
    with pytest.raises(ValueError, match="image-grid feature map"):
        GradCAMPair(flat).explain((a, b))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_models_device():
    model = baseline_toy_net().eval().cuda()
    a, b = _pair(2)
    for name in sorted(SMALL):
        result = create_baseline(name, model, **SMALL[name]).explain((a, b))
        assert result.maps[0].device.type == "cuda", name
        cpu = create_baseline(name, baseline_toy_net().eval(), **SMALL[name]).explain((a, b))
        torch.testing.assert_close(result.maps[0].cpu(), cpu.maps[0], rtol=1e-3, atol=1e-4)
