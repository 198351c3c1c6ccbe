"""ReIDNet and the model registry: the forward_features / forward_head contract the explainer uses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reidexplain.registry import Registry, UnknownNameError
from reidexplain.zoo import (
    MODELS,
    GeM,
    ReIDNet,
    create_model,
    is_model,
    list_models,
    register_model,
)


def test_registry_lists_and_filters():
    names = list_models()
    assert {"reidnet_small", "reidnet_resnet18", "reidnet_resnet34", "reidnet_resnet50"} <= set(names)
    assert names == sorted(names)
    assert list_models("reidnet_resnet*") == ["reidnet_resnet18", "reidnet_resnet34", "reidnet_resnet50"]
    assert list_models("nothing*") == []
    assert is_model("reidnet_small") and not is_model("resnet18")


def test_unknown_model_error_lists_known_names():
    with pytest.raises(ValueError, match=r"unknown model 'resnet9'.*reidnet_small"):
        create_model("resnet9")
    with pytest.raises(ValueError, match="num_classes"):
        create_model("reidnet_small", num_classes=-1)


def test_register_model_rejects_a_different_constructor_under_a_taken_name():
    def reidnet_small(num_classes: int = 0) -> nn.Module:
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(reidnet_small)
    with pytest.raises(TypeError, match="callable"):
        register_model(3)


def test_models_registry_is_what_the_functions_read():
    assert isinstance(MODELS, Registry) and MODELS.names() == list_models()
    with pytest.raises(UnknownNameError, match="unknown model 'resnet9'"):
        create_model("resnet9")

    def toy_linear(num_classes: int = 0, width: int = 3) -> nn.Module:
        return nn.Linear(width, max(num_classes, 1))

    with MODELS.registered("toy_linear", toy_linear):
        assert is_model("toy_linear") and "toy_linear" in list_models("toy_*")
        assert create_model("toy_linear", num_classes=2, width=4).weight.shape == (2, 4)
    assert not is_model("toy_linear")


def test_register_model_decorator_registers_under_the_function_name():
    @register_model
    def toy_decorated(num_classes: int = 0) -> nn.Module:
        return nn.Identity()

    try:
        assert MODELS.get("toy_decorated") is toy_decorated and is_model("toy_decorated")
        assert register_model(toy_decorated) is toy_decorated  # the same function again is harmless
    finally:
        MODELS.unregister("toy_decorated")
    assert not is_model("toy_decorated")


def test_small_contract_shapes_and_eval_forward_is_head_of_features():
    torch.manual_seed(0)
    model = create_model("reidnet_small", num_classes=7).eval()
    x = torch.rand(3, 3, 128, 64)
    feats = model.forward_features(x)
    assert feats.shape == (3, 128, 16, 8)
    assert model.feature_stride == 8 and model.num_features == 128 and model.embedding_dim == 128
    emb = model(x)
    torch.testing.assert_close(emb, model.forward_head(feats))
    assert emb.shape == (3, 128)


def test_train_mode_returns_prebnneck_features_and_logits():
    torch.manual_seed(0)
    model = create_model("reidnet_small", num_classes=5).train()
    x = torch.rand(4, 3, 64, 32)
    features, logits = model(x)
    assert features.shape == (4, 128) and logits.shape == (4, 5)
    torch.testing.assert_close(features, model.pool_features(model.forward_features(x)))
    # Without a classifier the logits are an empty (B,0) tensor.
    model.reset_classifier(0)
    assert model(x)[1].shape == (4, 0)


def test_head_is_per_sample_and_accepts_masked_batches():
    # The interpreter feeds (B*M, C, h, w) masked maps through the head: in eval mode each row must
    # only depend on its own map.
    torch.manual_seed(0)
    model = create_model("reidnet_small").eval()
    feats = torch.rand(6, 128, 16, 8)
    together = model.forward_head(feats)
    alone = torch.cat([model.forward_head(feats[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(together, alone)
    masks = torch.rand(6, 1, 16, 8)
    assert torch.isfinite(model.forward_head(feats * masks)).all()


def test_projection_and_bnneck_bias_frozen():
    model = create_model("reidnet_small", embedding_dim=32, num_classes=3)
    assert model.embedding_dim == 32 and isinstance(model.projection, nn.Linear)
    assert model.eval()(torch.rand(2, 3, 64, 32)).shape == (2, 32)
    assert not model.bnneck.bias.requires_grad
    assert torch.count_nonzero(model.bnneck.bias) == 0
    assert model.classifier.weight.shape == (3, 32) and model.classifier.bias is None


@pytest.mark.parametrize(
    ("name", "channels", "map_shape"),
    [("reidnet_resnet18", 512, (8, 4)), ("reidnet_resnet34", 512, (8, 4)), ("reidnet_resnet50", 2048, (8, 4))],
)
def test_resnet_bodies_random_init_no_download(monkeypatch, name, channels, map_shape):
    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    torch.manual_seed(0)
    model = create_model(name).eval()
    feats = model.forward_features(torch.rand(1, 3, 128, 64))
    assert feats.shape == (1, channels, *map_shape)  # last stride 1: output stride 16
    assert model(torch.rand(2, 3, 128, 64)).shape == (2, channels)
    assert not any(isinstance(m, (nn.AdaptiveAvgPool2d, nn.Linear)) for m in model.backbone.modules())


def test_last_stride_two_halves_the_map():
    model = ReIDNet("resnet18", last_stride=2).eval()
    assert model.forward_features(torch.rand(1, 3, 128, 64)).shape == (1, 512, 4, 2)
    assert model.feature_stride == 32


def test_gem_limits_and_learnable_p():
    x = torch.rand(2, 3, 4, 5) + 0.01
    torch.testing.assert_close(GeM(p=1.0)(x), x.mean(dim=(2, 3)))
    big = GeM(p=60.0)(x)
    assert torch.allclose(big, x.amax(dim=(2, 3)), rtol=0.05)
    pool = GeM(p=3.0)
    pool(x).sum().backward()
    assert pool.p.grad is not None and pool.p.grad.abs() > 0
    # Zeros (ReLU outputs) stay finite in value and gradient.
    z = torch.zeros(1, 2, 3, 3, requires_grad=True)
    pool(z).sum().backward()
    assert torch.isfinite(z.grad).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backbone": "vgg"}, "backbone"),
        ({"num_classes": -2}, "num_classes"),
        ({"embedding_dim": 0}, "embedding_dim"),
        ({"last_stride": 3}, "last_stride"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ReIDNet(**kwargs)


def test_forward_head_rejects_wrong_feature_shape():
    model = create_model("reidnet_small").eval()
    with pytest.raises(ValueError, match=r"\(B,128,h,w\).*\(2, 64, 8, 4\)"):
        model.forward_head(torch.rand(2, 64, 8, 4))
    with pytest.raises(ValueError, match="`p` must be > 0"):
        GeM(p=0.0)
