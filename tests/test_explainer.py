"""Explainer: the public API end to end on toy models, the sacred-model guarantee, errors, save/load."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import (  # noqa: E402
    AMDCustomNet,
    AMDNanNet,
    AMDTimmToy,
    AMDTupleNet,
    amd_batches,
    amd_sequential_net,
)

from reidexplain.distance import pair_distance  # noqa: E402
from reidexplain.explainer import Explainer, NotFittedError  # noqa: E402
from reidexplain.metrics.explanation import adre  # noqa: E402

M = 5


@pytest.fixture(scope="module")
def fitted() -> Explainer:
    torch.manual_seed(0)
    return Explainer(amd_sequential_net(), recipe="amd").fit(amd_batches(), epochs=4, lr=1e-3, progress=False)


def _pair(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    b = amd_batches()
    return b[0]["image"][:n], b[1]["image"][:n]


def test_explain_fills_every_field(fitted: Explainer) -> None:
    a, b = _pair()
    att = fitted.explain((a, b))
    assert att.method == "amd" and len(att) == 3
    assert att.attribute_names == tuple(f"attr_{i}" for i in range(M))
    assert att.contributions.shape == (3, M) and bool((att.contributions >= 0).all())
    torch.testing.assert_close(att.contributions.sum(1), att.reconstructed)
    torch.testing.assert_close(att.shares.sum(1), torch.ones(3))
    for maps, low in zip(att.maps, att.extras["maps_lowres"], strict=True):
        assert maps.shape == (3, M, 32, 16) and bool((maps >= 0).all())
        assert low.shape == (3, M, 8, 4)
    torch.testing.assert_close(att.images[0], a)
    model = fitted.model.eval()
    with torch.no_grad():
        expected = pair_distance(model(a), model(b))
    torch.testing.assert_close(att.distance, expected, rtol=1e-4, atol=1e-6)
    # Maps are per image: explaining (a, a') gives a's maps whatever the partner.
    other = fitted.explain((a, a.flip(0)))
    torch.testing.assert_close(other.maps[0], att.maps[0])
    single = fitted.explain((a[0], b[0]))
    assert len(single) == 1
    torch.testing.assert_close(single.contributions[0], att.contributions[0], rtol=1e-4, atol=1e-6)


def test_matrix_api_matches_explain(fitted: Explainer) -> None:
    a, b = _pair(4)
    mat = fitted.explain_matrix(a, b)
    assert mat.contributions.shape == (4, 4, M)
    att = fitted.explain((a, b))
    diag = torch.arange(4)
    torch.testing.assert_close(mat.contributions[diag, diag], att.contributions, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(mat.distance[diag, diag], att.distance, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(mat.reconstructed, mat.contributions.sum(-1))
    torch.testing.assert_close(fitted.contributions_matrix(a, b), mat.contributions)


def test_evaluate(fitted: Explainer) -> None:
    data = amd_batches()
    scores = fitted.evaluate(data, data, progress=False)
    for key in ("x_map_e", "x_map_c", "adre", "rank1_target", "rank1_interpreter", "map_target",
                "map_interpreter"):
        assert 0.0 <= scores[key] <= 100.0, key
    assert scores["num_pairs"] == 16 * 15  # an image with itself is left out
    images = torch.cat([b["image"] for b in data])
    mat = fitted.explain_matrix(images, images)
    off = ~torch.eye(16, dtype=torch.bool)
    assert scores["adre"] == pytest.approx(float(adre(mat.distance, mat.reconstructed, off)), rel=1e-2)
    # Without pids there are no retrieval scores.
    pairs_only = fitted.evaluate(amd_batches(fmt="pair"), amd_batches(fmt="pair"), progress=False)
    assert "rank1_target" not in pairs_only
    assert pairs_only["x_map_e"] == pytest.approx(scores["x_map_e"], rel=1e-5)


@pytest.mark.parametrize(("width", "name"), [(26, "market1501"), (23, "dukemtmc"), (18, "shared"), (3, "generic3")])
def test_schema_inferred_from_width(width: int, name: str) -> None:
    data = amd_batches(num_attributes=width, num_ids=2, per_id=2, batch_size=4)
    from reidexplain.attributes import SchemaInferenceWarning

    if name.startswith("generic"):  # generic names claim nothing: no warning
        explainer = Explainer(amd_sequential_net()).fit(data, epochs=1, progress=False)
    else:
        with pytest.warns(SchemaInferenceWarning, match=f"'{name}'"):
            explainer = Explainer(amd_sequential_net()).fit(data, epochs=1, progress=False)
    assert explainer.schema.name == name and len(explainer.attribute_names) == width


@pytest.mark.parametrize("fmt", ["pair", "triple"])
def test_tuple_loaders(fmt: str) -> None:
    explainer = Explainer(AMDTimmToy(), metric="cosine", recipe="amd").fit(amd_batches(fmt=fmt), epochs=1, progress=False)
    att = explainer.explain(_pair(2))
    torch.testing.assert_close(att.contributions.sum(1), att.reconstructed)
    assert bool((att.distance <= 2.0).all())


@pytest.mark.parametrize(("transform", "message"), [(lambda y: 2 * y - 1, "-1/[+]1"), (lambda y: y + 1, "1/2")])
def test_label_codings_are_converted_with_a_warning(transform, message: str) -> None:
    data = [(x, transform(y)) for x, y in amd_batches(fmt="pair")]
    reference = Explainer(amd_sequential_net()).fit(amd_batches(fmt="pair"), epochs=2, progress=False)
    with pytest.warns(UserWarning, match=message) as caught:
        converted = Explainer(amd_sequential_net()).fit(data, epochs=2, progress=False)
    # Once for the probe batch and once per epoch at most, not once per batch.
    assert sum("converting" in str(w.message) for w in caught) <= 3
    assert converted.history[-1]["loss"] == pytest.approx(reference.history[-1]["loss"])


def test_default_fit_works() -> None:
    data = amd_batches(num_ids=2, per_id=4, batch_size=8)
    explainer = Explainer(amd_sequential_net()).fit(data, progress=False)
    assert explainer.is_fitted and explainer.history[-1]["steps"] == 60  # 600 target steps, 60 epochs at most


def test_shared_trunk(tmp_path: Path) -> None:
    explainer = Explainer(AMDTimmToy(), trunk="shared", recipe="amd").fit(amd_batches(), epochs=2, lr=1e-3, progress=False)
    assert explainer.network.trunk is None
    att = explainer.explain(_pair(2))
    torch.testing.assert_close(att.contributions.sum(1), att.reconstructed)
    explainer.save(tmp_path / "shared.pt")
    loaded = Explainer.load(tmp_path / "shared.pt", explainer.model)
    assert loaded.recipe.trunk == "shared"
    torch.testing.assert_close(loaded.explain(_pair(2)).contributions, att.contributions)
    with pytest.raises(ValueError, match="trunk: expected one of"):
        Explainer(AMDTimmToy(), trunk="borrowed")


def test_black_box_mode() -> None:
    explainer = Explainer(amd_sequential_net(), feature_layer=None, recipe="amd").fit(amd_batches(), epochs=2, progress=False)
    assert explainer.mode == "black-box" and explainer.recipe.distillation_weight_for(gray_box=False) == 50.0
    att = explainer.explain(_pair(2))
    assert att.maps[0].shape == (2, M, 32, 16)
    torch.testing.assert_close(att.contributions.sum(1), att.reconstructed)


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "device": {n: p.device for n, p in model.named_parameters()},
    }


def _assert_untouched(model: nn.Module, snap: dict) -> None:
    assert all(torch.equal(snap["state"][k], v) for k, v in model.state_dict().items())
    assert {n: m.training for n, m in model.named_modules()} == snap["training"]
    assert {n: p.requires_grad for n, p in model.named_parameters()} == snap["requires_grad"]
    assert {n: p.device for n, p in model.named_parameters()} == snap["device"]
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


@pytest.mark.parametrize("factory", [amd_sequential_net, AMDTimmToy, AMDCustomNet])
def test_the_users_model_is_sacred(factory, tmp_path: Path) -> None:
    model = factory()
    model.train()  # the user left it in train mode
    first = next(iter(model.parameters()))
    first.requires_grad_(False)
    snap = _snapshot(model)
    data = amd_batches()
    explainer = Explainer(model).fit(data, epochs=2, lr=1e-3, progress=False)
    explainer.explain(_pair(2))
    explainer.explain_matrix(*_pair(2))
    explainer.evaluate(data, data, progress=False)
    explainer.save(tmp_path / "amd.pt")
    Explainer.load(tmp_path / "amd.pt", model).explain(_pair(1))
    _assert_untouched(model, snap)


def test_save_load_roundtrip(fitted: Explainer, tmp_path: Path) -> None:
    path = tmp_path / "interp.pt"
    fitted.save(path)
    loaded = Explainer.load(path, fitted.model)
    a = fitted.explain(_pair())
    b = loaded.explain(_pair())
    torch.testing.assert_close(a.contributions, b.contributions)
    torch.testing.assert_close(a.maps[0], b.maps[0])
    assert loaded.history == fitted.history and loaded.mode == "gray-box"
    assert loaded.schema.names == fitted.schema.names
    assert loaded.config == fitted.config and loaded.recipe == fitted.recipe
    assert loaded.schema == fitted.schema
    raw = torch.load(path, weights_only=True)
    assert raw["format_version"] == 2 and raw["adapter"]["kind"] == "fx" and raw["metric"] == "euclidean"


def test_load_checks_compatibility(fitted: Explainer, tmp_path: Path) -> None:
    path = tmp_path / "interp.pt"
    fitted.save(path)
    with pytest.raises(ValueError, match="schema 'generic5'.*got 'market1501'"):
        Explainer.load(path, fitted.model, attributes="market1501")
    with pytest.raises(ValueError, match="not the architecture"):
        Explainer.load(path, AMDTimmToy())
    with pytest.raises(ValueError, match="not the architecture"):
        Explainer.load(path, amd_sequential_net(dim=7))
    other_weights = amd_sequential_net(seed=5)
    with pytest.warns(UserWarning, match="weights differ"):
        Explainer.load(path, other_weights)
    with pytest.raises(FileNotFoundError, match="no such file"):
        Explainer.load(tmp_path / "missing.pt", fitted.model)
    junk = tmp_path / "junk.pt"
    torch.save({"hello": 1}, junk)
    with pytest.raises(ValueError, match="not an interpreter file"):
        Explainer.load(junk, fitted.model)


def test_errors(fitted: Explainer) -> None:
    data = amd_batches()
    with pytest.raises(NotFittedError, match=r"call fit\(loader\) first"):
        Explainer(amd_sequential_net()).explain(_pair())
    assert issubclass(NotFittedError, RuntimeError)
    with pytest.raises(ValueError, match="expected 26 attributes.*got 5"):
        Explainer(amd_sequential_net(), attributes="market1501").fit(data, epochs=1, progress=False)
    bad = [(x, y * 3) for x, y in amd_batches(fmt="pair")]
    with pytest.raises(ValueError, match="labels must be binary"):
        Explainer(amd_sequential_net()).fit(bad, epochs=1, progress=False)
    with pytest.raises(ValueError, match="yielded no batches"):
        Explainer(amd_sequential_net()).fit([], progress=False)
    with pytest.raises(TypeError, match="model output.*tuple"):
        Explainer(AMDTupleNet()).fit(data, epochs=1, progress=False)
    with pytest.raises(ValueError, match="NaN or inf"):
        Explainer(AMDNanNet()).fit(data, epochs=1, progress=False)
    with pytest.raises(TypeError, match="unknown options"):
        Explainer(amd_sequential_net()).fit(data, epochs=1, progress=False, warp_speed=9)
    with pytest.raises(TypeError, match="loader: expected dict batches"):
        Explainer(amd_sequential_net()).fit([torch.rand(2, 3, 32, 16)], progress=False)
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        Explainer(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metric"):
        Explainer(amd_sequential_net(), metric="manhattan")
    with pytest.raises(TypeError, match="feature_layer"):
        Explainer(amd_sequential_net(), feature_layer=3)  # type: ignore[arg-type]
    a, b = _pair()
    with pytest.raises(ValueError, match=r"pair\[0\].*\(B,3,H,W\)"):
        fitted.explain((a[:, :1], b[:, :1]))
    with pytest.raises(ValueError, match="same shape"):
        fitted.explain((a, b[:, :, :16]))
    with pytest.raises(TypeError, match="pair"):
        fitted.explain(a)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="expected 5 attributes"):
        fitted.evaluate(amd_batches(num_attributes=4), data, progress=False)
