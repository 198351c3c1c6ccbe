"""Feature adapters: every family, numerical verification, errors, and the user's model untouched."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch.nn.functional as F  # noqa: E402
from helpers import (  # noqa: E402
    AMDCustomNet,
    AMDFlatNet,
    AMDNanNet,
    AMDTimmToy,
    AMDTupleNet,
    amd_sequential_net,
)

from reidexplain.adapters import ADAPTERS, adapt_model, feature_layers, find_feature_layer  # noqa: E402

PROBE = torch.rand(3, 3, 32, 16, generator=torch.Generator().manual_seed(0))


def _tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    net = torchvision.models.ResNet(torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=10,
                                    width_per_group=64)
    return net


@pytest.mark.parametrize(
    ("factory", "size", "kind", "layer"),
    [
        (amd_sequential_net, (32, 16), "fx", "5"),
        (AMDTimmToy, (32, 16), "forward_features", "forward_features"),
        (AMDCustomNet, (32, 16), "fx", "block"),
        (_tiny_resnet, (64, 64), "fx", "layer4"),
        # layer4 of a ResNet is 1 x 1 on 32 x 16 images: the last image-grid map is layer3.
        (_tiny_resnet, (32, 16), "fx", "layer3"),
    ],
)
def test_auto_split_reproduces_the_model(factory, size: tuple[int, int], kind: str, layer: str) -> None:
    model = factory().eval()
    gen = torch.Generator().manual_seed(1)
    split = adapt_model(model, torch.rand(2, 3, *size, generator=gen))
    assert (split.kind, split.layer) == (kind, layer)
    x = torch.rand(4, 3, *size, generator=gen)
    feats, emb = split.embed(x)
    with torch.no_grad():
        expected = model(x)
    torch.testing.assert_close(emb, expected, rtol=1e-4, atol=1e-5)
    assert feats.shape[1:] == split.grid_shape
    # The head on unmasked features (maps of ones) gives the embedding M times over.
    ones = torch.ones(4, 3, *feats.shape[-2:])
    comps = split.masked_embeddings(x, feats, ones)
    assert comps.shape == (4, 3, emb.shape[1])
    for k in range(3):
        torch.testing.assert_close(comps[:, k], emb, rtol=1e-4, atol=1e-5)


class Untraceable(nn.Module):
    """Control flow on a tensor's value: torch.fx cannot trace it, so the hook family takes it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, stride=2)
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)
        if float(f.detach().mean()) > 1e9:  # never true, but fx cannot know
            f = f * 0
        return self.fc(f.relu().mean(dim=(2, 3)))


def test_untraceable_model_takes_the_hook_path(caplog: pytest.LogCaptureFixture) -> None:
    model = Untraceable().eval()
    with caplog.at_level("WARNING"):
        split = adapt_model(model, PROBE)
    assert (split.kind, split.layer, split.fast_head) == ("hook", "conv", False)
    assert "re-runs the whole model" in caplog.text
    _, emb = split.embed(PROBE)
    with torch.no_grad():
        torch.testing.assert_close(emb, model(PROBE))


def test_hook_head_gradient_reaches_the_maps() -> None:
    split = adapt_model(Untraceable(), PROBE)
    x = PROBE[:2]
    feats, _ = split.embed(x)
    maps = torch.ones(2, 2, *feats.shape[-2:], requires_grad=True)
    split.masked_embeddings(x, feats, maps).sum().backward()
    assert maps.grad is not None and float(maps.grad.abs().sum()) > 0


def test_named_layers() -> None:
    net = amd_sequential_net()
    assert adapt_model(net, PROBE, feature_layer="2").layer == "2"
    assert adapt_model(net, PROBE, feature_layer=net[5]).kind == "fx"
    timm = AMDTimmToy()
    named = adapt_model(timm, PROBE, feature_layer="body")
    assert (named.kind, named.layer) == ("forward_features", "body")
    # An inner layer of the timm body cannot use forward_head: the graph is cut there instead.
    inner = adapt_model(timm, PROBE, feature_layer="body.1")
    assert inner.kind == "fx" and inner.grid_shape == (8, 16, 8)


def test_black_box_kinds() -> None:
    assert adapt_model(AMDFlatNet(), PROBE).kind == "none"
    none = adapt_model(amd_sequential_net(), PROBE, feature_layer=None)
    assert none.kind == "none" and not none.gray_box
    with pytest.raises(RuntimeError, match="no feature layer"):
        none.make_trunk()


def test_unverifiable_structured_split_falls_back_to_hook(caplog: pytest.LogCaptureFixture) -> None:
    class Lying(AMDTimmToy):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # forward differs from forward_head
            return super().forward(x) * 2.0

    model = Lying().eval()
    with caplog.at_level("WARNING"):
        split = adapt_model(model, PROBE)
    assert split.kind == "fx"  # forward_head does not reproduce forward: the traced graph is cut instead
    _, emb = split.embed(PROBE)
    with torch.no_grad():
        torch.testing.assert_close(emb, model(PROBE))


def test_find_feature_layer_removes_its_hooks() -> None:
    net = amd_sequential_net().eval()
    layer = find_feature_layer(net, PROBE)
    shapes = {f.name: f.shape for f in feature_layers(net, PROBE)}
    assert layer.name == "5" and shapes["4"] == (16, 8, 4)
    assert all(not m._forward_hooks for m in net.modules())


def test_model_untouched() -> None:
    net = amd_sequential_net()
    net.train()
    net[0].weight.requires_grad_(False)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    device_before = net[0].weight.device
    split = adapt_model(net, PROBE)
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
        adapt_model(AMDTupleNet(), PROBE)
    with pytest.raises(ValueError, match="NaN or inf"):
        adapt_model(AMDNanNet(), PROBE)
    with pytest.raises(ValueError, match=r"model output: expected shape \(3, D\)"):
        adapt_model(nn.Conv2d(3, 4, 3), PROBE)
    with pytest.raises(ValueError, match="no module named 'nope'"):
        adapt_model(amd_sequential_net(), PROBE, feature_layer="nope")
    with pytest.raises(ValueError, match="not a submodule"):
        adapt_model(amd_sequential_net(), PROBE, feature_layer=nn.ReLU())
    with pytest.raises(ValueError, match=r"output of '8' must be an image-grid feature map"):
        adapt_model(amd_sequential_net(), PROBE, feature_layer="8")
    with pytest.raises(TypeError, match="feature_layer"):
        adapt_model(amd_sequential_net(), PROBE, feature_layer=3)  # type: ignore[arg-type]

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.conv(x)).mean(dim=(2, 3))

    with pytest.raises(ValueError, match="runs 2 times"):
        adapt_model(Twice(), PROBE, feature_layer="conv")
    assert adapt_model(Twice(), PROBE).kind == "none"  # auto: no usable layer, black box


class BNNeckNet(nn.Module):
    """reid-strong-baseline's layout: a backbone, global pooling, ``view(x.shape[0], -1)``, a BNNeck."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.base = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.bottleneck = nn.BatchNorm1d(16)
        self.bottleneck.running_mean.normal_()
        self.classifier = nn.Linear(16, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        global_feat = self.gap(self.base(x)).view(x.shape[0], -1)  # reads the *image's* batch size
        feat = self.bottleneck(global_feat)
        if self.training:
            return self.classifier(feat), global_feat
        return feat


class MaxPooled(nn.Module):
    """A forward that pools with a function, not a module."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_max_pool2d(self.conv(x).relu(), 1).flatten(1)


class InPlaceNormalised(MaxPooled):
    """fast-reid's preprocessing: the input is normalised in place."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x.sub_(0.5).div_(0.25)
        return super().forward(x)


class AttentionNet(nn.Module):
    """Its only 4-D tensors are heads x tokens x head_dim inside a toy self-attention."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3 * 8 * 8, 24)
        self.qkv = nn.Linear(24, 72)
        self.k_norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        tokens = self.embed(F.unfold(x, 8, stride=8).transpose(1, 2))  # (B, N, 24)
        q, k, v = self.qkv(tokens).reshape(b, -1, 3, 4, 6).permute(2, 0, 3, 1, 4)  # (B, heads, N, 6)
        k = self.k_norm(k)
        att = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        return att.mean(dim=(1, 2))


@pytest.mark.parametrize("factory", [BNNeckNet, MaxPooled, InPlaceNormalised])
def test_fast_split_of_common_reid_layouts(factory) -> None:
    model = factory().eval()
    x = torch.rand(4, 3, 32, 16, generator=torch.Generator().manual_seed(2))
    kept = x.clone()
    split = adapt_model(model, PROBE)
    assert split.kind == "fx" and split.fast_head
    feats, emb = split.embed(x)
    torch.testing.assert_close(x, kept)  # the caller's tensor is never changed
    with torch.no_grad():
        expected = model(x.clone())
    torch.testing.assert_close(emb, expected, rtol=1e-4, atol=1e-5)
    # The head runs alone on B*M masked grids (its batch size comes from its own input).
    comps = split.masked_embeddings(x, feats, torch.ones(4, 3, *feats.shape[-2:]))
    torch.testing.assert_close(comps[:, 2], expected, rtol=1e-4, atol=1e-5)
    trunk = split.make_trunk().eval()
    torch.testing.assert_close(trunk(x), feats, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x, kept)


def test_attention_internals_are_never_a_feature_layer() -> None:
    model = AttentionNet().eval()
    probe = torch.rand(2, 3, 32, 16)
    assert feature_layers(model, probe) == []
    assert adapt_model(model, probe).kind == "none"


def test_the_layer_choice_is_described() -> None:
    split = adapt_model(BNNeckNet().eval(), PROBE)
    text = split.describe()
    assert "'base'" in text and "feature_layer=" in text and "(16, 8, 4)" in text


def test_a_new_family_is_one_registered_class() -> None:
    from reidexplain.adapters import FeatureAdapter

    class Doubling(FeatureAdapter):
        kind = "doubling_test_family"

        @classmethod
        def build(cls, target, probe, layer, reference):
            if not isinstance(target, MaxPooled):
                return None
            return cls(target, "conv", (6, 16, 8), int(reference.shape[1]), "test family")

        def _features(self, images):
            return self.target.conv(images).relu()

        def _head(self, features, images):
            return F.adaptive_max_pool2d(features, 1).flatten(1)

        def _trainable_trunk(self):
            return self.target.conv

    with ADAPTERS.registered(Doubling.kind, Doubling):
        ADAPTERS.move_to_front(Doubling.kind)
        assert adapt_model(MaxPooled().eval(), PROBE).kind == "doubling_test_family"
    assert Doubling.kind not in ADAPTERS
    assert adapt_model(MaxPooled().eval(), PROBE).kind == "fx"


class TupleAndDict(nn.Module):
    """SOLIDER returns ``(feat, featmaps)``; fast-reid a dict."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.as_dict = as_dict
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU())
        self.neck = nn.BatchNorm1d(8)

    def forward(self, x: torch.Tensor):
        maps = self.backbone(x)
        feat = self.neck(maps.mean(dim=(2, 3)))
        return {"features": feat, "maps": maps} if self.as_dict else (feat, maps)


@pytest.mark.parametrize(("as_dict", "output"), [(False, 0), (True, "features"),
                                                  (True, lambda out: out["features"])])
def test_output_selection_keeps_the_fast_path(as_dict: bool, output, tmp_path: Path) -> None:
    from helpers import amd_batches

    from reidexplain import Explainer

    model = TupleAndDict(as_dict).eval()
    with pytest.raises(TypeError, match="output="):
        adapt_model(model, PROBE)
    split = adapt_model(model, PROBE, output=output)
    assert split.kind == "fx" and split.layer == "model.backbone"
    with torch.no_grad():
        expected = model(PROBE)
    expected = expected["features"] if as_dict else expected[0]
    torch.testing.assert_close(split.embed(PROBE)[1], expected, rtol=1e-4, atol=1e-5)
    named = adapt_model(model, PROBE, feature_layer="backbone.0", output=output)
    assert named.layer == "model.backbone.0"
    explainer = Explainer(model, output=output).fit(amd_batches(), epochs=1, progress=False)
    pair = (PROBE[:1], PROBE[1:2])
    before = explainer.explain(pair).contributions
    explainer.save(tmp_path / "selected.pt")
    again = Explainer.load(tmp_path / "selected.pt", model, output=output if callable(output) else None)
    torch.testing.assert_close(again.explain(pair).contributions, before)
    if callable(output):
        with pytest.raises(ValueError, match="callable output selection"):
            Explainer.load(tmp_path / "selected.pt", model)
