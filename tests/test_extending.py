"""Each extension point of docs/architecture.md, used from outside the package.

The code between the ``# --8<-- [start:NAME]`` / ``# --8<-- [end:NAME]`` markers is what
``docs/architecture.md`` shows (it includes those sections of this file), so the documented examples are
the tested ones. Every registration is undone at the end of its test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from captum.attr import NoiseTunnel, Saliency
from helpers import amd_batches, amd_sequential_net
from torch import nn

from reidexplain import Explainer
from reidexplain.adapters import (
    ADAPTERS,
    FeatureAdapter,
    adapt_model,
    is_image_grid,
    outputs_match,
    register_adapter,
)
from reidexplain.attributes import SCHEMAS, AttributeSchema, get_schema, register_schema
from reidexplain.baselines import BASELINES, PairExplainer, SaliencyPair, create_baseline
from reidexplain.decomposition import shares_of
from reidexplain.distance import pair_distance
from reidexplain.interpreter.recipes import RECIPES, PaperAMD
from reidexplain.metrics.streaming import EXPLANATION_METRICS, StreamingMetric

SIZE = (32, 16)


def _images(batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    return torch.cat([b["image"] for b in batches])


# ============================================================================ a model family (adapter)

# --8<-- [start:adapter-model]
class BackboneHeadsNet(nn.Module):
    """fast-reid's layout: ``backbone`` gives the feature grid, ``heads`` turns it into the embedding."""

    def __init__(self, dim: int = 12) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.heads = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.backbone(x))
# --8<-- [end:adapter-model]


# --8<-- [start:adapter-class]
class BackboneHeadsAdapter(FeatureAdapter):
    """Models with a ``backbone`` (images -> grid) and ``heads`` (grid -> embedding) submodule."""

    kind = "backbone_heads"

    @classmethod
    def build(cls, target: nn.Module, probe: torch.Tensor, layer: str | None,
              reference: torch.Tensor) -> FeatureAdapter | None:
        backbone, heads = getattr(target, "backbone", None), getattr(target, "heads", None)
        if not isinstance(backbone, nn.Module) or not isinstance(heads, nn.Module):
            return None  # not of this family: the next registered family is tried
        if layer not in (None, "backbone"):
            return None  # another layer was asked for
        with torch.no_grad():
            grid = backbone(probe.clone())
            if not is_image_grid(tuple(grid.shape), tuple(probe.shape[-2:])):
                return None
            if not outputs_match(heads(grid.clone()), reference):  # head(features(x)) == model(x)
                return None
        return cls(target, "backbone", tuple(grid.shape[1:]), reference.shape[1],
                   reason="the model's backbone and heads")

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.target.backbone(images)

    def _head(self, features: torch.Tensor, images: torch.Tensor | None) -> torch.Tensor:
        return self.target.heads(features)

    def _trainable_trunk(self) -> nn.Module:
        return self.target.backbone  # make_trunk() deep-copies it for the interpreter
# --8<-- [end:adapter-class]


def test_adapter_family_is_picked_by_adapt_model_amd_and_grad_cam() -> None:
    torch.manual_seed(0)
    model = BackboneHeadsNet()
    probe = torch.rand(2, 3, *SIZE)
    assert adapt_model(model, probe).kind == "fx"  # before: the generic graph cut
    # --8<-- [start:adapter-register]
    register_adapter(BackboneHeadsAdapter)  # tried before the built-in families
    # --8<-- [end:adapter-register]
    try:
        # --8<-- [start:adapter-use]
        adapter = adapt_model(model, probe)
        assert (adapter.kind, adapter.layer, adapter.grid_shape) == ("backbone_heads", "backbone", (16, 8, 4))

        explainer = Explainer(model, attributes=["a0", "a1", "a2", "a3", "a4"], recipe="amd")
        explainer.fit(amd_batches(), epochs=2, progress=False)       # AMD through the new family
        assert explainer.adapter.kind == "backbone_heads"

        grad_cam = create_baseline("grad_cam", model)                 # and Grad-CAM too
        grad_cam.explain((probe[0], probe[1]))
        assert grad_cam.adapter.kind == "backbone_heads" and grad_cam.layer_name == "backbone"
        # --8<-- [end:adapter-use]
        assert ADAPTERS.entries()[0].name == "backbone_heads"
        with torch.no_grad():
            expected = model(probe)
        feats, emb = adapter.embed(probe)
        assert feats.shape == (2, 16, 8, 4)
        torch.testing.assert_close(emb, expected, rtol=1e-5, atol=1e-6)
        # the components of an unmasked grid are the embedding; a half-masked grid changes it
        maps = torch.ones(2, 3, 8, 4)
        maps[:, 1, :4] = 0
        comps = adapter.masked_embeddings(probe, feats, maps)
        torch.testing.assert_close(comps[:, 0], expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(comps[:, 1], expected, atol=1e-4)
        attribution = explainer.explain((probe[0], probe[1]))
        torch.testing.assert_close(attribution.contributions.sum(1), attribution.reconstructed,
                                   rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(attribution.distance, pair_distance(expected[:1], expected[1:]),
                                   rtol=1e-5, atol=1e-6)
    finally:
        ADAPTERS.unregister(BackboneHeadsAdapter.kind)
    assert adapt_model(model, probe).kind == "fx"  # and back


def test_adapter_family_checkpoint_round_trip(tmp_path: Any) -> None:
    torch.manual_seed(0)
    model = BackboneHeadsNet()
    probe = torch.rand(2, 3, *SIZE)
    register_adapter(BackboneHeadsAdapter)
    try:
        explainer = Explainer(model, attributes=["a0", "a1", "a2", "a3", "a4"], recipe="amd")
        explainer.fit(amd_batches(), epochs=1, progress=False)
        explainer.save(tmp_path / "interp.pt")
        loaded = Explainer.load(tmp_path / "interp.pt", model)
        assert loaded.adapter.kind == "backbone_heads"
        before, after = explainer.explain((probe[0], probe[1])), loaded.explain((probe[0], probe[1]))
        torch.testing.assert_close(after.contributions, before.contributions, rtol=1e-5, atol=1e-6)
    finally:
        ADAPTERS.unregister(BackboneHeadsAdapter.kind)


# ============================================================================ a recipe

# --8<-- [start:recipe-class]
@dataclass(frozen=True)
class SparseMapsAMD(PaperAMD):
    """The paper's losses plus an L1 penalty on the attribute maps (smaller, more selective maps).

    Attributes:
        map_weight: Weight of the mean map value in the loss (0: exactly the paper's recipe).
    """

    name: ClassVar[str] = "sparse_maps"
    label: ClassVar[str] = "AMD + sparse maps"

    map_weight: float = 1.0

    def losses(self, model: Any, out: Any, attributes: torch.Tensor, context: dict[str, Any],
               known: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        losses = super().losses(model, out, attributes, context, known)  # "loss", "distillation", ...
        term = out.maps.mean()                                           # maps are positive: L1 = mean
        losses["loss"] = losses["loss"] + self.map_weight * term
        losses["map_l1"] = term.detach()
        return losses
# --8<-- [end:recipe-class]


def _mean_map(explainer: Explainer, images: torch.Tensor) -> float:
    return float(explainer.embed(images).maps.mean())


def test_recipe_instance_trains_with_its_extra_loss() -> None:
    batches = amd_batches()
    images = _images(batches)

    def fitted(recipe: Any) -> Explainer:
        return Explainer(amd_sequential_net(), recipe=recipe).fit(batches, epochs=2, progress=False, seed=3)

    # --8<-- [start:recipe-use]
    explainer = Explainer(amd_sequential_net(), recipe=SparseMapsAMD(map_weight=20.0))
    explainer.fit(batches, epochs=2, progress=False, seed=3)
    assert explainer.recipe.name == "sparse_maps" and explainer.amd.recipe.map_weight == 20.0
    # --8<-- [end:recipe-use]
    paper = fitted(PaperAMD())
    same = fitted(SparseMapsAMD(map_weight=0.0))
    sparse = explainer
    # weight 0 is the paper's recipe, step for step
    for a, b in zip(paper.history, same.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
    assert _mean_map(same, images) == pytest.approx(_mean_map(paper, images), rel=1e-5)
    # with weight 20 the term is in the minimised loss and shrinks the maps
    assert sparse.history[-1]["loss"] != pytest.approx(paper.history[-1]["loss"], rel=1e-3)
    assert _mean_map(sparse, images) < _mean_map(paper, images) - 1e-3
    # the recipe reports its term next to the paper's
    amd = sparse.amd
    with torch.no_grad():
        out = amd(batches[0]["image"])
        terms = amd.recipe.losses(amd, out, batches[0]["attributes"], {})
    assert {"loss", "distillation", "prior", "map_l1"} <= set(terms)
    assert float(terms["map_l1"]) == pytest.approx(float(out.maps.mean()), rel=1e-6)


def test_recipe_registered_by_name_takes_fit_options(tmp_path: Any) -> None:
    batches = amd_batches()
    # --8<-- [start:recipe-register]
    with RECIPES.registered(SparseMapsAMD.name, SparseMapsAMD, label=SparseMapsAMD.label):
        explainer = Explainer(amd_sequential_net(), recipe="sparse_maps")
        explainer.fit(batches, epochs=1, progress=False, map_weight=5.0)   # a recipe field, via fit
        assert explainer.recipe.map_weight == 5.0
        # --8<-- [end:recipe-register]
        explainer.save(tmp_path / "interp.pt")  # the recipe is saved by name and options
        loaded = Explainer.load(tmp_path / "interp.pt", amd_sequential_net())
        assert isinstance(loaded.recipe, SparseMapsAMD) and loaded.recipe.map_weight == 5.0
    assert "sparse_maps" not in RECIPES


# ============================================================================ a baseline

# --8<-- [start:baseline-class]
class SmoothGradPair(PairExplainer):
    """SmoothGrad of the pair distance: Captum's Saliency averaged over noisy copies of each image.

    Args:
        model: Target model ``(B,3,H,W) -> (B,D)``.
        metric: ``"euclidean"`` or ``"cosine"``.
        nt_samples: Noisy copies per image.
        stdevs: Standard deviation of the Gaussian noise (images in ``[0, 1]``).
    """

    method = "smoothgrad"

    def __init__(self, model: nn.Module, metric: str = "euclidean", nt_samples: int = 8,
                 stdevs: float = 0.1) -> None:
        super().__init__(model, metric)
        self.nt_samples, self.stdevs = int(nt_samples), float(stdevs)
        self.algorithm = NoiseTunnel(Saliency(self.forward_func))

    def _attribute(self, inputs: torch.Tensor, partners: torch.Tensor) -> torch.Tensor:
        # (2B,3,H,W) images and the (2B,D) fixed partner embeddings -> a (2B,3,H,W) attribution
        return self.algorithm.attribute(inputs, nt_type="smoothgrad", nt_samples=self.nt_samples,
                                        stdevs=self.stdevs, additional_forward_args=(partners,))
# --8<-- [end:baseline-class]


def test_baseline_registered_and_created_by_name() -> None:
    torch.manual_seed(0)
    model = amd_sequential_net()
    pair = (torch.rand(2, 3, *SIZE), torch.rand(2, 3, *SIZE))
    # --8<-- [start:baseline-use]
    with BASELINES.registered("smoothgrad", SmoothGradPair, label="SmoothGrad", defaults={"nt_samples": 8}):
        entry = BASELINES.entry("smoothgrad")
        smoothgrad = create_baseline("smoothgrad", model, **entry.metadata["defaults"])
        result = smoothgrad.explain(pair)                  # a PairAttribution, like every baseline's
        assert result.method == "smoothgrad" and result.maps[0].shape == (2, 1, 32, 16)
        # --8<-- [end:baseline-use]
        assert entry.metadata["label"] == "SmoothGrad"
        # without noise, SmoothGrad is Saliency
        plain = create_baseline("smoothgrad", model, nt_samples=2, stdevs=0.0).explain(pair)
    saliency = SaliencyPair(model).explain(pair)
    for side in range(2):
        torch.testing.assert_close(plain.maps[side], saliency.maps[side], rtol=1e-4, atol=1e-6)
    model.eval()
    with torch.no_grad():
        expected = pair_distance(model(pair[0]), model(pair[1]))
    torch.testing.assert_close(result.distance, expected, rtol=1e-5, atol=1e-6)
    assert "smoothgrad" not in BASELINES


# ============================================================================ a metric

# --8<-- [start:metric-class]
class TopShareExclusiveMetric(StreamingMetric):
    """Percent of pairs whose largest share goes to an attribute in which the two persons differ.

    Pairs without a (known) exclusive attribute, or not valid (an image with itself), do not count.
    """

    name = "top_share_exclusive"
    higher_is_better = True

    def per_pair(self, *, shares: torch.Tensor, exclusive: torch.Tensor, valid: torch.Tensor | None = None,
                 known: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        counted = exclusive.bool() if known is None else exclusive.bool() & known.bool()
        ranked = shares if known is None else shares.masked_fill(~known.bool(), -1.0)
        top = ranked.argmax(dim=-1, keepdim=True)
        hit = counted.gather(-1, top).squeeze(-1).to(shares.dtype) * 100
        keep = counted.any(dim=-1) if valid is None else counted.any(dim=-1) & valid.bool()
        return torch.where(keep, hit, torch.full_like(hit, float("nan")))
# --8<-- [end:metric-class]


def test_metric_unit_values() -> None:
    metric = TopShareExclusiveMetric()
    shares = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2], [0.3, 0.3, 0.4]])
    exclusive = torch.tensor([[1, 0, 0], [1, 0, 1], [0, 0, 0], [0, 0, 1]])
    metric.update(shares=shares, exclusive=exclusive)       # hit, miss, no exclusive, hit
    assert metric.compute() == pytest.approx(200 / 3, rel=1e-9)
    metric.update(shares=shares[:2], exclusive=exclusive[:2], valid=torch.tensor([True, False]))
    assert metric.compute() == pytest.approx(300 / 4, rel=1e-9)
    metric.reset()
    assert metric.compute() != metric.compute()  # NaN before any pair
    # an unknown label is left out of the ranking
    metric.update(shares=shares[:1], exclusive=torch.tensor([[1, 1, 0]]), known=torch.tensor([[False, True, True]]))
    assert metric.compute() == pytest.approx(100.0)


def test_metric_registered_is_reported_by_evaluate() -> None:
    batches = amd_batches()
    explainer = Explainer(amd_sequential_net(), attributes=["a0", "a1", "a2", "a3", "a4"])
    explainer.fit(batches, epochs=2, progress=False)
    # --8<-- [start:metric-use]
    with EXPLANATION_METRICS.registered(TopShareExclusiveMetric.name, TopShareExclusiveMetric):
        scores = explainer.evaluate(batches, batches, progress=False)
    assert 0.0 <= scores["top_share_exclusive"] <= 100.0      # next to x_map_e, x_map_c and adre
    # --8<-- [end:metric-use]
    assert {"x_map_e", "x_map_c", "adre", "num_pairs"} <= set(scores)
    # the same number from the matrix API, all at once
    images = _images(batches)
    labels = torch.cat([b["attributes"] for b in batches]).bool()
    matrix = explainer.explain_matrix(images, images)
    exclusive = labels[:, None, :] != labels[None, :, :]
    valid = ~torch.eye(len(images), dtype=torch.bool)
    direct = TopShareExclusiveMetric()
    direct.update(shares=shares_of(matrix.contributions).cpu(), exclusive=exclusive, valid=valid)
    assert scores["top_share_exclusive"] == pytest.approx(direct.compute(), abs=1e-6)
    assert "top_share_exclusive" not in EXPLANATION_METRICS
    assert "top_share_exclusive" not in explainer.evaluate(batches, batches, progress=False)


# ============================================================================ a schema

# --8<-- [start:schema-def]
TOY_SCHEMA = AttributeSchema(
    name="toy_schema",
    names=("hat", "bag", "coat_red", "coat_blue", "boots"),
    labels=("hat", "bag", "red coat", "blue coat", "boots"),
    positive_ratios=(0.2, 0.4, 0.5, 0.5, 0.3),
    groups={"coat": ("coat_red", "coat_blue")},
    one_hot_groups=("coat",),  # every person wears exactly one of the coats
)
# --8<-- [end:schema-def]


def test_schema_registered_by_name_is_used_by_the_explainer(tmp_path: Any) -> None:
    batches = amd_batches()
    # --8<-- [start:schema-register]
    register_schema(TOY_SCHEMA, aliases=["toy"])
    # --8<-- [end:schema-register]
    try:
        # --8<-- [start:schema-use]
        explainer = Explainer(amd_sequential_net(), attributes="toy_schema")  # or "toy", "TOY"
        explainer.fit(batches, epochs=1, progress=False)
        attribution = explainer.explain((_images(batches)[0], _images(batches)[1]))
        assert attribution.attribute_names == TOY_SCHEMA.names
        assert attribution.attribute_labels[2] == "red coat"
        # --8<-- [end:schema-use]
        assert get_schema("TOY") is TOY_SCHEMA and explainer.schema is TOY_SCHEMA
        assert AttributeSchema.from_dict(TOY_SCHEMA.to_dict()) == TOY_SCHEMA
        explainer.save(tmp_path / "interp.pt")
        loaded = Explainer.load(tmp_path / "interp.pt", amd_sequential_net(), attributes="toy")
        assert loaded.schema == TOY_SCHEMA
    finally:
        SCHEMAS.unregister("toy_schema")
        SCHEMAS.unregister("toy")
    assert "toy_schema" not in SCHEMAS


def test_extension_points_are_exported_at_the_top_level() -> None:
    import reidexplain
    from reidexplain import adapters, attributes, interpreter, registry

    assert reidexplain.ADAPTERS is adapters.ADAPTERS and reidexplain.register_adapter is register_adapter
    assert reidexplain.adapt_model is adapt_model and reidexplain.FeatureAdapter is FeatureAdapter
    assert reidexplain.RECIPES is RECIPES and reidexplain.PaperAMD is PaperAMD
    assert reidexplain.AMDPlus is interpreter.AMDPlus and reidexplain.Recipe is interpreter.Recipe
    assert reidexplain.TrainingConfig is interpreter.TrainingConfig and reidexplain.AMDModel is interpreter.AMDModel
    assert reidexplain.BASELINES is BASELINES and reidexplain.SCHEMAS is SCHEMAS
    assert reidexplain.register_schema is attributes.register_schema
    assert reidexplain.Registry is registry.Registry
    for name in ("ADAPTERS", "RECIPES", "BASELINES", "SCHEMAS", "MatrixExplanation", "ImageFolderCSV", "adapters"):
        assert name in reidexplain.__all__, name
