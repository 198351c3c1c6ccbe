"""Token models: the patch-token grid at the input of the last block, class tokens kept unmasked."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reidexplain.adapters import TokenLayout, adapt_model, feature_layers

timm = pytest.importorskip("timm")

SIZE = (32, 16)


def _probe(n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


def _timm_vit(**kwargs) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(img_size=SIZE, patch_size=8, embed_dim=32, depth=3, num_heads=2, num_classes=0,
                             **kwargs).eval()


def _timm_deit() -> nn.Module:
    from timm.models.deit import VisionTransformerDistilled

    torch.manual_seed(0)
    return VisionTransformerDistilled(img_size=SIZE, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                      num_classes=0).eval()


class _SeqFirstBlock(nn.Module):
    """A CLIP-style residual attention block on sequence-first tokens ``(T,B,C)``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, 2)
        self.mlp = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class CLIPStyleViT(nn.Module):
    """CLIP's visual transformer layout: conv patches, class token, ln_pre, sequence-first blocks,
    ln_post on the class token and a projection."""

    def __init__(self, width: int = 24, layers: int = 2, out: int = 12) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, width, 8, stride=8, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * 0.1)
        self.positional_embedding = nn.Parameter(torch.randn(1 + 4 * 2, width) * 0.1)
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.resblocks = nn.Sequential(*[_SeqFirstBlock(width) for _ in range(layers)])
        self.proj = nn.Parameter(torch.randn(width, out) * width ** -0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)  # (B, N, C)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding)
        x = self.resblocks(x.permute(1, 0, 2)).permute(1, 0, 2)  # blocks work sequence-first
        return self.ln_post(x[:, 0]) @ self.proj


class TransReIDStyleViT(nn.Module):
    """TransReID's layout: overlapping patches (stride < kernel), a class token, and a side-information
    embedding of the camera added to every token; BNNeck on the class token."""

    def __init__(self, width: int = 24, cameras: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, width, 8, stride=6, padding=1)  # overlapping 8x8 patches, stride 6
        self.cls_token = nn.Parameter(torch.randn(1, 1, width) * 0.1)
        self.sie_embed = nn.Parameter(torch.randn(cameras, 1, width) * 0.1)
        grid = self.patch(torch.zeros(1, 3, *SIZE)).shape[-2:]
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + grid[0] * grid[1], width) * 0.1)
        self.blocks = nn.ModuleList([_BatchFirstBlock(width) for _ in range(2)])
        self.norm = nn.LayerNorm(width)
        self.bottleneck = nn.BatchNorm1d(width)
        self.bottleneck.running_mean.normal_()

    def forward(self, x: torch.Tensor, cam_label: int | torch.Tensor = 1) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed + 1.5 * self.sie_embed[cam_label]
        for block in self.blocks:
            x = block(x)
        return self.bottleneck(self.norm(x)[:, 0])


class _BatchFirstBlock(_SeqFirstBlock):
    def __init__(self, width: int) -> None:
        super().__init__(width)
        self.attn = nn.MultiheadAttention(width, 2, batch_first=True)


@pytest.mark.parametrize(("factory", "prefix", "layer"), [
    (_timm_vit, 1, "blocks.2"),
    (lambda: _timm_vit(reg_tokens=2), 3, "blocks.2"),
    (_timm_deit, 2, "blocks.1"),
    (CLIPStyleViT, 1, "resblocks.1"),
    (TransReIDStyleViT, 1, "blocks.1"),
])
def test_token_models_are_split_at_the_last_block(factory, prefix: int, layer: str) -> None:
    model = factory().eval()
    adapter = adapt_model(model, _probe())
    assert (adapter.kind, adapter.layer, adapter.fast_head) == ("tokens", layer, True)
    assert adapter.layout.prefix == prefix
    x = _probe(3, seed=1)
    kept = x.clone()
    feats, emb = adapter.embed(x)
    with torch.no_grad():
        expected = model(x.clone())
    torch.testing.assert_close(emb, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x, kept)
    grid = adapter.to_grid(feats)
    assert grid.shape[1:] == adapter.grid_shape
    # Maps of ones leave every token as it was: each component is the embedding.
    comps = adapter.masked_embeddings(x, feats, torch.ones(3, 2, *grid.shape[-2:]))
    torch.testing.assert_close(comps[:, 1], expected, rtol=1e-4, atol=1e-5)
    # Masking patches changes the embedding (the mask reaches the pooled output) ...
    half = torch.ones(3, 1, *grid.shape[-2:])
    half[..., : grid.shape[-2] // 2, :] = 0
    assert not torch.allclose(adapter.masked_embeddings(x, feats, half)[:, 0], expected, atol=1e-4)
    # ... and the interpreter's trunk yields the grid.
    torch.testing.assert_close(adapter.make_trunk().eval()(x), grid, rtol=1e-4, atol=1e-5)


def test_the_grid_of_a_vit_is_its_patch_grid_not_attention() -> None:
    model = _timm_vit()
    grids = {layer.name for layer in feature_layers(model, _probe())}
    assert grids == {"patch_embed.proj"}  # the only image grid; q/k/v tensors are not grids
    assert adapt_model(model, _probe()).grid_shape == (32, 4, 2)


def test_layout_round_trip() -> None:
    tokens = torch.arange(2 * 7 * 3, dtype=torch.float32).reshape(2, 7, 3)
    layout = TokenLayout(prefix=1, grid=(3, 2), sequence_first=False)
    grid = layout.to_grid(tokens)
    assert grid.shape == (2, 3, 3, 2)
    torch.testing.assert_close(layout.with_grid(tokens, grid), tokens)
    doubled = layout.with_grid(tokens, grid.repeat_interleave(2, dim=0), repeats=2)
    torch.testing.assert_close(doubled[1], tokens[0])
    seq = TokenLayout(prefix=1, grid=(3, 2), sequence_first=True)
    torch.testing.assert_close(seq.with_grid(tokens.transpose(0, 1), grid), tokens.transpose(0, 1))


def test_grad_cam_on_a_vit_uses_the_patch_grid() -> None:
    from reidexplain.baselines import GradCAMPair

    model = _timm_vit()
    cam = GradCAMPair(model)
    result = cam.explain((_probe(2, 3), _probe(2, 4)))
    assert cam.layer_name == "blocks.2" and cam.adapter.kind == "tokens"
    assert result.maps[0].shape == (2, 1, *SIZE) and torch.isfinite(result.maps[0]).all()
    assert result.extras["raw"][0].shape[-2:] == (4, 2)


class CameraViT(TransReIDStyleViT):
    """TransReID with its camera ids as a per-image forward argument (its side-information embedding)."""

    def forward(self, x: torch.Tensor, cam_label: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, cam_label)  # required here: no default to trace it at


def test_side_inputs_reach_the_model_per_image(tmp_path) -> None:
    from reidexplain import Explainer

    model = CameraViT().eval()
    cams = torch.tensor([0, 2])
    adapter = adapt_model(model, _probe(), side_inputs={"cam_label": cams})
    assert adapter.kind == "tokens" and adapter.side_names == ("cam_label",)
    x = _probe(3, seed=5)
    side = (torch.tensor([0, 1, 2]),)
    with adapter.bind(side):
        feats, emb = adapter.embed(x)
        ones = adapter.masked_embeddings(x, feats, torch.ones(3, 2, *adapter.grid_shape[1:]))
    with torch.no_grad():
        expected = model(x, cam_label=side[0])
    torch.testing.assert_close(emb, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ones[:, 1], expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="side inputs"):
        adapter.embed(x)  # the cameras are needed for every image
    # End to end: the explainer reads the cameras from the batches and takes them at explain time.
    g = torch.Generator().manual_seed(0)
    batches = [{"image": _probe(8, seed=s), "camid": torch.randint(0, 3, (8,), generator=g),
                "attributes": torch.randint(0, 2, (8, 4), generator=g)} for s in range(2)]
    explainer = Explainer(model, side_inputs={"cam_label": "camid"}).fit(batches, epochs=1, progress=False)
    a, b = _probe(2, seed=7), _probe(2, seed=8)
    kwargs = ({"cam_label": torch.tensor([0, 1])}, {"cam_label": torch.tensor([2, 2])})
    att = explainer.explain((a, b), forward_kwargs=kwargs)
    with torch.no_grad():
        d = (model(a, cam_label=kwargs[0]["cam_label"]) - model(b, cam_label=kwargs[1]["cam_label"])).norm(dim=1)
    torch.testing.assert_close(att.distance, d, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="cam_label"):
        explainer.explain((a, b))
    explainer.save(tmp_path / "cams.pt")
    again = Explainer.load(tmp_path / "cams.pt", model)
    torch.testing.assert_close(again.explain((a, b), forward_kwargs=kwargs).contributions, att.contributions)


def _readout_of(adapter):
    """``(parent, child name, ReadoutBlock)`` of the adapter's head."""
    from reidexplain.adapters._readout import ReadoutBlock

    parent_name, _, child = adapter.layer.rpartition(".")
    parent = adapter.head_graph.get_submodule(parent_name) if parent_name else adapter.head_graph
    block = getattr(parent, child)
    assert isinstance(block, ReadoutBlock)
    return parent, child, block


def _relative_change(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).norm(dim=1) / b.norm(dim=1)).mean())


@pytest.mark.parametrize("factory", [_timm_vit, lambda: _timm_vit(reg_tokens=2, qk_norm=True), _timm_deit,
                                     CLIPStyleViT, TransReIDStyleViT])
def test_class_token_models_mask_normalised_tokens_and_compute_the_read_out_rows_only(factory) -> None:
    from reidexplain.adapters._readout import PatchNorm

    model = factory().eval()
    adapter = adapt_model(model, _probe())
    assert "normalised patch tokens" in adapter.describe() and "prefix only" in adapter.describe()
    assert adapter.config()["tokens"] == "normalised"
    _, _, readout = _readout_of(adapter)
    # The read-out rows are the full block's rows, from the raw prefix and the normalised patches.
    p, dim = adapter.layout.prefix, 0 if adapter.layout.sequence_first else 1
    count = p + adapter.grid_shape[1] * adapter.grid_shape[2]
    tokens = torch.randn(*((count, 3) if dim == 0 else (3, count)), adapter.grid_shape[0],
                         generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = readout.block(tokens)
        rows = readout(PatchNorm(readout.norm1, p, adapter.layout.sequence_first)(tokens))
    torch.testing.assert_close(rows.narrow(dim, 0, p), full.narrow(dim, 0, p), rtol=1e-4, atol=1e-5)
    # A mask of 0.5 reaches the embedding (raw tokens would be renormalised: a change of ~1e-6).
    x = _probe(3, seed=2)
    feats, emb = adapter.embed(x)
    half = adapter.masked_embeddings(x, feats, torch.full((3, 1, *adapter.grid_shape[1:]), 0.5))[:, 0]
    assert _relative_change(half, emb) > 1e-2


def test_a_head_that_pools_the_patch_tokens_keeps_its_full_last_block() -> None:
    model = _timm_vit(global_pool="avg")
    adapter = adapt_model(model, _probe())
    assert adapter.kind == "tokens" and "prefix only" not in adapter.describe()
    assert adapter.config()["tokens"] == "raw"
    x = _probe(2, seed=4)
    torch.testing.assert_close(adapter.embed(x)[1], model(x), rtol=1e-4, atol=1e-5)


def test_gradients_through_the_read_out_block_are_the_full_blocks() -> None:
    model = _timm_vit().double()  # float64: the two gradients agree to rounding, not to float32's 1e-4
    adapter = adapt_model(model, _probe().double())
    x = _probe(2, seed=5).double()
    raw = adapter.trunk.trunk(x)  # the tokens entering the last block, before the patch norm
    grads = []
    for through_adapter in (True, False):
        tokens = raw.detach().clone().requires_grad_(True)
        if through_adapter:
            out = adapter.head(adapter.trunk.patch_norm(tokens))
        else:  # the model itself, its last block's input replaced by the tokens
            handle = model.blocks[2].register_forward_pre_hook(lambda module, args, t=tokens: (t,))
            try:
                out = model(x)
            finally:
                handle.remove()
        out.square().sum().backward()
        grads.append(tokens.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("factory", [CLIPStyleViT, CameraViT])
def test_masked_grids_in_chunks_give_the_same_components(factory, monkeypatch) -> None:
    model = factory().eval()
    side = {"cam_label": torch.tensor([0, 2])} if factory is CameraViT else None
    adapter = adapt_model(model, _probe(), side_inputs=side)
    x = _probe(5, seed=6)
    bound = (torch.tensor([0, 1, 2, 1, 0]),) if side else ()
    maps = torch.rand(5, 3, *adapter.grid_shape[1:], generator=torch.Generator().manual_seed(7))
    with adapter.bind(bound):
        feats, _ = adapter.embed(x)
        whole = adapter.masked_embeddings(x, feats, maps)
        monkeypatch.setattr(adapter, "masked_chunk_elements", 1)  # one image per chunk
        chunked = adapter.masked_embeddings(x, feats, maps)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["grad_cam", "integrated_gradients", "occlusion", "saliency"])
def test_baselines_take_the_side_inputs_per_image(name) -> None:
    from reidexplain.baselines import create_baseline

    model = CameraViT().eval()
    options = {"integrated_gradients": {"n_steps": 4}, "occlusion": {"window": 8, "stride": 8}}.get(name, {})
    baseline = create_baseline(name, model, **options)
    a, b = _probe(2, seed=7), _probe(2, seed=8)
    kwargs = ({"cam_label": torch.tensor([0, 1])}, {"cam_label": 2})  # one value: every image of b
    result = baseline.explain((a, b), forward_kwargs=kwargs)
    with torch.no_grad():
        d = (model(a, cam_label=kwargs[0]["cam_label"]) - model(b, cam_label=torch.tensor([2, 2]))).norm(dim=1)
    torch.testing.assert_close(result.distance, d, rtol=1e-4, atol=1e-5)
    assert all(torch.isfinite(m).all() and m.shape == (2, 1, *SIZE) for m in result.maps)
    chunked = baseline.explain((a, b), forward_kwargs=kwargs, batch_size=1)  # each pair with its cameras
    torch.testing.assert_close(chunked.distance, result.distance, rtol=1e-5, atol=1e-6)
    if name == "grad_cam":
        assert baseline.layer_name == "blocks.1"
    # Other cameras give another distance, and other maps.
    other = baseline.explain((a, b), forward_kwargs=({"cam_label": torch.tensor([2, 2])}, {"cam_label": 0}))
    assert not torch.allclose(other.distance, result.distance)
    with pytest.raises(ValueError, match="same arguments"):
        baseline.explain((a, b), forward_kwargs=({"cam_label": 0}, {}))
    with pytest.raises(ValueError, match="one per image"):
        baseline.explain((a, b), forward_kwargs=({"cam_label": torch.tensor([0, 1, 2])}, {"cam_label": 0}))


def test_rankings_read_the_side_inputs_from_ids_and_cameras(tmp_path) -> None:
    from reidexplain import Explainer

    model = CameraViT().eval()
    g = torch.Generator().manual_seed(1)
    batches = [{"image": _probe(8, seed=s), "camid": torch.randint(0, 3, (8,), generator=g),
                "attributes": torch.randint(0, 2, (8, 4), generator=g)} for s in range(2)]
    explainer = Explainer(model, side_inputs={"cam_label": "camid"}).fit(batches, epochs=1, progress=False)
    query, gallery = _probe(2, seed=9), _probe(5, seed=10)
    q_cams, g_cams = torch.tensor([0, 1]), torch.tensor([2, 0, 1, 2, 0])
    ranking = explainer.explain_ranking(query, gallery, top_k=3, query_camids=q_cams, gallery_camids=g_cams,
                                        progress=False)
    with torch.no_grad():
        d = torch.cdist(model(query, cam_label=q_cams), model(gallery, cam_label=g_cams))
    torch.testing.assert_close(ranking.distance, d.sort(dim=1).values[:, :3], rtol=1e-4, atol=1e-5)
    # The same from batches that carry the cameras, and from an index without maps.
    index = explainer.index_gallery([{"image": gallery[:3], "camid": g_cams[:3]},
                                     {"image": gallery[3:], "camid": g_cams[3:]}], store_maps=False, progress=False)
    again = explainer.explain_ranking(query, index, top_k=3, query_camids=q_cams, gallery_images=gallery,
                                      progress=False)
    torch.testing.assert_close(again.distance, ranking.distance, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(again.contributions, ranking.contributions, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(again.match_maps, ranking.match_maps, rtol=1e-4, atol=1e-5)  # recomputed
    # The cameras given for the whole gallery come before the batches' own (which are wrong here).
    given = explainer.index_gallery([{"image": gallery[:3], "camid": torch.zeros(3, dtype=torch.long)},
                                     gallery[3:]], camids=g_cams, progress=False)
    torch.testing.assert_close(given.embeddings, index.embeddings, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(given.camids, g_cams)
    with pytest.raises(ValueError, match="cam_label"):
        explainer.explain_ranking(query, gallery, top_k=3, gallery_camids=g_cams, progress=False)
    with pytest.raises(ValueError, match="cam_label"):
        explainer.index_gallery(gallery, progress=False)


class _MaskableBlock(_SeqFirstBlock):
    """open_clip's ``ResidualAttentionBlock`` signature: ``forward(x, attn_mask=None)``."""

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class OpenCLIPStyleViT(CLIPStyleViT):
    """open_clip's layout: its transformer calls every block with ``attn_mask=None``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.resblocks = nn.ModuleList([_MaskableBlock(24) for _ in range(2)])

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = self.ln_pre(torch.cat([cls, x], dim=1) + self.positional_embedding).permute(1, 0, 2)
        for block in self.resblocks:
            x = block(x, attn_mask=attn_mask)
        return self.ln_post(x.permute(1, 0, 2)[:, 0]) @ self.proj


def test_blocks_called_with_a_default_attention_mask_are_read_out_too() -> None:
    model = OpenCLIPStyleViT().eval()
    adapter = adapt_model(model, _probe())
    assert adapter.layer == "resblocks.1" and "prefix only" in adapter.describe()
    x = _probe(3, seed=11)
    torch.testing.assert_close(adapter.embed(x)[1], model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("factory", [_timm_vit, lambda: _timm_vit(qk_norm=True), _timm_deit, CLIPStyleViT,
                                     OpenCLIPStyleViT])
def test_masked_read_outs_project_each_image_once_and_match_the_masked_grids(factory) -> None:
    model = factory().double().eval()  # float64: values and gradients agree to rounding
    adapter = adapt_model(model, _probe().double())
    assert adapter.readout is not None
    x = _probe(3, seed=12).double()
    feats, _ = adapter.embed(x)
    results = []
    for fast in (True, False):
        readout = adapter.readout
        if not fast:
            adapter.readout = None  # the B*M masked grids through the read-out block, one by one
        maps = torch.rand(3, 5, *adapter.grid_shape[1:], generator=torch.Generator().manual_seed(13),
                          dtype=torch.float64).requires_grad_(True)
        comps = adapter.masked_embeddings(x, feats, maps)
        comps.square().sum().backward()
        results.append((comps.detach(), maps.grad))
        adapter.readout = readout
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-9, atol=1e-10)


def test_an_interpreter_fitted_on_raw_vit_tokens_is_refused_with_a_reason(tmp_path) -> None:
    from reidexplain import Explainer

    model = _timm_vit()
    g = torch.Generator().manual_seed(2)
    batches = [{"image": _probe(8, seed=s), "attributes": torch.randint(0, 2, (8, 4), generator=g)} for s in range(2)]
    explainer = Explainer(model).fit(batches, epochs=1, progress=False)
    path = tmp_path / "vit.pt"
    explainer.save(path)
    assert Explainer.load(path, model).adapter.config()["tokens"] == "normalised"
    ckpt = torch.load(path, weights_only=True)
    del ckpt["adapter"]["tokens"]  # as written before the grid was normalised
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="fit the explainer again"):
        Explainer.load(path, model)
