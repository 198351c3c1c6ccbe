"""The zoo's layouts of the models practitioners run: split on the fast path, trainable by the zoo."""

from __future__ import annotations

import pytest
import torch

from reidexplain.adapters import adapt_model
from reidexplain.zoo import create_model, train_reid_model

SIZE = (32, 16)
SMALL = {"image_size": SIZE, "patch_size": 8}
CASES = [
    ("bot_resnet18", {}, "fx", "base"),
    ("bot_resnet50", {"width_per_group": 8}, "fx", "base"),
    ("osnet_x0_25", {}, "fx", "conv5"),
    ("vit_reid_tiny", {**SMALL, "patch_stride": 8, "depth": 2, "dim": 32, "heads": 2}, "tokens", "blocks.1"),
    ("transreid_tiny", {**SMALL, "patch_stride": 6, "depth": 2, "dim": 32, "heads": 2}, "tokens", "blocks.1"),
    ("clip_vit_reid_tiny", {**SMALL, "layers": 2, "width": 32, "heads": 2, "output_dim": 16}, "tokens",
     "resblocks.1"),
]


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, *SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("name", "options", "kind", "layer"), CASES)
def test_split_on_the_fast_path_and_head_equals_model(name: str, options: dict, kind: str, layer: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, **options).eval()
    adapter = adapt_model(model, _images(2, 0))
    assert (adapter.kind, adapter.layer, adapter.fast_head) == (kind, layer, True)
    x = _images(3, 1)
    feats, emb = adapter.embed(x)
    with torch.no_grad():
        torch.testing.assert_close(emb, model(x), rtol=1e-4, atol=1e-5)
        grid = adapter.to_grid(feats)
        ones = adapter.masked_embeddings(x, feats, torch.ones(3, 2, *grid.shape[-2:]))
    torch.testing.assert_close(ones[:, 0], emb, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("name", "options"), [(c[0], c[1]) for c in CASES])
def test_trainable_by_the_zoo_trainer(name: str, options: dict) -> None:
    torch.manual_seed(0)
    data = [(img, i // 2) for i, img in enumerate(_images(8, 2))]
    history: list[dict[str, float]] = []
    model = train_reid_model(create_model(name, **options), data, epochs=1, p=4, k=2, progress=False,
                             history=history)
    assert not model.training and model.num_classes == 4
    assert len(history) == 1 and torch.isfinite(torch.tensor(history[0]["loss"]))
    out = model(_images(2, 3))
    assert out.shape == (2, model.embedding_dim) and torch.isfinite(out).all()


def test_train_mode_without_classifier_says_so() -> None:
    model = create_model("osnet_x0_25").train()
    with pytest.raises(RuntimeError, match="reset_classifier"):
        model(_images(2, 4))


def test_transformers_train_with_their_own_defaults(monkeypatch) -> None:
    from reidexplain.zoo import training

    seen = {}

    class Seen(Exception):
        pass

    def fake_rate(step: int, total: int, base: float, warmup: int) -> float:
        seen.update(total=total, base=base)
        raise Seen  # one look is enough

    monkeypatch.setattr(training, "_learning_rate", fake_rate)
    data = [(torch.rand(3, 128, 64), i // 2) for i in range(8)]
    for name, lr in (("vit_reid_tiny", 1e-3), ("reidnet_small", 3e-3)):
        with pytest.raises(Seen):
            train_reid_model(create_model(name), data, p=2, k=2, progress=False)
        epochs = 40 if lr == 1e-3 else 20
        assert seen == {"total": 2 * epochs, "base": pytest.approx(lr)}
    with pytest.raises(Seen):
        train_reid_model(create_model("vit_reid_tiny"), data, p=2, k=2, lr=5e-4, epochs=3, progress=False)
    assert seen == {"total": 6, "base": pytest.approx(5e-4)}
