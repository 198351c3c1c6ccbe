"""Splitting targets: every kind, numerical verification, errors, and the user's model untouched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers import (  # noqa: E402
    AMDCustomNet,
    AMDFlatNet,
    AMDNanNet,
    AMDTimmToy,
    AMDTupleNet,
    amd_sequential_net,
)

from reidexplain.interpreter.split import find_feature_layer, split_model  # noqa: E402

PROBE = torch.rand(3, 3, 32, 16, generator=torch.Generator().manual_seed(0))


def _tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    net = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=10,
                                    width_per_group=64)
    return net


@pytest.mark.parametrize(
    ("factory", "size", "kind", "layer"),
    [
        (amd_sequential_net, (32, 16), "sequential", "5"),
        (AMDTimmToy, (32, 16), "forward_features", "forward_features"),
        (AMDCustomNet, (32, 16), "hook", "block"),
        (_tiny_resnet, (64, 64), "torchvision_resnet", "layer4"),
        # layer4 of a ResNet is 1 x 1 on 32 x 16 images: the last spatial map is layer3 (hook split).
        (_tiny_resnet, (32, 16), "hook", "layer3"),
    ],
)
def test_auto_split_reproduces_the_model(factory, size: tuple[int, int], kind: str, layer: str) -> None:
    model = factory().eval()
    gen = torch.Generator().manual_seed(1)
    split = split_model(model, torch.rand(2, 3, *size, generator=gen))
    assert (split.kind, split.feature_layer) == (kind, layer)
    x = torch.rand(4, 3, *size, generator=gen)
    feats, emb = split.embed(x)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(emb, expected, rtol=1e-4, atol=1e-5)
    assert feats.shape[1:] == split.feature_shape
    # The head on unmasked features (maps of ones) gives the embedding M times over.
    ones = torch.ones(4, 3, *feats.shape[-2:])
    comps = split.masked_embeddings(x, feats, ones)
    assert comps.shape == (4, 3, emb.shape[1])
    for k in range(3):
        torch.testing.assert_close(comps[:, k], emb, rtol=1e-4, atol=1e-5)


def test_hook_head_gradient_reaches_the_maps() -> None:
    split = split_model(AMDCustomNet(), PROBE)
    x = PROBE[:2]
    feats, _ = split.embed(x)
    maps = torch.ones(2, 2, *feats.shape[-2:], requires_grad=True)
    split.masked_embeddings(x, feats, maps).sum().backward()
    assert maps.grad is not None and float(maps.grad.abs().sum()) > 0


def test_named_layers() -> None:
    net = amd_sequential_net()
    assert split_model(net, PROBE, feature_layer="2").feature_layer == "2"
    assert split_model(net, PROBE, feature_layer=net[5]).kind == "sequential"
    timm = AMDTimmToy()
    named = split_model(timm, PROBE, feature_layer="body")
    assert (named.kind, named.feature_layer) == ("forward_features", "body")
    # An inner layer of the timm body cannot use forward_head: hook split.
    inner = split_model(timm, PROBE, feature_layer="body.1")
    assert inner.kind == "hook" and inner.feature_shape == (8, 16, 8)


def test_black_box_kinds() -> None:
    assert split_model(AMDFlatNet(), PROBE).kind == "none"
    none = split_model(amd_sequential_net(), PROBE, feature_layer=None)
    assert none.kind == "none" and not none.gray_box
    with pytest.raises(RuntimeError, match="no feature layer"):
        none.make_trunk()


def test_unverifiable_structured_split_falls_back_to_hook(caplog: pytest.LogCaptureFixture) -> None:
    class Lying(AMDTimmToy):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # forward differs from forward_head
            return super().forward(x) * 2.0

    model = Lying().eval()
    with caplog.at_level("WARNING"):
        split = split_model(model, PROBE)
    assert split.kind == "hook"
    assert "re-runs the whole model" in caplog.text
    _, emb = split.embed(PROBE)
    with torch.no_grad():
        torch.testing.assert_close(emb, model(PROBE))


def test_find_feature_layer_removes_its_hooks() -> None:
    net = amd_sequential_net().eval()
    name, shapes = find_feature_layer(net, PROBE)
    assert name == "5" and shapes["4"] == (3, 16, 8, 4)
    assert all(not m._forward_hooks for m in net.modules())


def test_model_untouched() -> None:
    net = amd_sequential_net()
    net.train()
    net[0].weight.requires_grad_(False)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    device_before = net[0].weight.device
    split = split_model(net, PROBE)
    interp_trunk = split.make_trunk()
    interp_trunk(PROBE).sum().backward()
    assert net.training and all(m.training for m in net.modules())
    assert net[0].weight.requires_grad is False and net[3].weight.requires_grad is True
    assert all(torch.equal(state[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert net[0].weight.device == device_before
    # The copy is frozen and in eval mode; the interpreter's trunk is trainable.
    assert not split.target.training and not any(p.requires_grad for p in split.target.parameters())
    assert all(p.requires_grad for p in interp_trunk.parameters())


def test_errors() -> None:
    with pytest.raises(TypeError, match=r"model output.*tuple.*Select|model output.*tuple"):
        split_model(AMDTupleNet(), PROBE)
    with pytest.raises(ValueError, match="NaN or inf"):
        split_model(AMDNanNet(), PROBE)
    with pytest.raises(ValueError, match=r"model output: expected shape \(3, D\)"):
        split_model(nn.Conv2d(3, 4, 3), PROBE)
    with pytest.raises(ValueError, match="no module named 'nope'"):
        split_model(amd_sequential_net(), PROBE, feature_layer="nope")
    with pytest.raises(ValueError, match="not a submodule"):
        split_model(amd_sequential_net(), PROBE, feature_layer=nn.ReLU())
    with pytest.raises(ValueError, match=r"output of '8' must be a spatial map"):
        split_model(amd_sequential_net(), PROBE, feature_layer="8")
    with pytest.raises(TypeError, match="feature_layer"):
        split_model(amd_sequential_net(), PROBE, feature_layer=3)  # type: ignore[arg-type]

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(x)).mean(dim=(2, 3))

    with pytest.raises(ValueError, match="runs 2 times"):
        split_model(Twice(), PROBE, feature_layer="conv")
    assert split_model(Twice(), PROBE).kind == "none"  # auto: no usable layer, black box
